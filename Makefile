# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs the project with its dev extras when missing
# (a quick no-op when present; again when pyproject.toml changes), then runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_HOME ?= demo_home
PYTEST_ARGS ?=
# make test runs the suite on this many pytest-xdist workers, a whole test file per worker
# at a time (its module fixtures start once). Most of the suite's time is spent waiting on
# engines (Ray, Prefect, Serve, Chromium starting; flows polling), which two workers
# overlap on these 2-core machines. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

# No telemetry, nothing phoned home.
export DO_NOT_TRACK := 1
export RAY_USAGE_STATS_ENABLED := 0
export PREFECT_SERVER_ANALYTICS_ENABLED := false
# Bytecode caches are written into .venv and __pycache__/ (git-ignored): with
# PYTHONDONTWRITEBYTECODE set by a shell, every process the demo and the tests start (CLI
# runs, Ray workers, Serve replicas, the Prefect server) compiles every module it imports
# from source again.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install demo test bench style clean

# The install runs with uv when uv can be had from the package index (~20 s on a fresh
# clone, pip takes ~4 min), else with pip. uv does not read pip's configuration, so what
# the environment tells pip is passed on: PIP_FIND_LINKS holds the machines' CPU torch
# wheel (without it uv resolves torch to the multi-GB CUDA build), PIP_INDEX_URL /
# PIP_EXTRA_INDEX_URL a mirror, PIP_CERT the certificate bundle.
UV_FLAGS = $(foreach link,$(PIP_FIND_LINKS),--find-links $(link)) \
	$(if $(PIP_INDEX_URL),--index-url $(PIP_INDEX_URL)) \
	$(foreach url,$(PIP_EXTRA_INDEX_URL),--extra-index-url $(url))
UV_ENV = $(if $(PIP_CERT),SSL_CERT_FILE=$(PIP_CERT))

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if $(BIN)/python -m pip install --quiet --disable-pip-version-check uv; then \
		echo "installing regimes[dev] into $(VENV) with uv"; \
		$(UV_ENV) $(BIN)/uv pip install --quiet --python $(BIN)/python $(UV_FLAGS) -e ".[dev]"; \
	else \
		echo "uv could not be installed: installing regimes[dev] with pip (minutes)"; \
		$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"; \
	fi
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO_HOME)
	REGIMES_PROGRESS=1 $(BIN)/regimes --home $(DEMO_HOME) demo

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

style: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(DEMO_HOME) .pytest_cache .ruff_cache build *.egg-info
