"""The example Django site: its own tests, and several gunicorn workers sharing hits."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("django", reason="Django is not installed (pip install mmcache[django])")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "example_project"


def _env(cache_dir: Path) -> dict[str, str]:
    env = {**os.environ, "MMCACHE_EXAMPLE_CACHE_DIR": str(cache_dir)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def _load_run_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_mmcache_run_demo", EXAMPLE / "run_demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): read its state.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.timeout(180)
def test_the_example_sites_own_tests_pass(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "manage.py", "test", "demo", "--noinput", "-v", "2"],
        cwd=EXAMPLE,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "OK" in out and "Ran 8 tests" in out


def test_the_example_site_passes_system_checks(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "manage.py", "check", "--fail-level", "WARNING"],
        cwd=EXAMPLE, env=_env(tmp_path), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_gunicorn_workers_share_hits(tmp_path: Path) -> None:
    """The demo script end to end: a value cached by one worker is a hit in others."""
    pytest.importorskip("gunicorn")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE / "run_demo.py"), "--workers", "4", "--n", "200000", "--timeout", "90"],
        env=_env(tmp_path), capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "OK: a value cached by pid" in out
    hits = [line for line in out.splitlines() if line.startswith("GET /primes/") and " hit " in line]
    assert hits, out
    for line in hits:  # "... cached by pid A, served by pid B ..." with A != B
        cached = int(line.split("cached by pid ")[1].split(",")[0])
        served = int(line.split("served by pid ")[1].split(" ")[0])
        assert cached != served


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_gunicorn_shared_hit_and_always_stopped(tmp_path: Path) -> None:
    """``run_demo()`` in-process: the summary shows a cross-worker hit and a
    cache_page hit; ``running_server`` stops every worker even on an error."""
    pytest.importorskip("gunicorn")
    demo = _load_run_demo()
    lines: list[str] = []
    summary = demo.run_demo(workers=3, n=100_000, timeout=90, cache_dir=str(tmp_path / "a"), say=lines.append)
    assert summary["shared"], lines
    assert summary["first"]["cache"] == "miss"
    assert set(summary["workers_with_shared_hit"]) <= set(summary["worker_pids"])
    assert summary["first"]["cached_by"] not in summary["workers_with_shared_hit"]
    assert summary["report_served_by_others"], lines
    assert summary["stats"]["sets"] >= 1
    # The counters are read after every worker exited (and flushed them): they
    # count at least the cached replies the demo received.
    assert summary["stats"]["hits"] >= summary["cached_replies_seen"] > 0, lines

    pids: set[int] = set()
    master = -1
    server = demo.running_server(str(tmp_path / "b"), workers=2, timeout=60)
    with pytest.raises(RuntimeError, match="boom"), server as srv:
        pids = set(srv.worker_pids)
        master = srv.proc.pid
        assert demo.fetch(srv.url + "/")[0] == 200
        raise RuntimeError("boom")
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids | {master}) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids | {master}), "gunicorn was left running"
