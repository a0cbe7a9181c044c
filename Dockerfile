# meshshift: the daemon image, under the name and tag manifests/deployment.yaml runs:
#   docker build -t ghcr.io/meshshift/meshshift:0.1.0 .
#   kind load docker-image ghcr.io/meshshift/meshshift:0.1.0    # on kind: into its nodes
# (make image does the first; the tag is the version in pyproject.toml.)
#
# Two stages. The first builds meshshift's wheel and installs it with its dependencies
# into a virtualenv, from wheels only (--only-binary): nothing is compiled, so no compiler
# is needed or installed. The second copies that virtualenv onto a clean slim base: the
# final image has no build tools, no pip in the virtualenv and no cache, runs as a
# numeric non-root user, and writes nothing at run time (bytecode is compiled here), so
# its root filesystem can be mounted read-only.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY meshshift ./meshshift
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/meshshift \
 && python -m pip --python /opt/meshshift/bin/python install --only-binary=:all: /wheels/*.whl \
 && /opt/meshshift/bin/python -m compileall -q /opt/meshshift

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="meshshift" \
      org.opencontainers.image.description="Progressive delivery daemon for Istio, NGINX and Envoy" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
COPY --from=build /opt/meshshift /opt/meshshift
ENV PATH=/opt/meshshift/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A numeric, non-root user (the distroless "nonroot" id), so runAsNonRoot can verify it
# without an /etc/passwd entry.
USER 65532:65532
EXPOSE 8090
ENTRYPOINT ["meshshift", "run"]
