# The two commands of the README:  make run  and  make test.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
export DEMO_PASSWORD ?= demo-pass-2026

.PHONY: run test setup setup-test system-deps lint format bench screenshots clean

run: setup
	@$(PY) manage.py migrate --noinput -v0
	@$(PY) manage.py seed
	@echo
	@echo "  Prototype Store: http://$(HOST):$(PORT)/"
	@echo "  Sign in as alice (a maker), bob, carol, mo (moderator) or ada (admin); password: $(DEMO_PASSWORD)"
	@echo
	@$(PY) manage.py runstore --host $(HOST) --port $(PORT)

# The suite in four parts at the same time: the store's tests on SQLite and on a throwaway PostgreSQL 15
# server, the engine's tests, the browser tests (TEST_POSTGRES=0: all on SQLite). scripts/test-suite.sh says
# which tests each part runs and why they can run side by side.
test: setup-test
	@scripts/test-suite.sh $(PY) $(PYTEST_ARGS)

# `make run` needs the store's own dependencies only; the test tools (pytest, ruff, moto, schemathesis...)
# come with the first target that uses them, so a first `make run` installs 20-odd packages fewer.
setup: system-deps $(VENV)/.installed
setup-test: setup $(VENV)/.installed-test

system-deps:
	@scripts/system-deps.sh

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11 or newer is needed (found $$($(PYTHON) --version))." >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@# The dependencies listed in pyproject.toml, installed directly: the project is no package, and
	@# building it first (to read them) would fetch setuptools into a build environment of its own.
	@$(PY) -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > $(VENV)/requirements.txt
	@$(PY) -m pip install --quiet -r $(VENV)/requirements.txt
	@# The venv finds this checkout from any folder, so `.venv/bin/python -m agents build` runs anywhere.
	@$(PY) -c 'import pathlib, sys, sysconfig; pathlib.Path(sysconfig.get_path("purelib"), "prototype-store.pth").write_text(sys.argv[1] + "\n")' "$(CURDIR)"
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	@$(PY) -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["test"]))' > $(VENV)/requirements-test.txt
	@$(PY) -m pip install --quiet -r $(VENV)/requirements-test.txt
	@touch $@

lint: setup-test
	@$(PY) -m ruff check .
	@$(PY) -m ruff format --check .

format: setup-test
	@$(PY) -m ruff format .
	@$(PY) -m ruff check --fix .

# The README's pictures: the journey walk at 1280 and 390 px (journey-<width>-<page>.png) and the live preview.
screenshots: setup-test
	@SCREENSHOTS_DIR=docs/images $(PY) -m pytest tests/e2e/test_journey_walk.py tests/e2e/test_live_preview.py -q

bench: setup-test
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) var build *.egg-info
