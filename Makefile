# One command each: `make demo` runs the main job, `make test` the whole test suite.
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo demo-core test lint bench bench-quick reliability clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) example_project/run_demo.py

demo-core: $(STAMP)
	$(PY) example_project/two_processes.py

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check mmcache

reliability: $(STAMP)
	$(PY) tests/reliability_report.py

bench-quick: $(STAMP)
	$(PY) -m benchmarks --quick

bench: $(STAMP)
	$(PY) -m benchmarks --chart

clean:
	rm -rf $(VENV) .cache build *.egg-info
