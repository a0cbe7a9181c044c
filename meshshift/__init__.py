"""meshshift: progressive delivery for Istio, NGINX and standalone Envoy."""

__version__ = "0.1.0"
