# Fresh-machine entry points: only python3 and make are needed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config.example.yaml

NODE_EXAMPLES := examples/receivers/node

.PHONY: run test lint typecheck unit integration bench screenshots clean receiver-examples

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
# Without APP_WEBHOOK_SECRET, the example endpoint's secret is kept in var/webhook-secret
# (created once, mode 0600, reused on every run); stderr says how to give it to a receiver.
run: $(VENV)/.installed
	@test -n "$$APIXO_API_KEY" || { echo "set APIXO_API_KEY (or try the sandbox: see README)" >&2; exit 78; }
	@if [ -z "$$APP_WEBHOOK_SECRET" ]; then \
	  APP_WEBHOOK_SECRET="$$($(BIN)/apixo-watcher gen-secret --file "$${STATE_DIRECTORY:-var}/webhook-secret")" || exit $$?; \
	  export APP_WEBHOOK_SECRET; \
	fi; \
	exec $(BIN)/apixo-watcher run -c $(CONFIG)

## test: lint, types and the whole test suite
test: $(VENV)/.installed-test lint typecheck receiver-examples
	$(BIN)/pytest -q -p no:cacheprovider

## receiver-examples: the npm package the Node receiver example uses (docs/receivers.md),
## installed from its lock file when node and npm are there; the tests skip it otherwise
receiver-examples: $(NODE_EXAMPLES)/node_modules/.package-lock.json

$(NODE_EXAMPLES)/node_modules/.package-lock.json: $(NODE_EXAMPLES)/package.json $(NODE_EXAMPLES)/package-lock.json
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
	  cd $(NODE_EXAMPLES) && npm ci --no-audit --no-fund --loglevel=error; \
	else \
	  echo "node or npm not found: the Node receiver examples will be skipped" >&2; \
	fi

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

unit: $(VENV)/.installed-test
	$(BIN)/pytest -q tests/unit

integration: $(VENV)/.installed-test receiver-examples
	$(BIN)/pytest -q tests/integration

## bench: the benchmark suite; prints one JSON object (see docs/performance.md)
bench: $(VENV)/.installed-bench
	@$(BIN)/python -m bench

## screenshots: regenerate the console screenshots in docs/ (docs/console.md; needs Chromium)
screenshots: $(VENV)/.installed-test
	$(BIN)/python -m tests.helpers.screenshots docs

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache $(NODE_EXAMPLES)/node_modules
