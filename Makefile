# One command each: `make demo` runs the main job, `make test` the whole test suite.
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo demo-core demo-flask test test-django42 lint bench bench-quick reliability clean pins \
	native test-pure test-asan fuzz-native

# Every tool and peer comes from the pinned set in requirements/ (refresh with
# `make pins`); the library's own dependencies stay ranges in pyproject.toml.
PINS := requirements/constraints.txt
BUILD_PINS := requirements/build-constraints.txt
PIP_INSTALL = -m pip install --quiet -c $(PINS) --build-constraint $(BUILD_PINS)

$(STAMP): pyproject.toml setup.py $(wildcard mmcache/_native/*.c mmcache/_native/*.h) $(PINS) $(BUILD_PINS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c $(PINS) pip
	$(PY) $(PIP_INSTALL) -e '.[dev]'
	touch $(STAMP)

# (Re)build the compiled get in place (pip install -e . does it on first use;
# this is for after editing mmcache/_native/*.c or *.h).
native: $(STAMP)
	$(PY) $(PIP_INSTALL) --no-deps -e .

demo: $(STAMP)
	$(PY) example_project/run_demo.py

demo-core: $(STAMP)
	$(PY) example_project/two_processes.py

demo-flask: $(STAMP)
	$(PY) example_flask/run_demo.py

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q -p no:cacheprovider

# The core tests again with the compiled get switched off: the pure-Python
# path is the reference and must stay complete (make test runs them native).
PURE_TESTS := tests/core/test_table_basic.py tests/core/test_table_processes.py \
	tests/core/test_table_model.py tests/core/test_hostile_files.py tests/core/test_native.py \
	tests/core/test_native_put.py tests/core/test_security.py tests/core/test_expiry_eviction.py \
	tests/core/test_expiry_clamp.py tests/core/test_readonly_cache.py tests/core/test_rebuild_catch_up.py \
	tests/faces/test_decorator.py tests/faces/test_django_backend.py tests/faces/test_argkey_pinned.py \
	tests/faces/test_decorator_native.py tests/core/test_native_table.py
test-pure: $(STAMP)
	MMCACHE_PURE_PYTHON=1 $(PY) -m pytest -q -p no:cacheprovider $(PURE_TESTS)

# The compiled get and put under AddressSanitizer: rebuilt in place with ASan, the
# native, hostile-file and core tests run with libasan preloaded, then the
# normal build is put back (so do not run `make test` beside it).
ASAN_TESTS := tests/core/test_native.py tests/core/test_native_table.py tests/core/test_native_put.py \
	tests/core/test_native_compact.py tests/core/test_rebuild_catch_up.py \
	tests/faces/test_decorator_native.py \
	tests/core/test_hostile_files.py tests/core/test_table_basic.py tests/core/test_table_processes.py \
	tests/core/test_table_model.py
test-asan: $(STAMP)
	MMCACHE_CFLAGS="-fsanitize=address -fno-omit-frame-pointer -g -O1" $(PY) $(PIP_INSTALL) --no-deps -e .
	LD_PRELOAD=$$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \
		$(PY) -m pytest -q -p no:cacheprovider $(ASAN_TESTS); rc=$$?; \
		$(PY) $(PIP_INSTALL) --no-deps -e .; exit $$rc

# The portable answers of mmcache/_platform.py (what macOS and other POSIX
# systems get: no posix_fallocate, no /proc, no MADV_POPULATE_WRITE), run here
# on Linux: core, decorator and Django tests with MMCACHE_PORTABLE=1, then a
# smaller set with 16 KiB pages assumed (Apple Silicon). Each run first
# prints which answer every question got. About a minute on an idle 2-core machine.
PORTABLE_TESTS := tests/core/test_table_basic.py tests/core/test_table_processes.py \
	tests/core/test_rebuild_catch_up.py tests/faces/test_decorator.py \
	tests/faces/test_decorator_processes.py tests/faces/test_django_backend.py \
	tests/core/test_security.py tests/core/test_platform.py tests/core/test_spawn.py \
	tests/proofs/test_reliability.py::test_full_disk_tmpfs \
	tests/proofs/test_reliability.py::test_full_disk_ext4 \
	tests/proofs/test_reliability.py::test_full_disk_table_creation_fails_cleanly \
	tests/proofs/test_reliability.py::test_file_size_limit
PAGE_16K_TESTS := tests/core/test_table_basic.py tests/core/test_rebuild_catch_up.py \
	tests/faces/test_decorator.py tests/faces/test_django_backend.py tests/core/test_platform.py
PLATFORM_ANSWERS := 'from mmcache import _platform as p; print(*(f"  {k}: {v}" for k, v in p.describe().items()), sep="\n")'

.PHONY: test-portable
test-portable: $(STAMP)
	MMCACHE_PORTABLE=1 $(PY) -c $(PLATFORM_ANSWERS)
	MMCACHE_PORTABLE=1 $(PY) -m pytest -q -p no:cacheprovider $(PORTABLE_TESTS)
	MMCACHE_ASSUME_PAGE_SIZE=16384 $(PY) -c $(PLATFORM_ANSWERS)
	MMCACHE_ASSUME_PAGE_SIZE=16384 $(PY) -m pytest -q -p no:cacheprovider $(PAGE_16K_TESTS)

# Django's own cache and session tests against the backend under Django 4.2 LTS too
# (the main venv has the newest Django this Python allows).
test-django42:
	$(PYTHON) -m venv .venv-django42
	.venv-django42/bin/python -m pip install --quiet -c $(PINS) pip
	.venv-django42/bin/python -m pip install --quiet -c requirements/constraints-django42.txt \
		'django>=4.2,<5' xxhash cloudpickle
	.venv-django42/bin/python $(PIP_INSTALL) --no-deps -e .
	MMCACHE_DJANGO_SRC=.cache/django-src-42 .venv-django42/bin/python tests/proofs/django_suite/run_suite.py \
		--backend mmcache.contrib.django.MmapCacheBackend

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check mmcache

reliability: $(STAMP) fuzz-native
	$(PY) tests/proofs/reliability_report.py

# The fuzzers over the native get's slot and record parsing (tests/core/fuzz_native.py)
# and over the native put / add / delete's reading of a table (fuzz_native_write.py),
# FUZZ_SECONDS each: the extension rebuilt with gcc's comparison hooks, atheris'
# libFuzzer preloaded; then the normal build is put back.
FUZZ_SECONDS ?= 60
fuzz-native: $(STAMP)
	$(PY) $(PIP_INSTALL) atheris  # the fuzz extra, at its pinned version
	MMCACHE_CFLAGS="-fsanitize-coverage=trace-cmp -DMMCACHE_FUZZ" $(PY) $(PIP_INSTALL) --no-deps -e .
	ATH=$$($(PY) -c "import atheris, os; print(os.path.dirname(os.path.dirname(atheris.__file__)))"); \
		LD_PRELOAD=$$ATH/ubsan_with_fuzzer.so $(PY) tests/core/fuzz_native.py -max_total_time=$(FUZZ_SECONDS) \
		-print_final_stats=1; rc=$$?; \
		LD_PRELOAD=$$ATH/ubsan_with_fuzzer.so $(PY) tests/core/fuzz_native_write.py -max_total_time=$(FUZZ_SECONDS) \
		-print_final_stats=1; rc2=$$?; $(PY) $(PIP_INSTALL) --no-deps -e .; [ $$rc = 0 ] && exit $$rc2; exit $$rc

bench-quick: $(STAMP)
	$(PY) -m benchmarks --quick

bench: $(STAMP)
	$(PY) -m benchmarks --chart

clean:
	rm -rf $(VENV) .venv-django42 .cache build *.egg-info

# Refresh the pinned set: resolve the newest releases in a scratch venv, write
# them to requirements/, then run `make clean test` and commit the diff.
pins:
	rm -rf .venv-pins
	$(PYTHON) -m venv .venv-pins
	.venv-pins/bin/python -m pip install --quiet --upgrade pip
	.venv-pins/bin/python -m pip install --quiet -e '.[dev]'
	.venv-pins/bin/python requirements/write_pins.py .venv-pins requirements/constraints.txt
	rm -rf .venv-pins
	$(PYTHON) -m venv .venv-pins
	.venv-pins/bin/python -m pip install --quiet 'django>=4.2,<5' xxhash cloudpickle
	.venv-pins/bin/python requirements/write_pins.py .venv-pins requirements/constraints-django42.txt
	rm -rf .venv-pins
