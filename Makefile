# Secure ML pipeline: `make help` lists the targets.
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTHON ?= python3

.DEFAULT_GOAL := help

$(STAMP): requirements.lock requirements-dev.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps \
		-r requirements.lock -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

.PHONY: install
install: $(STAMP) ## Create .venv/ from the hash-pinned lock file

.PHONY: run
run: $(STAMP) ## One full secure training run on the bundled dataset
	$(BIN)/secure-pipeline run --report .secure-pipeline/last-run.json

# pytest-xdist workers: two by default, one test file each at a time (module-scoped
# stacks stay in one worker), the files in collection order (tests/e2e, the longest,
# first: xdist's default order, most tests first, left them for the end).
# `make test TEST_WORKERS=0` runs the suite serially, in one process.
# FORK: match your CI machine's cores; tests marked `alone` still run with no neighbour.
TEST_WORKERS ?= 2

.PHONY: test
test: $(STAMP) browser prometheus postgres ## Run the whole test suite (unit, integration, end to end)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The browser tests drive Debian's chromium headless (no playwright, no selenium).
CHROMIUM := /usr/bin/chromium

.PHONY: browser
browser: ## Make sure Debian's chromium is installed (apt-get as root; tests need it)
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium for the browser tests (apt-get, once)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
			>/dev/null && test -x $(CHROMIUM); \
	else \
		echo "$(CHROMIUM) missing: run 'sudo apt-get install chromium' (or 'sudo make browser')" >&2; \
		exit 1; \
	fi

# The metrics tests start Debian's Prometheus and Pushgateway on free loopback ports of
# their own. Installing them must not start the packaged services (9090/9091): the
# install runs under a policy-rc.d that refuses every service start (Docker images ship
# one; it is added for the install only when missing), and never waits on systemd.
PROM_BINS := /usr/bin/prometheus /usr/bin/prometheus-pushgateway /usr/bin/promtool

.PHONY: prometheus
prometheus: ## Make sure Debian's prometheus and pushgateway are installed (apt-get as root)
	@if ls $(PROM_BINS) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing prometheus and prometheus-pushgateway for the metrics tests (apt-get, once)"; \
		policy=/usr/sbin/policy-rc.d; added=; \
		if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' >$$policy && chmod 755 $$policy && added=1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends prometheus prometheus-pushgateway >/dev/null; rc=$$?; \
		if [ -n "$$added" ]; then rm -f $$policy; fi; \
		[ $$rc = 0 ] && ls $(PROM_BINS) >/dev/null; \
	else \
		echo "$(PROM_BINS) missing: run 'sudo apt-get install prometheus prometheus-pushgateway' (or 'sudo make prometheus')" >&2; \
		exit 1; \
	fi

# The services-at-scale test (tests/scale) starts a throw-away PostgreSQL cluster for a
# Prefect server and an MLflow server: initdb and pg_ctl on PATH or in Debian's
# /usr/lib/postgresql/<version>/bin. Installing must not start the packaged cluster
# (5432): the install runs under a policy-rc.d that refuses every service start, as above.
.PHONY: postgres
postgres: ## Make sure PostgreSQL's server binaries are installed (apt-get as root)
	@if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then :; \
	elif ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing postgresql for the services-at-scale test (apt-get, once)"; \
		policy=/usr/sbin/policy-rc.d; added=; \
		if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' >$$policy && chmod 755 $$policy && added=1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends postgresql >/dev/null; rc=$$?; \
		if [ -n "$$added" ]; then rm -f $$policy; fi; \
		[ $$rc = 0 ] && ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null; \
	else \
		echo "PostgreSQL server binaries missing: run 'sudo apt-get install postgresql' (or 'sudo make postgres', or pip install pgserver)" >&2; \
		exit 1; \
	fi

.PHONY: lint
lint: $(STAMP) ## ruff (incl. security rules) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

.PHONY: ui
ui: $(STAMP) ## Start the embedded stack plus the Prefect UI and MLflow UI on localhost
	$(BIN)/secure-pipeline local up

.PHONY: bench
bench: $(STAMP) ## Speed and memory as ratios against baselines measured in the same run
	$(BIN)/python -m benchmarks.run

.PHONY: clean
clean: ## Remove the venv and the local state directory
	rm -rf $(VENV) .secure-pipeline
