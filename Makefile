# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv from constraints.txt on first use (or when dependencies change).
# `make test` runs ruff and every tier (CI runs it); `make test-fast` only the tests that need
# neither PostgreSQL nor Redis (the markers are in pyproject.toml and conftest.py).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint format install check-services lock

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is needed (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/stock-pipeline demo

check-services: $(STAMP)
	@$(VENV)/bin/python -m stock_pipeline_tests.services

# Lint first: a minute of tests is not spent on code that does not pass ruff.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint check-services
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# No check-services: this tier runs without PostgreSQL and Redis.
test-fast: $(STAMP)
	$(VENV)/bin/pytest -m "not services" $(PYTEST_ARGS)

# Regenerate constraints.txt after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(VENV)/bin/pip freeze --exclude-editable > constraints.txt
