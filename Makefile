# The two commands of the README: `make run` and `make test`.
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test test-page test-slow test-fleet test-upstream llama-server lint bench bench-upstream bench-speculative setup-run setup-test

run: setup-run
	$(BIN)/kioskd pull
	$(BIN)/kioskd serve $(ARGS)

# The default run includes the suite against a real llama-server (mark `upstream`), so its binary is built first
# (once per machine, minutes; cached in .cache/llama-server-*/), outside any test's time limit.
test: setup-test lint test-page llama-server
	$(BIN)/pytest $(PYTEST_ARGS)

# The kiosk page's own unit tests and type check (Vitest, vue-tsc); scripts/setup.sh installed its packages.
test-page:
	cd kiosk && npm run --silent typecheck && npm test --silent

test-slow: setup-test
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

# Only the tests against a real llama.cpp llama-server on loopback (kioskd's upstream engine; tests/llama_server.py).
test-upstream: setup-test llama-server
	$(BIN)/pytest -m upstream $(PYTEST_ARGS)

# llama.cpp's llama-server from the llama.cpp vendored in the pinned llama-cpp-python sdist.
llama-server: setup-test
	bash scripts/build_llama_server.sh >/dev/null

# The fleet playbook against a container booted with systemd (root; see ansible/README.md).
test-fleet: setup-test
	$(BIN)/pytest -m slow tests/test_ansible_converge.py $(PYTEST_ARGS)

lint:
	$(BIN)/ruff check daemon audio kiosk/__init__.py tests bench
	$(BIN)/mypy

bench: setup-test
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/kioskd pull
	$(BIN)/python -m bench.bench_daemon --model "$$($(BIN)/kioskd pull)"

# kioskd's upstream engine through a real llama-server on loopback against that server alone (docs/benchmarks.md).
bench-upstream: setup-test llama-server
	$(BIN)/python -m bench.bench_upstream --model "$$($(BIN)/kioskd pull)"

# The daemon's n-gram speculative decoding, on and off, against llama-server plain and with its own n-gram modes.
bench-speculative: setup-test llama-server
	$(BIN)/python -m bench.bench_speculative --model "$$($(BIN)/kioskd pull)" $(ARGS)

setup-run:
	bash scripts/setup.sh run

setup-test:
	bash scripts/setup.sh test
