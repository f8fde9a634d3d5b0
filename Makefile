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
# tests/infra (Terraform applied to moto) runs here too; without terraform it skips.
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
# BENCH_ARGS: e.g. --loaded for a run taken beside other work (targets at their bounds,
# not with the 10% margin), --repeats 7, --only training.
bench: $(STAMP) ## Speed and memory as ratios against baselines measured in the same run
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# The gate's low-FPR membership attack against a second, independently written offline
# LiRA on the same models and rows (sacroml was not usable: see the script's docstring).
.PHONY: bench-membership
bench-membership: $(STAMP) ## Cross-check the membership attack (TPR at 1% FPR, AUC)
	OMP_NUM_THREADS=1 $(BIN)/python -m benchmarks.membership_crosscheck

# sacroml's LiRA (an independent implementation) against ours, in a tool venv of its own
# (.venv-sacroml/, ~2.2 GB with torch's CPU build) from a hash-pinned lock; the project
# venv builds the models and runs our attack, the tool venv only sacroml's (see
# benchmarks/membership_sacroml.py). Not part of `make test`.
SACROML_VENV  := .venv-sacroml
SACROML_STAMP := $(SACROML_VENV)/.installed

$(SACROML_STAMP): requirements-sacroml.lock
	@test -x $(SACROML_VENV)/bin/python || $(PYTHON) -m venv $(SACROML_VENV)
	$(SACROML_VENV)/bin/python -m pip install --quiet --require-hashes --no-deps \
		-r requirements-sacroml.lock
	@touch $(SACROML_STAMP)

.PHONY: bench-sacroml
bench-sacroml: $(STAMP) $(SACROML_STAMP) ## Cross-check the membership attack against sacroml's LiRA
	OMP_NUM_THREADS=1 $(BIN)/python -m benchmarks.membership_sacroml \
		--sacroml-python $(SACROML_VENV)/bin/python

.PHONY: clean
clean: ## Remove the venvs and the local state directory
	rm -rf $(VENV) $(CHECKOV_VENV) $(SACROML_VENV) .secure-pipeline infra/terraform/.terraform

# --- Infrastructure as code (infra/terraform/) -------------------------------------------
# checkov lives in a tool venv of its own, from its own hash-pinned lock (never the runtime
# or dev set). Terraform and the AWS provider are never downloaded: the provider comes from
# a local plugin directory (filesystem mirror layout, e.g. one made by
# `terraform providers mirror`).
# FORK: point TF_PLUGIN_DIR at your own provider mirror; TERRAFORM at your binary.
CHECKOV_VENV  := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
TERRAFORM     ?= terraform
TF_DIR        := infra/terraform
TF_PLUGIN_DIR ?= /opt/tf-plugins

$(CHECKOV_STAMP): requirements-checkov.lock
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --require-hashes --no-deps \
		-r requirements-checkov.lock
	@touch $(CHECKOV_STAMP)

.PHONY: checkov
checkov: $(CHECKOV_STAMP) ## Scan infra/terraform with checkov (offline, its own venv)
	BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=true LOG_LEVEL=WARNING \
	$(CHECKOV_VENV)/bin/checkov -d $(TF_DIR) --framework terraform --skip-download \
		--quiet --compact

# `terraform fmt -check` and `validate` (provider from TF_PLUGIN_DIR, no download), checkov
# with zero failed checks, then tests/infra: the configuration applied to moto, the deploy
# gate's posture check and a KMS-wrapped release round trip run against what it created.
# Without terraform the Terraform steps and the apply are skipped with a message (checkov
# still runs); INFRA_REQUIRE_TERRAFORM=1 (CI) turns the skip into a failure. `make test`
# runs tests/infra too; INFRA_TESTS=no leaves them to it (.ci/run: each runs once).
INFRA_TESTS ?= yes
TF_ENV := CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1 TF_CLI_CONFIG_FILE=/dev/null

.PHONY: infra-check
infra-check: $(STAMP) $(CHECKOV_STAMP) ## Terraform fmt/validate, checkov, then the stack applied to moto
	@if command -v $(TERRAFORM) >/dev/null; then \
		set -e; \
		test -d $(TF_PLUGIN_DIR) || { echo "no provider mirror at TF_PLUGIN_DIR=$(TF_PLUGIN_DIR): set it (hashicorp/aws 5.x, made by 'terraform providers mirror')" >&2; exit 2; }; \
		$(TF_ENV) $(TERRAFORM) -chdir=$(TF_DIR) fmt -check -recursive -diff; \
		$(TF_ENV) $(TERRAFORM) -chdir=$(TF_DIR) init -backend=false -input=false -no-color \
			-plugin-dir=$(TF_PLUGIN_DIR) >/dev/null; \
		$(TF_ENV) $(TERRAFORM) -chdir=$(TF_DIR) validate -no-color; \
	elif [ "$$INFRA_REQUIRE_TERRAFORM" = 1 ]; then \
		echo "terraform not found: install Terraform >= 1.5 (INFRA_REQUIRE_TERRAFORM=1)" >&2; exit 2; \
	else \
		echo "terraform not found: fmt, validate and the apply to moto are skipped; install Terraform >= 1.5 and the hashicorp/aws 5.x provider (TF_PLUGIN_DIR)" >&2; \
	fi
	$(MAKE) --no-print-directory checkov
	@if [ "$(INFRA_TESTS)" != no ]; then \
		TF_PLUGIN_DIR=$(TF_PLUGIN_DIR) TERRAFORM=$(TERRAFORM) OMP_NUM_THREADS=1 \
		$(BIN)/python -m pytest -p no:cacheprovider tests/infra; fi
