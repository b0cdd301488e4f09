# The README's two commands: `make demo` and `make test`. Everything else here serves them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
LS_VENV ?= .venv-ls
BIN := $(VENV)/bin
# The stamp carries a hash of pyproject.toml, so a dependency change reinstalls and nothing else does.
DEPS_HASH := $(shell sha1sum pyproject.toml | cut -c1-12)
STAMP := $(VENV)/.installed-$(DEPS_HASH)
LS_STAMP := $(LS_VENV)/.installed
# Label Studio lives in its own venv: it pins redis<5.3, which clashes with celery[redis] (docs/developing.md).
LS_VERSION ?= 1.23.2

# Tests and the demo never reach the network: a hub fallback fails at once instead of retrying.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONDONTWRITEBYTECODE := 1

PYTEST_ARGS ?=

.PHONY: help install demo stack test test-quick lint typecheck imports compose audit ls-venv browser bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 16

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@rm -f $(VENV)/.installed-*
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)  ## create .venv if missing and install the project with its dev tools

$(LS_STAMP):
	@test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LS_VENV)/bin/python -m pip install --quiet 'label-studio==$(LS_VERSION)'
	@touch $@

ls-venv: $(LS_STAMP)  ## create the separate Label Studio venv used by the end-to-end tests

demo: $(STAMP)  ## pre-annotate the sample images with the bundled offline model
	$(BIN)/assistant demo

# No dependency on the install stamps: a changed pyproject.toml must not reinstall behind a running
# demo. `make install ls-venv` first (the README says so); the checks below say what is missing.
stack:  ## the local stack of the README: Redis, Label Studio, a worker and the backend (honcho); Ctrl-C stops it
	@test -f .env || { echo "stack: no .env here. Fix: write it as README.md shows ('Running it without Docker')" >&2; exit 1; }
	@test -x $(BIN)/honcho || { echo "stack: no $(BIN)/honcho. Fix: make install" >&2; exit 1; }
	@test -x $(LS_VENV)/bin/label-studio || { echo "stack: no Label Studio in $(LS_VENV). Fix: make ls-venv" >&2; exit 1; }
	@mkdir -p var/logs
	$(BIN)/honcho start --env .env --procfile Procfile

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)  ## mypy (strict)
	$(BIN)/mypy

imports: $(STAMP)  ## import-linter contracts (import direction)
	$(BIN)/lint-imports

compose: $(STAMP)  ## validate compose.yaml against the Compose Specification schema (offline, no Docker needed)
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec compose.yaml

# Known vulnerabilities (PyPI's advisory database, through its JSON API) in every distribution
# installed in .venv, dev tools included; .venv-ls (Label Studio, used only by the end-to-end
# tests) is not audited. --strict: a distribution that could not be checked fails the audit instead
# of passing unchecked; --skip-editable: the project itself is not on PyPI. Where the service cannot
# be reached (these machines reach PyPI's package index but not its per-release JSON API, nor
# OSV), the audit says so and is skipped, or fails with AUDIT_REQUIRED=1.
# Every ignored advisory is listed here with its reason, one `--ignore-vuln ID` each (none today):
AUDIT_IGNORE :=
AUDIT_REQUIRED ?= 0
AUDIT_PROBE := https://pypi.org/pypi/pip/24.0/json

audit: $(STAMP)  ## pip-audit: known vulnerabilities in the installed dependencies (needs PyPI's JSON API)
	@if $(BIN)/python -c "import urllib.request as r; r.urlopen('$(AUDIT_PROBE)', timeout=15)" 2>/dev/null; then \
		$(BIN)/pip-audit --strict --skip-editable --progress-spinner off $(AUDIT_IGNORE); \
	elif [ "$(AUDIT_REQUIRED)" = 1 ]; then \
		echo "audit: FAILED: PyPI's vulnerability service ($(AUDIT_PROBE)) cannot be reached" >&2; exit 1; \
	else \
		echo "audit: SKIPPED, dependencies NOT audited: PyPI's vulnerability service ($(AUDIT_PROBE))" \
			"cannot be reached from here (AUDIT_REQUIRED=1 makes this an error)" >&2; \
	fi

# The dashboard's browser tests drive Debian's chromium (never a browser Playwright downloads). As root
# with apt-get (CI, containers) it is installed here; elsewhere the tests skip and say why.
browser:  ## Debian's chromium + chromium-driver for the dashboard's browser tests (apt-get, as root)
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
		else \
			echo "browser: no chromium and not root: the dashboard's browser tests will SKIP." \
				"Fix: sudo apt-get install chromium chromium-driver" >&2; \
		fi; }

test: $(STAMP) $(LS_STAMP) browser lint typecheck imports compose audit  ## the whole suite: lint, types, import contracts, compose schema, dependency audit, unit + integration tests
	ASSISTANT_LS_VENV=$(abspath $(LS_VENV)) $(BIN)/python -m pytest $(PYTEST_ARGS)

test-quick: $(STAMP)  ## the edit loop: unit tests only
	$(BIN)/python -m pytest -m "not slow and not gpu and not integration" -x -q $(PYTEST_ARGS)

bench: $(STAMP)  ## the performance benchmarks under benchmarks/ (minutes)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:  ## remove caches (keeps the venvs)
	rm -rf .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache
