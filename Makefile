# The two commands of the README:  make run  and  make test.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
export DEMO_PASSWORD ?= demo-pass-2026

.PHONY: run test setup system-deps lint format bench screenshots clean

run: setup
	@$(PY) manage.py migrate --noinput -v0
	@$(PY) manage.py seed
	@echo
	@echo "  Prototype Store: http://$(HOST):$(PORT)/"
	@echo "  Sign in as alice (a maker), bob, carol, mo (moderator) or ada (admin); password: $(DEMO_PASSWORD)"
	@echo
	@$(PY) manage.py runstore --host $(HOST) --port $(PORT)

# The suite on SQLite and, at the same time, on a throwaway PostgreSQL 15 server (TEST_POSTGRES=0 skips
# that pass): scripts/test-suite.sh says which tests each pass runs and why they can run side by side.
test: setup
	@scripts/test-suite.sh $(PY) $(PYTEST_ARGS)

setup: system-deps $(VENV)/.installed

system-deps:
	@scripts/system-deps.sh

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11 or newer is needed (found $$($(PYTHON) --version))." >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet ".[test]"
	@# The venv finds this checkout from any folder, so `.venv/bin/python -m agents build` runs anywhere.
	@$(PY) -c 'import pathlib, sys, sysconfig; pathlib.Path(sysconfig.get_path("purelib"), "prototype-store.pth").write_text(sys.argv[1] + "\n")' "$(CURDIR)"
	@touch $@

lint: setup
	@$(PY) -m ruff check .
	@$(PY) -m ruff format --check .

format: setup
	@$(PY) -m ruff format .
	@$(PY) -m ruff check --fix .

screenshots: setup
	@SCREENSHOTS_DIR=docs/images $(PY) -m pytest tests/e2e -q

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) var build *.egg-info
