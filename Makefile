# homemonitor: `make demo` and `make test` work on a fresh machine; everything they need
# (system binaries, a virtual environment) is installed here, not by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

# The tests that need no services (tests/unit, without the service fixtures) and the doctests.
UNIT := --confcutdir=tests/unit --doctest-modules tests/unit src/homemonitor devices/homemonitor_devices \
        evaluation/homemonitor_eval

.PHONY: demo test unit check bench evaluate system-deps test-deps venv clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

demo: venv system-deps  ## run the service on a private broker and database with a simulated clinic
	$(BIN)/homemonitor demo $(ARGS)

# Without ARGS: the unit stage first (stops at the first failure, before any service is
# installed or started), then the rest. With ARGS: one pytest run of exactly those arguments.
# The service tests mostly wait on brokers, databases and browsers, so they run in
# TEST_WORKERS processes (pytest-xdist), each with its own private instances; worksteal
# keeps the long outage and demo tests from leaving one process with the tail.
TEST_WORKERS ?= 3
ifeq ($(strip $(ARGS)),)
test: unit system-deps test-deps  ## unit tests and doctests, then the service tests (ARGS: one pytest run)
	$(BIN)/pytest --ignore=tests/unit -n $(TEST_WORKERS) --dist worksteal
else
test: venv system-deps test-deps
	$(BIN)/pytest $(ARGS)
endif

unit: venv  ## the tests and doctests that need no services, in seconds; stops at the first failure
	$(BIN)/pytest -x $(UNIT) $(ARGS)

check: venv  ## ruff and mypy --strict
	$(BIN)/ruff check src devices benchmarks evaluation tests
	$(BIN)/ruff format --check src devices benchmarks evaluation tests
	$(BIN)/mypy

bench: venv system-deps  ## throughput and latency against baselines (see README; ARGS=--help)
	$(BIN)/python -m homemonitor_bench $(ARGS)

evaluate: venv  ## alert quality of the templates and reference rules on a simulated cohort (ARGS=--help)
	$(BIN)/python -m homemonitor_eval $(ARGS)

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "homemonitor needs Python >= 3.11; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

system-deps:  ## install mosquitto and PostgreSQL binaries if missing (Debian/Ubuntu)
	@if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then :; else \
	  echo "installing mosquitto"; $(call apt,mosquitto); fi
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; else \
	  echo "installing postgresql"; $(call apt,postgresql postgresql-contrib); fi

test-deps:  ## install what the service tests need if missing: promtool, amtool, the test OpenID provider, Chromium
	@if command -v promtool >/dev/null 2>&1; then :; else \
	  echo "installing prometheus (for promtool)"; $(call apt,--no-install-recommends prometheus); fi
	@if command -v amtool >/dev/null 2>&1; then :; else \
	  echo "installing prometheus-alertmanager (for amtool)"; \
	  $(call apt,--no-install-recommends prometheus-alertmanager); fi
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then :; else \
	  echo "installing nodejs and npm (the test OpenID provider runs on Node)"; $(call apt,nodejs npm); fi
	@if [ tests/oidc/node_modules/.package-lock.json -nt tests/oidc/package-lock.json ]; then :; else \
	  echo "installing the test OpenID provider (npm ci in tests/oidc)"; \
	  npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error; fi
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; else \
	  echo "installing chromium and chromium-driver (the browser tests)"; \
	  $(call apt,--no-install-recommends chromium chromium-driver); fi

define apt
	if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	command -v apt-get >/dev/null || { echo "install $(1) with your package manager" >&2; exit 1; }; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(1) >/dev/null
endef

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
