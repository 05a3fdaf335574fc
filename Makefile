# `make demo` and `make test` work on a fresh machine with Python 3.11 and root.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test lint clean

setup: $(STAMP)

# torch is pinned here only (pyproject declares a range): 2.13.0 is the CPU build on local disk.
$(STAMP): pyproject.toml
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium)
	command -v promtool >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/otel-flops demo

lint: setup
	$(VENV)/bin/ruff check otel_flops tests benchmarks grafana

test: setup lint
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
