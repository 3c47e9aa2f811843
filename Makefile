# The two commands of the README: `make run` and `make test`.
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test test-page test-slow test-fleet lint bench setup-run setup-test

run: setup-run
	$(BIN)/kioskd pull
	$(BIN)/kioskd serve $(ARGS)

test: setup-test lint test-page
	$(BIN)/pytest $(PYTEST_ARGS)

# The kiosk page's own unit tests and type check (Vitest, vue-tsc); scripts/setup.sh installed its packages.
test-page:
	cd kiosk && npm run --silent typecheck && npm test --silent

test-slow: setup-test
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

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

setup-run:
	bash scripts/setup.sh run

setup-test:
	bash scripts/setup.sh test
