"""Metric providers (one measurement of one metric each) and the builtin templates.

`default_providers()` is what the runtime plugs into the AnalysisExecutor: one provider
per provider kind a template may name (`prometheus`, `web`, `datadog`, `newRelic`,
`meshshift`). Every provider resolves its options' `{{args.x}}` itself, escaped for its
query language (see meshshift.analysis.providers.templating), and raises ProviderError for anything
that makes the measurement an Error.
"""

from __future__ import annotations

from collections.abc import Mapping

from meshshift.analysis.providers.builtin import (
    BuiltinTarget,
    BuiltinTemplates,
    ChainedTemplates,
    InlineTemplates,
    builtin_document,
)
from meshshift.analysis.providers.datadog import DatadogProvider
from meshshift.analysis.providers.envoy_admin import EnvoyAdminProvider
from meshshift.analysis.providers.newrelic import NewRelicProvider
from meshshift.analysis.providers.prometheus import PrometheusProvider
from meshshift.analysis.providers.sequential import MeshshiftProvider, SequentialProvider
from meshshift.analysis.providers.web import WebProvider
from meshshift.ports import MetricProvider, SecretReader

__all__ = [
    "BuiltinTarget",
    "BuiltinTemplates",
    "ChainedTemplates",
    "DatadogProvider",
    "EnvoyAdminProvider",
    "InlineTemplates",
    "MeshshiftProvider",
    "NewRelicProvider",
    "PrometheusProvider",
    "SecretReader",
    "SequentialProvider",
    "WebProvider",
    "builtin_document",
    "default_providers",
]


def default_providers(
    *,
    environ: Mapping[str, str] | None = None,
    secret_reader: SecretReader | None = None,
    prometheus_address: str | None = None,
    envoy_admin_url: str | None = None,
    envoy_cluster: str = "canary",
    envoy_stable_cluster: str = "stable",
) -> dict[str, MetricProvider]:
    """The providers by kind.

    `environ` (default os.environ) holds MESHSHIFT_PROMETHEUS_ADDRESS, DD_*, NEWRELIC_*;
    `secret_reader` reads a Kubernetes Secret (name, namespace) for Datadog and New Relic;
    `prometheus_address` is the default Prometheus; `envoy_admin_url`/`envoy_cluster` are the
    standalone Envoy the `meshshift` provider reads (`envoy_stable_cluster` for the sequential
    judge, which compares the two).
    """
    prometheus = PrometheusProvider(default_address=prometheus_address, environ=environ)
    envoy = EnvoyAdminProvider(admin_url=envoy_admin_url, cluster=envoy_cluster)
    judge = SequentialProvider(envoy=envoy, prometheus=prometheus, stable_cluster=envoy_stable_cluster)
    return {
        "prometheus": prometheus,
        "web": WebProvider(),
        "datadog": DatadogProvider(secret_reader=secret_reader, environ=environ),
        "newRelic": NewRelicProvider(secret_reader=secret_reader, environ=environ),
        "meshshift": MeshshiftProvider(envoy, judge),
    }
