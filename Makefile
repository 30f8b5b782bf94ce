# echokit's two front doors: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Generated certificates (CA, server, client) live in ./certs for make targets.
export ECHOKIT_CERT_DIR ?= $(CURDIR)/certs

.PHONY: demo test lint typecheck unit fuzz venv clean

$(BIN)/echokit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	touch $@

venv: $(BIN)/echokit

demo: venv
	$(BIN)/echokit demo

lint: venv
	$(BIN)/ruff check echokit tests twisted benchmarks
	$(BIN)/ruff format --check echokit tests twisted benchmarks

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q

# The endpoint parser's fuzz target, for a bounded time (FUZZ_SECONDS).
FUZZ_SECONDS ?= 15
fuzz: venv
	$(BIN)/python -m tests.fuzz_endpoints $(FUZZ_SECONDS)

test: lint typecheck unit fuzz

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
