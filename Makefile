# The two commands of the README: `make demo` and `make test`. Both set everything up on a fresh machine:
# the virtual environment, Debian's Prometheus and Alertmanager, and the control-plane binaries (built once
# with Go into ~/.cache/modelmonitor, then reused).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup venv binaries images lint unit test demo clean-cluster crds generate

venv: $(BIN)/.installed

# Two distributions, both editable: the runtime (modelmonitor, operator/) with the dev tools, and the development
# tooling (modelmonitor-sandbox, sandbox/: the local sandbox and the demo, with matplotlib for its picture).
$(BIN)/.installed: pyproject.toml sandbox/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -e './sandbox[demo]'
	touch $@

# Builds or reuses the cached binaries; installs Debian's prometheus, prometheus-alertmanager and redis-server when
# missing.
binaries: venv
	$(BIN)/modelmonitor cluster build

setup: venv binaries

# The operator and sidecar images (modelmonitor/operator, modelmonitor/sidecar, tagged with the version) from
# docker/Dockerfile, with podman: no Docker daemon. Installs Debian's podman (and mmdebstrap, when the
# python:3.11-slim base cannot be pulled and a base is bootstrapped from Debian's packages) when missing; the
# bases are cached in ~/.cache/modelmonitor/images and unchanged layers are reused (docs/install.md).
images: venv
	$(BIN)/modelmonitor images build

lint: venv
	$(BIN)/ruff check operator sandbox tests bench
	$(BIN)/ruff format --check operator sandbox tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# Unit tests only: no cluster, seconds.
unit: venv
	$(BIN)/pytest -m "not cluster and not e2e" -q $(PYTEST_ARGS)

# Everything CI runs: lint, unit, integration and end-to-end tests on the real local sandbox, and the images run
# with podman (tests/integration/test_images.py).
test: setup images lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

demo: setup
	$(BIN)/modelmonitor demo

clean-cluster: venv
	$(BIN)/modelmonitor cluster down

# Everything generated, from its one source: the CRD (and the chart's copy, and the field reference) from the API
# models; the RBAC manifest and the chart's RBAC rules from operator/modelmonitor/rbac.py. Tests fail when these
# files and their sources disagree.
generate: venv
	$(BIN)/modelmonitor crd --output crds/modelmonitor.dev_modelmonitors.yaml
	$(BIN)/modelmonitor crd --output charts/modelmonitor/crds/modelmonitor.dev_modelmonitors.yaml
	$(BIN)/modelmonitor crd --markdown > docs/crd-reference.md
	$(BIN)/python -m modelmonitor.rbac > deploy/rbac.yaml
	$(BIN)/python -m modelmonitor.rbac --chart-rules > charts/modelmonitor/templates/_rbac_rules.tpl

crds: generate
