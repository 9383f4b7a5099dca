"""Django's own ``BaseCacheTests`` against ``TieredCacheBackend``.

Runs ``tests/proofs/django_suite/run_suite.py`` (see ``test_django_conformance.py``)
with ``_tiered_suite_backend.SuiteTieredBackend``, whose L2 is a
``RedisCache`` on a redis-server started here. Two tests do not apply and
are skipped, with this reason: ``test_cull`` and ``test_zero_cull`` count
entries after MAX_ENTRIES is passed, but MAX_ENTRIES bounds only a host's L1;
Redis, the truth, evicts by its own ``maxmemory`` policy. Django's own
``RedisCacheTests`` leaves those two out for the same reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("django", reason="Django is not installed (pip install mmcache[django])")

from support.redis_server import RedisServer, redis_server  # noqa: E402

HERE = Path(__file__).resolve().parent
RUN_SUITE = HERE / "django_suite" / "run_suite.py"
BACKEND = "_tiered_suite_backend.SuiteTieredBackend"
SUMMARY_RE = re.compile(
    r"^django cache suite: ran (\d+): (\d+) passed, (?:(\d+) failed, )?(\d+) skipped$", re.MULTILINE
)
SKIPPED_RE = re.compile(r"^  skipped: [\w.]+\.\{([\w, ]+)\}: (.*)$", re.MULTILINE)
NOT_APPLICABLE = (
    "MAX_ENTRIES bounds only a host's L1; Redis, the truth, evicts by its own maxmemory "
    "policy (as Django's RedisCacheTests, which leaves it out)"
)
SKIPS = {"test_cull": NOT_APPLICABLE, "test_zero_cull": NOT_APPLICABLE}


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    yield from redis_server()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_django_base_cache_tests(server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    env = {
        **os.environ,
        "MMCACHE_SUITE_REDIS_URL": server.url,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    skips = [f"--skip={name}={reason}" for name, reason in SKIPS.items()]
    proc = subprocess.run(
        [
            sys.executable,
            str(RUN_SUITE),
            "--backend",
            BACKEND,
            "--scope",
            "base",
            "--location-kind",
            "dir",
            *skips,
        ],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
        env=env,
    )
    output = proc.stdout + proc.stderr
    summary = SUMMARY_RE.findall(output)
    assert summary, f"no summary line in run_suite.py output:\n{output[-30000:]}"
    with capsys.disabled():
        print(f"\n{SUMMARY_RE.search(output).group(0)}")  # type: ignore[union-attr]
        for names, reason in SKIPPED_RE.findall(output):
            print(f"  skipped: {names}: {reason}")
    assert proc.returncode == 0, output[-30000:]
    ran, passed, failed, skipped = (int(n or 0) for n in summary[-1])
    skipped_names = {n.strip() for names, _ in SKIPPED_RE.findall(output) for n in names.split(",")}
    assert skipped_names == set(SKIPS), output[-30000:]
    assert (failed, skipped) == (0, len(SKIPS))
    assert passed > 0 and ran == passed + skipped
