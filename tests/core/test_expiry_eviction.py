"""Expiry, limits, eviction and compaction (issue 3), with real processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import pytest
from _workers import churn_worker, disk_watcher, expiry_reader, replay
from support.helpers import run_py

from mmcache import CacheFullError, MmapCache, ValueTooLargeError

CTX = mp.get_context("spawn")


def test_expiry_is_seen_by_another_process(path: str) -> None:
    """Put with expire=0.2 here: a hit at once in another (already running)
    process, and a miss there 0.3 s later."""
    with MmapCache(path, size=1024) as c:
        c.put("never", b"v")
        out, ready, go = CTX.Queue(), CTX.Event(), CTX.Event()
        reader = CTX.Process(target=expiry_reader, args=(path, ready, go, out))
        reader.start()
        assert ready.wait(60)
        c.put("short", b"v", expire=0.2)
        c.put("long", b"v", expire=60)
        go.set()
        first, later = out.get(timeout=60)
        reader.join(60)
        assert first == [b"v", b"v", b"v"]
        assert later == [None, b"v", b"v", False]
        assert c.get("short") is None
        e = c.get_entry("long")
        assert e is not None and e.expire_ns is not None and e.expire_ns > time.time_ns()


def test_expired_entries_are_reclaimed_in_bulk(path: str) -> None:
    with MmapCache(path, size=1024) as c:
        for i in range(100):
            c.put(f"k{i}", b"v", expire=0.05 if i % 2 else None)
        time.sleep(0.1)
        assert len(c.list()) == 50
        assert c.purge_expired() == 50
        assert len(c) == 50 and c.get_stats()["expirations"] >= 50
        assert c.verify() == []


def test_zero_or_negative_expire_removes(path: str) -> None:
    with MmapCache(path, size=64) as c:
        c.put("k", b"v")
        c.put("k", b"v2", expire=0)
        assert c.get("k") is None and len(c) == 0
        with pytest.raises(TypeError):
            c.put("k", b"v", expire="1")  # type: ignore[arg-type]


def test_add_respects_expiry_and_is_atomic(path: str) -> None:
    with MmapCache(path, size=64) as c:
        assert c.add("k", b"1", expire=0.05)
        assert not c.add("k", b"2")
        time.sleep(0.08)
        assert c.add("k", b"3")
        assert c.get("k") == b"3"
        assert c.touch("k", 0.05) and not c.touch("absent")
        time.sleep(0.08)
        assert c.get("k") is None


def _lru_fill(c: MmapCache) -> None:
    for i in range(100):
        c.put(f"k{i}", b"v")
    for _ in range(3):
        for i in range(50):
            assert c.get(f"k{i}") == b"v"
    for i in range(100, 150):
        c.put(f"k{i}", b"v")


def test_max_entries_lru_keeps_recently_used(path: str) -> None:
    with MmapCache(path, size=1024, max_entries=100) as c:
        _lru_fill(c)
        assert len(c) == 100
        hot = sum(c.get(f"k{i}") is not None for i in range(50))
        cold = sum(c.get(f"k{i}") is not None for i in range(50, 100))
        assert hot >= 30 and cold <= 20, (hot, cold)
        assert c.get_stats()["evictions"] == 50


def test_fifo_evicts_oldest_writes(path: str) -> None:
    with MmapCache(path, size=1024, max_entries=100, eviction="fifo") as c:
        _lru_fill(c)
        first = sum(c.get(f"k{i}") is not None for i in range(50))
        second = sum(c.get(f"k{i}") is not None for i in range(50, 100))
        assert first <= 25 and second >= 25, (first, second)


def test_policy_none_raises_and_loses_nothing(path: str) -> None:
    with MmapCache(path, size=1024, max_entries=10, eviction="none") as c:
        for i in range(10):
            c.put(f"k{i}", b"v")
        with pytest.raises(CacheFullError):
            c.put("k10", b"v")
        assert sorted(c.list()) == sorted(f"k{i}" for i in range(10))
    with MmapCache(path, size=1024, max_entries=10, eviction="none") as c:
        c.delete("k0")
        c.put("exp", b"v", expire=0.02)
        time.sleep(0.05)
        c.put("k10", b"v")  # the expired entry is purged to make room
        assert len(c) == 10 and c.get("exp") is None


def test_max_bytes_evicts_to_stay_under(path: str) -> None:
    with MmapCache(path, size=4096, max_bytes=100_000) as c:
        for i in range(1000):
            c.put(f"k{i}", os.urandom(1000))
            assert c.get_stats()["heap_live_bytes"] <= 100_000
        assert 50 <= len(c) <= 100
        with pytest.raises(ValueTooLargeError):
            c.put("huge", b"x" * 200_000)


def test_compaction_bounds_the_heap(path: str) -> None:
    with MmapCache(path, size=1024, compact_min_bytes=100_000) as c:
        for i in range(2000):
            c.put(f"k{i % 50}", os.urandom(2000))
        st = c.get_stats()
        assert st["rebuilds"] >= 5
        assert st["heap_dead_bytes"] <= max(100_000, st["heap_live_bytes"])
        assert len(c) == 50 and c.verify() == []


@pytest.mark.slow
def test_one_gib_through_ten_mib(path: str) -> None:
    """1 GiB written through max_bytes=10 MiB: a second process watches the
    heap files stay under 4x the limit and live bytes under the limit."""
    max_bytes = 10 << 20
    MmapCache(path, size=4096, max_bytes=max_bytes).close()
    out, stop = CTX.Queue(), CTX.Event()
    watcher = CTX.Process(target=disk_watcher, args=(path, stop, max_bytes, out))
    watcher.start()
    value = os.urandom(64 << 10)
    try:
        with MmapCache(path, size=4096, max_bytes=max_bytes) as c:
            for i in range((1 << 30) // len(value)):
                c.put(f"k{i}", value[: len(value) - (i % 100)])
            final = c.get_stats()
    finally:
        stop.set()
    worst_disk, worst_live, samples = out.get(timeout=120)
    watcher.join(60)
    assert samples > 20
    assert worst_live <= max_bytes and final["heap_live_bytes"] <= max_bytes
    assert worst_disk <= 4 * max_bytes, worst_disk / max_bytes
    assert final["evictions"] > 10_000 and final["rebuilds"] > 10


def test_eviction_and_compaction_with_concurrent_writers(path: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    opts = {"max_bytes": 400_000, "compact_min_bytes": 100_000}
    MmapCache(path, size=4096, **opts).close()
    log = str(tmp_path / "log")
    out = CTX.Queue()
    procs = [CTX.Process(target=churn_worker, args=(path, w, 3.0, log), kwargs={"out": out, **opts})
             for w in range(4)]  # fmt: skip
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sum(r[1] for r in results) == 0, "a wrong value was read"
    model = replay(log)
    with MmapCache(path, size=4096, **opts) as c:
        items = dict(c.list_items())
        st = c.get_stats()
        assert c.verify() == []
    # every entry left holds the last value written under its key
    assert all(model[k] == v for k, v in items.items())
    # and every entry missing was taken by the policy, not lost
    missing = len(model) - len(items)
    assert 0 < missing <= st["evictions"] + st["expirations"], (missing, st["evictions"])
    assert st["heap_live_bytes"] <= 400_000 and st["rebuilds"] > 0


def test_stats_are_summed_over_processes(path: str) -> None:
    with MmapCache(path, size=1024) as c:
        c.put("a", b"1")
        code = """
            import sys
            from mmcache import MmapCache
            c = MmapCache(sys.argv[1], size=1024)
            for _ in range(100): c.get("a")
            for _ in range(30): c.get("b")
            c.close()
        """
        run_py(code, path)
        run_py(code, path)
        for _ in range(5):
            c.get("a")
        st = c.get_stats()
        assert st["hits"] == 205 and st["misses"] == 60 and st["sets"] == 1
        assert st["hit_rate"] == pytest.approx(205 / 265)


def _used_in_groups(c: MmapCache, groups: list[list[str]]) -> None:
    """Read each group after the one before (no pause: stamps are in ns)."""
    for g in groups:
        assert all(c.get(k) is not None for k in g)


def test_batch_eviction_takes_the_expired_then_exactly_the_least_recently_used(path: str) -> None:
    """A batch of at least an eighth of the table (Django's cull takes a
    third) ranks every entry: all expired ones go first, then exactly the
    least recently used, wherever they sit."""
    with MmapCache(path, size=1024) as c:
        keys = [f"k{i}" for i in range(40)]
        for k in keys:
            c.put(k, b"v")
        for i in range(5):
            c.put(f"e{i}", b"v", expire=0.05)
        _used_in_groups(c, [keys[i : i + 10] for i in (20, 0, 30, 10)])  # k20-29 least recent
        time.sleep(0.06)
        before = c.get_stats()
        assert c.evict(15) == 15
        assert sorted(c.keys()) == sorted(keys[:20] + keys[30:])
        after = c.get_stats()
        assert after["evictions"] - before["evictions"] == 10
        assert after["expirations"] - before["expirations"] == 5
        assert c.verify() == []


def test_batch_eviction_fifo_takes_the_oldest_writes(path: str) -> None:
    with MmapCache(path, size=1024, eviction="fifo") as c:
        keys = [f"k{i}" for i in range(40)]
        for k in keys:
            c.put(k, b"v")
        _used_in_groups(c, [keys[:10]])  # reads do not count for fifo
        assert c.evict(10) == 10
        assert sorted(c.keys()) == sorted(keys[10:])


def test_batch_eviction_over_a_damaged_roster_repairs_it(path: str) -> None:
    """A roster entry naming a slot outside the table (or an empty one) is
    passed over; the eviction still happens and the roster is rebuilt."""
    import struct

    with MmapCache(path, size=1024) as c:
        for i in range(40):
            c.put(f"k{i}", b"v")
        roster = c._s.gen.roster  # type: ignore[union-attr]
        struct.pack_into("<I", roster, 64 + 4 * 3, 60_000)  # the 4th entry: no such slot
        assert c.evict(10) == 10
        assert len(c) == 30  # the entry the roster lost is found again by the repair
        assert c.verify() == []
        assert sum(c.get(f"k{i}") is not None for i in range(40)) == 30


def _access(c: MmapCache, key: str, how: int) -> None:
    """One use of ``key``, by one of the paths that count for LRU: a get
    (memo or probe), a get with flags, get_entry (the general lookup), a put."""
    if how == 0:
        assert c.get(key) == b"v"
    elif how == 1:
        assert c.get(key, with_flags=True) == (b"v", 0)
    elif how == 2:
        assert c.get_entry(key) is not None
    else:
        c.put(key, b"v")


def test_lru_batch_eviction_follows_accesses_made_in_turn(path: str) -> None:
    """Issue 16.8: accesses made one after another, microseconds apart (no
    sleep), order the LRU exactly: evict(n) of a batch takes exactly the
    n used longest ago. 300 rounds of a shuffled order of mixed reads and
    puts; with millisecond stamps every round was a tie broken by slot."""
    import random

    rng = random.Random(16_8)
    with MmapCache(path, size=256) as c:
        keys = [f"k{i}" for i in range(40)]
        for k in keys:
            c.put(k, b"v")
        for _ in range(300):
            order = keys[:]
            rng.shuffle(order)
            for k in order:
                _access(c, k, rng.randrange(4))
            assert c.evict(10) == 10
            assert sorted(c.keys()) == sorted(order[10:])
            for k in order[:10]:
                c.put(k, b"v")
        assert c.verify() == []


_TURN_READER = """
import sys
from mmcache import MmapCache
c = MmapCache.open(sys.argv[1])
for line in sys.stdin:
    assert c.get(line.strip()) == b"v"
    print("ok", flush=True)
"""


def test_lru_order_across_threads_and_processes_in_turn(path: str) -> None:
    """Accesses handed in turn between this thread, another thread and
    another process (a pipe round trip apart) order the LRU as they were
    made: 50 rounds, evict(8) each takes exactly the 8 used first."""
    import random
    import subprocess
    import sys
    import threading

    from support.helpers import ROOT

    rng = random.Random(168)
    with MmapCache(path, size=256) as c:
        keys = [f"k{i}" for i in range(24)]
        for k in keys:
            c.put(k, b"v")
        proc = subprocess.Popen(
            [sys.executable, "-c", _TURN_READER, path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        todo: list[str | None] = []
        turn, done = threading.Event(), threading.Event()

        def other_thread() -> None:
            while True:
                turn.wait()
                turn.clear()
                k = todo.pop()
                if k is None:
                    return
                assert c.get(k) == b"v"
                done.set()

        t = threading.Thread(target=other_thread)
        t.start()
        try:
            for _ in range(50):
                order = keys[:]
                rng.shuffle(order)
                for i, k in enumerate(order):
                    who = i % 3
                    if who == 0:
                        assert c.get(k) == b"v"
                    elif who == 1:
                        todo.append(k)
                        turn.set()
                        assert done.wait(30)
                        done.clear()
                    else:
                        proc.stdin.write(k + "\n")
                        proc.stdin.flush()
                        assert proc.stdout.readline() == "ok\n"
                assert c.evict(8) == 8
                assert sorted(c.keys()) == sorted(order[8:])
                for k in order[:8]:
                    c.put(k, b"v")
        finally:
            todo.append(None)
            turn.set()
            t.join(30)
            proc.stdin.close()
            assert proc.wait(30) == 0


def test_lru_stamp_from_before_a_reboot_counts_as_oldest(path: str) -> None:
    """CLOCK_MONOTONIC restarts at boot: a stamp ahead of the clock (left by
    an earlier boot, or damaged) makes its entry the oldest, not the newest."""
    with MmapCache(path, size=256) as c:
        keys = [f"k{i}" for i in range(16)]
        for k in keys:
            c.put(k, b"v")
        for k in keys:
            assert c.get(k) == b"v"
        g = c._s.gen  # type: ignore[union-attr]
        slot = next(s for s in range(1, g.nslots + 1) if _slot_key(c, s) == b"k15")
        g.recency[g.rec_base + slot - 1] = time.monotonic_ns() + 10**15  # ~12 days ahead
        assert c.evict(2) == 2
        assert sorted(c.keys()) == sorted(keys[1:15])


def _slot_key(c: MmapCache, slot: int) -> bytes:
    g = c._s.gen  # type: ignore[union-attr]
    o = 4096 + (slot - 1) * g.slot_size
    return bytes(g.idx[o : o + g.key_size]).rstrip(b"\0")
