# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs the project with its dev extras when missing
# (a quick no-op when present), then runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_HOME ?= demo_home
PYTEST_ARGS ?=

# No telemetry, nothing phoned home.
export DO_NOT_TRACK := 1
export RAY_USAGE_STATS_ENABLED := 0
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install demo test bench style clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO_HOME)
	REGIMES_PROGRESS=1 $(BIN)/regimes --home $(DEMO_HOME) demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

style: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(DEMO_HOME) .pytest_cache .ruff_cache build *.egg-info
