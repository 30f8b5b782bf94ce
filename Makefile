# echokit's two front doors: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Generated certificates (CA, server, client) live in ./certs for make targets.
export ECHOKIT_CERT_DIR ?= $(CURDIR)/certs

.PHONY: demo test lint typecheck unit fuzz mutants bench venv clean

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

test: lint typecheck fuzz unit

# Break each guarantee of the README on purpose, one at a time on a scratch copy, and run
# the tests that must notice (tests/mutants.py); fails naming any mutant that survives.
mutants: venv
	$(BIN)/python -m tests.mutants

# Benchmarks (benchmarks/README.md): compile the native helpers into benchmarks/native/build/
# (git-ignored; loadgen's TLS needs OpenSSL's headers, installed here if missing, as are valgrind
# and strace for section costs), add uvloop
# for the asyncio+uvloop reference server, then run every section;
# `make bench BENCH_ARGS=--quick` for a smoke test.
BENCH_BUILD := benchmarks/native/build
BENCH_ARGS ?=

bench: venv
	@test -f /usr/include/openssl/ssl.h || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libssl-dev; } || \
		{ echo "make bench: OpenSSL headers missing: install libssl-dev (Debian/Ubuntu)" >&2; exit 2; }
	@command -v valgrind >/dev/null && command -v strace >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind strace; } || \
		echo "make bench: valgrind or strace missing: section costs is skipped"
	$(BIN)/pip install --quiet 'uvloop>=0.19' || echo "make bench: uvloop not installed (offline?): its row is skipped"
	mkdir -p $(BENCH_BUILD)
	gcc -O2 -Wall -o $(BENCH_BUILD)/echo_server benchmarks/native/echo_server.c
	gcc -O2 -Wall -o $(BENCH_BUILD)/pingpong benchmarks/native/pingpong.c
	gcc -O2 -Wall -o $(BENCH_BUILD)/loadgen benchmarks/native/loadgen.c -lssl -lcrypto
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
