# The two commands of the quick start:
#   make demo   set up, then plan and apply the example workspace on the embedded SQLite env
#   make test   set up, then lint, type-check and run the whole test suite
#   make test-fast   only the tests that open no database and need no server (under 30 s)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint typecheck check venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/migrate services
	$(BIN)/migrate plan --env dev
	$(BIN)/migrate apply --env dev
	$(BIN)/migrate status --env dev

lint: $(STAMP)
	$(BIN)/ruff check orchestrator tests benchmarks
	$(BIN)/ruff format --check orchestrator tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

check: $(STAMP)
	$(BIN)/migrate check

test: $(STAMP)
	bash scripts/ensure-db.sh
	$(MAKE) --no-print-directory lint typecheck
	$(BIN)/pytest -q

test-fast: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -m "not db and not slow"

clean:
	rm -rf $(VENV) .migrate .pytest_cache .mypy_cache .ruff_cache
