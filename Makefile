# crm_meta — developer / CI entry points.
#
#   make install      venv + package (editable, with test extras) + system deps for tests
#   make install-app  venv + package only (no apt), used by run/bench
#   make run          init/migrate instance/ SQLite DB (+ admin, demo data when empty), serve :5000
#   make test         full test suite; extra pytest args via PYTEST_ARGS="-k sqlite -x"
#   make bench        run every bench/*.py
#   make check        flask crm check
#   make clean        remove caches and test artefacts (keeps .venv and instance/)
#   make distclean    clean + remove .venv

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
FLASK  := $(VENV)/bin/flask
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 5000
PYTEST_ARGS ?=

.PHONY: help install install-app system-deps run test bench check clean distclean

help:
	@sed -n '3,11p' $(firstword $(MAKEFILE_LIST)) | sed 's/^# \{0,1\}//'

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-install only when pyproject.toml is newer than the stamp.
$(STAMP): pyproject.toml plugins/crm_lifecycle/pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' -e plugins/crm_lifecycle
	@touch $@

install-app: $(STAMP)

system-deps:
	scripts/install-system-deps.sh

install: install-app system-deps

run: install-app
	$(FLASK) --app app crm init --demo
	-$(FLASK) --app app crm jobs run  # the due daily jobs (reminders, SLA scan, churn scores); a failed one does not stop the CRM
	@echo "Serving the CRM at http://$(HOST):$(PORT)/ (Ctrl-C to stop)"
	$(VENV)/bin/gunicorn --workers 2 --bind $(HOST):$(PORT) --no-control-socket --access-logfile - 'app:create_app()'

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: install-app
	@shopt -s nullglob; files=(bench/*.py); \
	if [ $${#files[@]} -eq 0 ]; then echo "bench: no bench/*.py"; exit 0; fi; \
	for f in "$${files[@]}"; do echo "== $$f"; $(PY) "$$f"; done

check: install-app
	$(FLASK) --app app crm check

clean:
	rm -rf .pytest_cache .hypothesis test-results build dist *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print0 | xargs -0 -r rm -rf

distclean: clean
	rm -rf $(VENV)
