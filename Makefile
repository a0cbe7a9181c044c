# The two commands a fresh machine needs: `make demo` and `make test`.
# Each installs what it needs: a .venv with the project, and (when we are root
# and they are missing) Debian's prometheus and chromium.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The daemon's image, as manifests/deployment.yaml names it (the tag: pyproject's version).
IMAGE  := ghcr.io/meshshift/meshshift:0.1.0
KIND_CLUSTER ?= kind

.PHONY: test lint demo venv system-deps-test system-deps-demo bench clean image kind-load

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,demo]'
	touch $(STAMP)

# apt-get only when a binary is missing and we are root; otherwise say what is missing
# and let the tests fail loudly (they never skip a missing component).
# $(call ensure-packages,BINARY:PACKAGE ...) installs each package whose binary is missing.
define ensure-packages
	@missing=""; for pair in $(1); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq >/dev/null; \
	    apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages:$$missing (not root: not installing them)" >&2; \
	  fi; \
	fi
endef

system-deps-test:
	$(call ensure-packages,prometheus:prometheus chromium:chromium)

system-deps-demo:
	$(call ensure-packages,prometheus:prometheus)

lint: $(STAMP)
	$(BIN)/ruff check meshshift tests bench
	$(BIN)/mypy

test: $(STAMP) system-deps-test lint
	$(BIN)/python -m pytest -q

demo: $(STAMP) system-deps-demo
	$(BIN)/meshshift demo --scenario healthy

bench: $(STAMP)
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/providers.py
	$(BIN)/python bench/standalone.py
	$(BIN)/python bench/observe.py
	$(BIN)/python bench/judge.py --sim-only

# The image (docker build), and on a kind cluster, loaded into its nodes.
image:
	docker build -t $(IMAGE) .

kind-load: image
	kind load docker-image $(IMAGE) --name $(KIND_CLUSTER)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis test-artifacts
