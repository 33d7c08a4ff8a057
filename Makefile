# Fresh-machine entry points: only python3 and make are needed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config.example.yaml

.PHONY: run test lint typecheck unit integration bench screenshots clean

$(BIN)/activate:
	@$(PYTHON) -m venv $(VENV) >&2
	@$(BIN)/pip install -q --upgrade pip >&2

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/activate
	@$(BIN)/pip install -q -e '.[test,bench]' >&2
	@touch $@

## run: the daemon in the foreground with config.example.yaml (needs APIXO_API_KEY)
run: $(VENV)/.installed
	@test -n "$$APIXO_API_KEY" || { echo "set APIXO_API_KEY (or try the sandbox: see README)" >&2; exit 78; }
	APP_WEBHOOK_SECRET="$${APP_WEBHOOK_SECRET:-$$($(BIN)/apixo-watcher gen-secret)}" \
	  $(BIN)/apixo-watcher run -c $(CONFIG)

## test: lint, types and the whole test suite
test: $(VENV)/.installed-test lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

unit: $(VENV)/.installed-test
	$(BIN)/pytest -q tests/unit

integration: $(VENV)/.installed-test
	$(BIN)/pytest -q tests/integration

## bench: the benchmark suite; prints one JSON object (see docs/performance.md)
bench: $(VENV)/.installed-bench
	@$(BIN)/python -m bench

## screenshots: regenerate the console screenshots in docs/ (docs/console.md; needs Chromium)
screenshots: $(VENV)/.installed-test
	$(BIN)/python -m tests.helpers.screenshots docs

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
