"""get_stats while another process rebuilds: the files it sums may vanish.

A rebuild deletes the retired generation's roster and heap files; get_stats
lists the current generation's files and sums their sizes, so a file can be
gone between the two. It must be counted as gone, not raise
FileNotFoundError (seen in test_four_processes_overlapping_keys).
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from pathlib import Path

from mmcache import MmapCache


def _rebuild_loop(path: str, stop: mp.synchronize.Event) -> None:
    c = MmapCache(path, size=256)
    while not stop.is_set():
        c.atomic_rebuild()
    c.close()


def test_get_stats_tolerates_files_vanishing_under_rebuild(tmp_path: Path) -> None:
    path = str(tmp_path / "c")
    c = MmapCache(path, size=256)
    for i in range(100):
        c.put(f"k{i}", b"v" * 100)
    ctx = mp.get_context("fork")
    stop = ctx.Event()
    proc = ctx.Process(target=_rebuild_loop, args=(path, stop))
    proc.start()
    errors: list[BaseException] = []

    def reader() -> None:
        h = MmapCache(path, size=256)
        try:
            for i in range(3000):
                h.get(f"k{i % 100}")  # adopt the newest generation, whose files are next to go
                stats = h.get_stats()
                assert stats["disk_bytes"] >= 0
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            h.close()

    threads = [threading.Thread(target=reader) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        reader()
        for t in threads:
            t.join(timeout=300)
    finally:
        stop.set()
        proc.join(timeout=60)
    assert proc.exitcode == 0
    assert not errors, errors[:3]
    assert c.get_stats()["disk_bytes"] > 0
    c.close()
