# The README's two commands: `make run` and `make test`. Both build the virtualenv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint install clean bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/meetinghooks run

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The suite runs on SQLite always, and again on PostgreSQL when TEST_DATABASE_URL names one.
test: lint
	env -u TEST_DATABASE_URL $(BIN)/pytest
	@if [ -n "$$TEST_DATABASE_URL" ]; then \
		echo "== again on $$TEST_DATABASE_URL"; \
		$(BIN)/pytest; \
	fi

bench: install
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/deliveries.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
