"""Survival: hammering processes, kill -9, corrupted files, full disks (issue 6).

These run bounded versions of the harness in ``stress.py``; the report
command (``python tests/proofs/reliability_report.py``) runs larger ones.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from stress_mixed import failures, mixed
from support.stress import corruption_trials, crash_trials, fill_disk, hammer, small_ext4, small_tmpfs

from mmcache import DiskFullError, MmapCache


@pytest.mark.parametrize("nprocs", [4, 8])
def test_hammer(tmp_path, nprocs: int) -> None:  # type: ignore[no-untyped-def]
    r = hammer(str(tmp_path), nprocs, duration=3.0)
    assert r["wrong"] == 0 and r["inconsistent"] == 0 and r["exit_failures"] == 0, r
    # The workers did real work (a floor, not a speed: the machine may be loaded).
    assert r["operations"] > 100 * nprocs


def test_processes_and_threads_with_kills_against_a_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """3 checked processes x 3 threads (gets, puts, deletes, transactional
    incr, eviction, compactions, rebuilds) while 2 more processes doing the
    same are killed with SIGKILL now and then: nothing acknowledged lost, no
    delete undone, no wrong value, no exception to a caller (see stress_mixed)."""
    r = mixed(str(tmp_path), nprocs=3, nthreads=3, duration=16.0, chaos=2, kill_every=0.8)
    shown = {k: v for k, v in r.items() if k != "tracebacks"} | {"first": r["tracebacks"][:1]}
    assert failures(r) == 0, shown
    assert r["kills"] >= 5 and r["incr"] > 100 and r["evictions"] > 100 and r["rebuilds"] > 20, r


def test_kill_minus_nine_during_writes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = crash_trials(str(tmp_path), trials=80, rebuild_every=1000)
    assert r["unopenable"] == 0 and r["wrong"] == 0 and r["unrepairable"] == 0, r
    assert r["unwritable"] == 0 and r["leftover_files"] == 0, r
    assert r["kills"] == 80


def test_kill_minus_nine_during_rebuilds(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = crash_trials(str(tmp_path), trials=80, rebuild_every=3, seed=1)
    assert r["unopenable"] == 0 and r["wrong"] == 0 and r["unrepairable"] == 0, r
    assert r["unwritable"] == 0 and r["leftover_files"] == 0, r


def test_corrupted_files_never_give_wrong_values_or_crash(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = corruption_trials(str(tmp_path), trials=150)
    assert r["crashed"] == 0 and r["hung"] == 0 and r["wrong"] == 0 and r["error"] == 0, r
    assert r["worked"] + r["repaired"] + r["refused"] == 150


def _zero_fill_pays_in(directory: str) -> bool:
    """Whether reserve() zero-fills heap space for a file in ``directory``
    (asked with a file's fd, as reserve() is)."""
    from mmcache._core import fs

    probe = os.path.join(directory, "probe")
    fd = os.open(probe, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        return fs._zero_fill_pays(fd)
    finally:
        os.close(fd)
        os.unlink(probe)


def test_full_disk_tmpfs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with small_tmpfs("2m") as d:
        if d is None:
            pytest.skip("mounting a tmpfs needs root and mount permission here")
        assert not _zero_fill_pays_in(d)  # tmpfs: fallocate's pages are zeroed already
        r = fill_disk(os.path.join(d, "t"))
    assert r["refused"] >= 1 and r["stored"] > 10, r
    assert r["lost_here"] == 0 and r["lost_elsewhere"] == 0 and r["verify_problems"] == 0, r


def test_full_disk_ext4(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The same on ext4, where heap space is zero-filled after fallocate."""
    with small_ext4(8) as d:
        if d is None:
            pytest.skip("mounting an ext4 image needs root, mkfs.ext4 and a loop device here")
        assert _zero_fill_pays_in(d)  # the path under test
        r = fill_disk(os.path.join(d, "t"))
    assert r["refused"] >= 1 and r["stored"] > 10, r
    assert r["lost_here"] == 0 and r["lost_elsewhere"] == 0 and r["verify_problems"] == 0, r


def test_full_disk_table_creation_fails_cleanly() -> None:
    with small_tmpfs("1m") as d:
        if d is None:
            pytest.skip("mounting a tmpfs needs root and mount permission here")
        with pytest.raises(DiskFullError):
            MmapCache(os.path.join(d, "t"), size=100_000)  # a 9.6 MB index
        assert [f for f in os.listdir(d) if not f.endswith(".lock")] == []
        with MmapCache(os.path.join(d, "t"), size=1000) as c:  # and a smaller one still fits
            c.put("k", b"v")
            assert c.get("k") == b"v"


def test_file_size_limit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """RLIMIT_FSIZE: growing a file past the limit is refused with DiskFullError."""
    code = textwrap.dedent(
        """
        import resource, signal, sys
        from mmcache import MmapCache, DiskFullError
        c = MmapCache(sys.argv[1], size=1024, max_segment_bytes=1 << 22)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (3 << 20, 3 << 20))
        stored = refused = 0
        for i in range(1000):
            try:
                c.put(f"k{i}", bytes([i % 256]) * 50_000)
                stored = i + 1
            except DiskFullError:
                refused += 1
                break
        ok = all(c.get(f"k{i}") == bytes([i % 256]) * 50_000 for i in range(stored))
        print(stored, refused, ok, c.verify() == [])
        """
    )
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "t")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    stored, refused, ok, consistent = r.stdout.split()
    assert int(stored) > 10 and refused == "1" and ok == "True" and consistent == "True"
    with MmapCache(str(tmp_path / "t"), size=1024, max_segment_bytes=1 << 22) as c:
        assert c.get("k1") == bytes([1]) * 50_000
