# The two README commands: `make serve` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements.lock

.PHONY: serve test lint bench bench-quick install lock clean

# Dependencies at the versions in requirements.lock (the ranges are in pyproject.toml).
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(LOCK) -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/claims demo --if-empty
	$(VENV)/bin/claims serve

lint: $(STAMP)
	$(VENV)/bin/ruff check domain client formats witness store projections audit service api web cli fixtures bench tests
	$(VENV)/bin/mypy

# The tests run in TEST_WORKERS processes (pytest-xdist): most of their time is spent waiting
# on servers and databases, and each test has its own schema, files and ports.
# The HTTP tests run a second time with the API's fast lane off: every request then goes
# through FastAPI, which must give the same answers.
TEST_WORKERS ?= 2
test: $(STAMP) lint
	$(VENV)/bin/pytest -q -p no:cacheprovider -n $(TEST_WORKERS)
	$(VENV)/bin/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --fast-lane=off tests/api tests/web/test_pages.py

bench: $(STAMP)
	$(PY) -m bench

bench-quick: $(STAMP)
	$(PY) -m bench --quick

# The newest versions pyproject.toml allows, resolved in a throwaway virtualenv.
lock:
	rm -rf .lock-venv && python3 -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e '.[test]'
	{ sed -n '/^#/p' $(LOCK); .lock-venv/bin/python -m pip freeze --exclude-editable; } > $(LOCK).new
	mv $(LOCK).new $(LOCK) && rm -rf .lock-venv

clean:
	rm -rf $(VENV) *.egg-info
