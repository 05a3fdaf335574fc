# `make demo` and `make test` work on a fresh machine with Python 3.11 and root.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test lint clean

setup: $(STAMP)

# torch is pinned here only (pyproject declares a range): 2.13.0 is the CPU build on local disk.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/otel-flops demo

lint: setup
	$(VENV)/bin/ruff check otel_flops tests benchmarks

test: setup lint
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
