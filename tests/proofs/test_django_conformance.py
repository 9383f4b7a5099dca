"""Django's own cache and session tests against mmcache's backend.

Runs ``tests/proofs/django_suite/run_suite.py`` in a subprocess: it fetches the test
suite of the installed Django version from PyPI (cached under ``.cache/``), and
runs Django's ``cache`` and ``sessions_tests`` apps whole with ``runtests.py``:
``BaseCacheTests`` configured like Django's ``FileBasedCacheTests`` (all
aliases share one ``LOCATION`` directory), LocMemCacheTests' own tests (the
LRU ones with MAX_ENTRIES=9), the middleware, ``cache_page``, i18n, HEAD and
template response tests, and the ``cache`` and ``cached_db`` session engines,
all with the backend where Django's tests use LocMemCache. Tests of other
backends and engines are skipped with their reason (``generate.EXCLUDED``);
the runner fails on any other skip.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("django", reason="Django is not installed (pip install mmcache[django])")

RUN_SUITE = Path(__file__).resolve().parent / "django_suite" / "run_suite.py"
BACKEND = "mmcache.contrib.django.MmapCacheBackend"
SUMMARY_RE = re.compile(
    r"^(django cache suite|  \w+): ran (\d+): (\d+) passed, (?:(\d+) failed, )?(\d+) skipped$", re.MULTILINE
)
PASSED_RE = re.compile(r"^  passed:  ([\w.]+) \((\d+)\)$", re.MULTILINE)
# What the backend must have passed in, whatever else a Django version has.
MUST_PASS = {
    "cache.tests_backend_conformance.BackendConformanceTests",  # BaseCacheTests
    "cache.tests_backend_conformance.BackendLocMemTests",  # test_lru_get / _set / _incr
    "cache.tests.CacheMiddlewareTest",
    "cache.tests.CacheUtils",
    "cache.tests.CacheHEADTest",
    "cache.tests.CacheI18nTest",
    "cache.tests.TestWithTemplateResponse",
    "sessions_tests.tests.CacheSessionTests",
    "sessions_tests.tests.CacheDBSessionTests",
    "sessions_tests.tests_session_engines.CacheEngineMiddlewareTests",
    "sessions_tests.tests_session_engines.CachedDBEngineMiddlewareTests",
}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_django_cache_and_session_tests_pass(capsys: pytest.CaptureFixture[str]) -> None:
    proc = subprocess.run(
        [sys.executable, str(RUN_SUITE), "--backend", BACKEND, "--location-kind", "dir"],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    output = proc.stdout + proc.stderr
    lines = [m.group(0) for m in SUMMARY_RE.finditer(output)]
    with capsys.disabled():
        print("\n" + "\n".join(lines or ["django cache suite: no summary line"]) + f" ({BACKEND})")
    assert proc.returncode == 0, f"run_suite.py exited {proc.returncode}:\n{output[-30000:]}"
    total = [m for m in SUMMARY_RE.finditer(output) if m.group(1) == "django cache suite"]
    assert total, f"no summary line in run_suite.py output:\n{output[-30000:]}"
    ran, passed, failed, skipped = (int(total[-1].group(i) or 0) for i in (2, 3, 4, 5))
    assert failed == 0 and passed > 0 and ran == passed + skipped
    passing = {cls for cls, n in PASSED_RE.findall(output) if int(n) > 0}
    assert passing >= MUST_PASS, sorted(MUST_PASS - passing)
