# The README's two commands: `make run` and `make test`. Both build the virtualenv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

LOCK := requirements.lock

.PHONY: run test lint install lock clean bench faults screenshots

# Exact versions from the lock: pip takes it as constraints (-c), so it pins what the
# dependencies pull in and installs nothing by itself.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Resolve every dependency (dev extras included) for the platform production runs on, keeping
# the locked version of each package that still fits (uv prefers the pins of its output file), then
# `make install` applies the new lock. It needs only uv, not an install from the old lock: a new
# dependency that conflicts with an old pin must still be able to move it.
lock:
	test -x $(BIN)/uv || { $(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install --quiet uv; }
	cp $(LOCK) $(LOCK).tmp
	$(BIN)/uv pip compile pyproject.toml --extra dev --no-header --quiet \
	  --python-version 3.11 --python-platform x86_64-unknown-linux-gnu -o $(LOCK).tmp
	{ echo "# Exact versions of every dependency of meetinghooks, dev extras included."; \
	  echo "# Compiled for CPython 3.11 on x86_64 Linux by \`make lock\` (uv pip compile)."; \
	  echo "# Use as pip constraints: pip install -c requirements.lock ."; \
	  cat $(LOCK).tmp; } > $(LOCK).new
	rm $(LOCK).tmp
	if cmp -s $(LOCK).new $(LOCK); then rm $(LOCK).new; else mv $(LOCK).new $(LOCK); fi

run: install
	$(BIN)/meetinghooks run

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The suite runs on SQLite always, and again on PostgreSQL when TEST_DATABASE_URL names one;
# the production tests (a clean install against PostgreSQL and the brokers) run in that pass only.
test: lint
	env -u TEST_DATABASE_URL $(BIN)/pytest -m "not production"
	@if [ -n "$$TEST_DATABASE_URL" ]; then \
		echo "== again on $$TEST_DATABASE_URL, with the production tests"; \
		$(BIN)/pytest; \
	fi

# The service as deployed (gunicorn, both worker pools, beat) on a PostgreSQL database and a
# Redis prefix of its own, next to baselines from the same run: bench/README.md.
bench: install
	$(BIN)/python bench/suite.py

# The deployed service broken in nine ways under load, on a PostgreSQL, Redis and RabbitMQ of
# its own (free ports, never the shared ones); fails when an event or callback is lost:
# faults/README.md.
faults: install
	$(BIN)/python faults/suite.py

# The console's browser flow (tests/browser) in headless Chromium, saving the README's PNGs of
# the meeting timeline and the analytics page.
screenshots: install
	MEETINGHOOKS_SCREENSHOTS=docs/screenshots $(BIN)/pytest tests/browser -m browser -q \
	  -k "signs_in_follows_a_meeting"

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
