# One command each: `make demo` runs the main job, `make test` the whole test suite.
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo demo-core test test-django42 lint bench bench-quick reliability clean

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

# Django's own cache test suite against the backend under Django 4.2 LTS too
# (the main venv has the newest Django this Python allows).
test-django42:
	$(PYTHON) -m venv .venv-django42
	.venv-django42/bin/python -m pip install --quiet 'django>=4.2,<5' xxhash cloudpickle
	.venv-django42/bin/python -m pip install --quiet --no-deps -e .
	MMCACHE_DJANGO_SRC=.cache/django-src-42 .venv-django42/bin/python tests/django_suite/run_suite.py \
		--backend mmcache.contrib.django.MmapCacheBackend

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
	rm -rf $(VENV) .venv-django42 .cache build *.egg-info
