# The two README commands: `make serve` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: serve test lint bench bench-quick install clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/claims demo --if-empty
	$(VENV)/bin/claims serve

lint: $(STAMP)
	$(VENV)/bin/ruff check domain projections api tests
	$(VENV)/bin/mypy

test: $(STAMP) lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) -m tests.bench

bench-quick: $(STAMP)
	$(PY) -m tests.bench --quick

clean:
	rm -rf $(VENV) *.egg-info
