"""Django's own cache test suite (``BaseCacheTests``) against mmcache's backend.

Runs ``tests/django_suite/run_suite.py`` in a subprocess: it fetches the test
suite of the installed Django version from PyPI (cached under ``.cache/``), and
runs every test of ``BaseCacheTests`` with Django's ``runtests.py``, configured
like Django's ``FileBasedCacheTests`` (all aliases share one ``LOCATION``
directory).  No test is stubbed, overridden or skipped.
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
SUMMARY_RE = re.compile(r"^django cache suite: (\d+) passed, (\d+) failed, (\d+) skipped$", re.MULTILINE)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_django_base_cache_tests_pass(capsys: pytest.CaptureFixture[str]) -> None:
    proc = subprocess.run(
        [sys.executable, str(RUN_SUITE), "--backend", BACKEND, "--location-kind", "dir"],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    output = proc.stdout + proc.stderr
    matches = SUMMARY_RE.findall(output)
    summary = (
        f"django cache suite: {matches[-1][0]} passed, {matches[-1][1]} failed, {matches[-1][2]} skipped"
        if matches
        else "django cache suite: no summary line"
    )
    with capsys.disabled():
        print(f"\n{summary} ({BACKEND})")
    assert proc.returncode == 0, f"run_suite.py exited {proc.returncode}:\n{output[-30000:]}"
    assert matches, f"no summary line in run_suite.py output:\n{output[-30000:]}"
    passed, failed, skipped = (int(n) for n in matches[-1])
    assert passed > 0
    assert failed == 0
    assert skipped == 0
