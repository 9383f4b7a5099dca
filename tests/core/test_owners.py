"""Who owns what: threads are writers too, owners die, pids are reused.

Issue 16, items 1-3: a concurrent rebuild, its change log and the stats
stripes each name an owner that no other thread and no later process can be
taken for, and an owner's death is seen through a lock the kernel drops, not
through its pid. Real threads, real processes, real kill -9.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from mmcache import MmapCache
from mmcache._core import layout as L
from mmcache._core import rebuild as R

ROOT = Path(__file__).resolve().parents[2]
# A table that compacts all the time (the reproduction).
BUSY = {"size": 64, "max_segment_bytes": 1 << 16, "compact_min_bytes": 8192, "compact_threshold": 0.3}
PAD = b"." * 200
HANG = 120.0  # hang guard for joins and pipe reads, never a speed assertion


def _run_threads(targets: list[Any]) -> list[BaseException]:
    """Run each callable in its own thread; the exceptions they raised."""
    errors: list[BaseException] = []

    def wrap(fn: Any) -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - reported to the test
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(fn,)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANG)
        assert not t.is_alive(), "a thread hung"
    return errors


# ------------------------------------------------------------------ item 1
def test_threads_increment_in_transactions_lose_nothing(path: str) -> None:
    """4 threads: ``with transaction(): put(k, get(k) + 1)`` on a table that
    compacts every few dozen writes; each thread also puts and deletes keys of
    its own, which must never come back. At main: increments lost,
    CorruptCacheError to callers, deleted keys back as live."""
    keys = [f"n{i}" for i in range(4)]
    per_thread = 1500
    with MmapCache(path, **BUSY) as c:
        for k in keys:
            c.put(k, b"0|" + PAD)
        rebuilds0 = c.get_stats()["rebuilds"]

        def worker(t: int) -> None:
            for i in range(per_thread):
                k = keys[(i + t) % len(keys)]
                with c.transaction():
                    v = c.get(k)
                    assert v is not None, f"{k} vanished"
                    c.put(k, b"%d|" % (int(v.split(b"|")[0]) + 1) + PAD)
                own = f"gone{t}-{i % 8}"
                c.put(own, b"x" + PAD)
                c.delete(own)
                assert c.get(own) is None, f"{own} came back right after its delete"

        errors = _run_threads([lambda t=t: worker(t) for t in range(4)])
        assert errors == [], f"callers got exceptions: {errors[:3]!r}"
        total = sum(int(c.get(k).split(b"|")[0]) for k in keys)  # type: ignore[union-attr]
        assert total == 4 * per_thread, "acknowledged increments were lost"
        assert [k for k in c.list() if k.startswith("gone")] == [], "deleted keys came back"
        assert c.verify() == []
        assert c.get_stats()["rebuilds"] - rebuilds0 >= 5, "the table should have compacted often"


def test_one_rebuild_at_a_time_whatever_asks(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads of this process and another process all call atomic_rebuild
    while threads write: every call returns, nothing is lost, and no two
    rebuilds of this process ever run at once (nor with the other process's:
    those would delete each other's files, seen as errors or lost keys)."""
    running, most = [0], [0]
    claimed = R._rebuild_claimed
    guard = threading.Lock()

    def counted(*args: Any) -> bool:
        with guard:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return claimed(*args)
        finally:
            with guard:
                running[0] -= 1

    monkeypatch.setattr(R, "_rebuild_claimed", counted)
    with MmapCache(path, **BUSY) as c:
        for i in range(20):
            c.put(f"k{i}", b"%d|" % i + PAD)
        child = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(f"""
                from mmcache import MmapCache
                c = MmapCache({path!r}, **{BUSY!r})
                for _ in range(30):
                    c.atomic_rebuild()
                print("ok")
            """)],
            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

        def rebuilder() -> None:
            for _ in range(30):
                c.atomic_rebuild()

        def writer(t: int) -> None:
            for i in range(600):
                k = f"k{(i * 7 + t) % 20}"
                c.put(k, b"%d|" % i + PAD)
                assert c.get(k) is not None

        errors = _run_threads([rebuilder, rebuilder, lambda: writer(0), lambda: writer(1)])
        out, _ = child.communicate(timeout=HANG)
        assert errors == [], f"callers got exceptions: {errors[:3]!r}"
        assert child.returncode == 0 and out.strip() == "ok"
        assert sorted(c.list()) == sorted(f"k{i}" for i in range(20))
        assert c.verify() == []
        assert most[0] == 1, f"{most[0]} rebuilds of the table ran at once in this process"


def test_django_incr_from_threads(tmp_path: Path) -> None:
    """Django's ``cache.incr`` from 4 threads while other threads overwrite
    large values (compactions all the time): every increment counted."""
    pytest.importorskip("django", reason="Django is not installed")
    from support.helpers import configure_django

    configure_django()
    from mmcache.contrib.django import MmapCacheBackend

    options = {"TABLE_SIZE": 64, "MAX_SEGMENT_BYTES": 1 << 16}
    cache = MmapCacheBackend(str(tmp_path / "dj"), {"OPTIONS": options})
    t = cache.table
    t.compact_min_bytes, t.compact_threshold = 8192, 0.3
    for i in range(4):
        cache.set(f"n{i}", 0, timeout=None)
    per_thread = 400

    def incr(w: int) -> None:
        for i in range(per_thread):
            cache.incr(f"n{(i + w) % 4}")

    def big(w: int) -> None:
        for i in range(300):
            cache.set(f"big{w}-{i % 3}", "x" * 2000, timeout=None)

    errors = _run_threads([lambda w=w: incr(w) for w in range(4)] + [lambda w=w: big(w) for w in range(2)])
    assert errors == [], f"callers got exceptions: {errors[:3]!r}"
    assert sum(cache.get(f"n{i}") for i in range(4)) == 4 * per_thread


# ------------------------------------------------------------ helpers
def _spawn(code: str) -> subprocess.Popen[str]:
    """A fresh interpreter running ``code``, with pipes to talk to it."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _line(p: subprocess.Popen[str], guard: float = 30.0) -> str | None:
    """The child's next line, or None if it wrote none within ``guard`` s
    (a hang guard: the child is expected to answer at once)."""
    assert p.stdout is not None
    ready, _, _ = select.select([p.stdout], [], [], guard)
    return p.stdout.readline().strip() if ready else None


def _stop(*procs: subprocess.Popen[str]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=HANG)


# ------------------------------------------------------------------ item 2
def test_fresh_reader_does_not_wait_for_a_transaction(path: str) -> None:
    """A process holds ``transaction()`` until told to let go; meanwhile a
    fresh process opens the table, reads, flushes its statistics (a first
    flush claims a stripe) and closes. It must finish while the holder
    still holds the lock (the holder lets go only after the reader is done,
    or after a 30 s hang guard). At main the first flush took the writer
    lock, so the reader waited for the holder."""
    with MmapCache(path, size=4096) as c:
        c.put("k", b"v")
    holder = _spawn(f"""
        import sys
        from mmcache import MmapCache
        c = MmapCache({path!r}, size=4096)
        with c.transaction():
            c.put("k", b"v2")
            print("holding", flush=True)
            sys.stdin.readline()
        print("released", flush=True)
    """)
    reader = None
    try:
        assert _line(holder) == "holding"
        reader = _spawn(f"""
            import time
            from mmcache import MmapCache
            c = MmapCache({path!r}, size=4096, staleness_check_interval=0.01)
            assert c.get("k") == b"v2"
            time.sleep(0.05)
            assert c.get("k") == b"v2"  # past the interval: a staleness check, which flushes
            assert c._shared().stripe is not None, "the stats were not flushed"
            c.close()
            print("done", flush=True)
        """)
        done = _line(reader)
        assert holder.poll() is None, "the holder should still hold the lock"
        assert done == "done", "the reader waited for the writer lock"
        with MmapCache(path, size=4096) as c:  # opening a clean table does not wait either
            assert c.get_stats()["hits"] >= 2, "the reader's counts were not kept"
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert _line(holder) == "released"
        _stop(holder, *([reader] if reader else []))


# ------------------------------------------------------------------ item 3
def test_dead_rebuilder_with_its_pid_reused_blocks_nothing(path: str) -> None:
    """A rebuilder is killed (SIGKILL) mid-copy, and a live process's pid is
    written where its pid was (pid reuse). Automatic compaction goes on, an
    ``atomic_rebuild`` returns, and the dead one's files are cleaned up. At
    main: compaction stopped and atomic_rebuild waited for ever."""
    with MmapCache(path, **BUSY) as c:
        for i in range(20):
            c.put(f"k{i}", b"%d|" % i + PAD)
    builder = _spawn(f"""
        import time
        from mmcache import MmapCache
        from mmcache._core import builders as _builders
        def stuck(self, slots):
            print("copying", flush=True)
            time.sleep(600)
        _builders.Builder.copy_all = _builders.HeapCopier.copy_all = stuck
        MmapCache({path!r}, **{BUSY!r}).atomic_rebuild()
    """)
    other = _spawn("import time; time.sleep(600)")
    try:
        assert _line(builder) == "copying"
        builder.send_signal(signal.SIGKILL)
        builder.wait(HANG)
        with MmapCache(path, **BUSY) as c:
            g = c._shared().gen
            nxt, pid, nonce, bgen = L.BUILD.unpack_from(g.idx, L.OFF_BUILD)
            assert pid == builder.pid and bgen > g.gen, "the killed rebuild should be registered"
            L.BUILD.pack_into(g.idx, L.OFF_BUILD, nxt, other.pid, nonce, bgen)  # its pid, reused
        worker = _spawn(f"""
            from mmcache import MmapCache
            c = MmapCache({path!r}, **{BUSY!r})
            gen0 = c.get_stats()["generation"]
            for i in range(2000):
                c.put(f"k{{i % 20}}", b"%d|" % i + b"." * 200)
            print(c.get_stats()["generation"] - gen0, flush=True)
            c.atomic_rebuild()
            print("rebuilt", flush=True)
        """)
        try:
            compactions = _line(worker)
            assert compactions is not None and int(compactions) > 0, "automatic compaction stopped"
            assert _line(worker) == "rebuilt", "atomic_rebuild waited for a dead rebuilder"
        finally:
            _stop(worker)
        with MmapCache(path, **BUSY) as c:
            assert sorted(c.list()) == sorted(f"k{i}" for i in range(20))
            assert c.verify() == []
        left = [n for n in os.listdir(os.path.dirname(path)) if ".rebuild." in n]
        assert left == [], f"the dead rebuilder's files were left: {left}"
    finally:
        _stop(builder, other)


def test_dead_stripe_owner_with_its_pid_reused_is_taken_over(path: str) -> None:
    """A process flushes its stats, is killed (SIGKILL), and every stripe's
    owner field then names a live process (pid reuse). The next process
    takes the dead one's stripe over, keeping its counts. At main: every
    stripe looked owned, so it shared one (approximate counts for ever)."""
    with MmapCache(path, size=4096) as c:
        c.put("k", b"v")
    first = _spawn(f"""
        import time
        from mmcache import MmapCache
        c = MmapCache({path!r}, size=4096)
        for _ in range(7):
            c.get("k")
        c._shared().flush_stats()
        print(c._shared().stripe, flush=True)
        time.sleep(600)
    """)
    other = _spawn("import time; time.sleep(600)")
    try:
        stripe = _line(first)
        assert stripe is not None and stripe.isdigit()
        first.send_signal(signal.SIGKILL)
        first.wait(HANG)
        lock = os.open(L.lock_name(path), os.O_RDWR)
        try:
            for i in range(L.STATS_STRIPES):
                at = L.OFF_STATS + i * L.STATS_STRIPE_BYTES + L.STATS_OWNER + 4
                os.pwrite(lock, L.U32.pack(other.pid), at)
        finally:
            os.close(lock)
        second = _spawn(f"""
            import os
            from mmcache import MmapCache
            from mmcache._core import layout as L
            c = MmapCache({path!r}, size=4096)
            for _ in range(5):
                c.get("k")
            s = c._shared()
            s.flush_stats()
            at = L.OFF_STATS + s.stripe * L.STATS_STRIPE_BYTES + L.STATS_OWNER + 4
            print(s.stripe, L.U32.unpack_from(s.ctl, at)[0] == os.getpid(), c.get_stats()["hits"], flush=True)
        """)
        try:
            assert _line(second) == f"{stripe} True 12", "the dead owner's stripe was not taken over"
        finally:
            _stop(second)
    finally:
        _stop(first, other)


def test_forked_child_does_not_keep_a_dead_parents_rebuild_alive(path: str) -> None:
    """A process forks while one of its threads is rebuilding, then is killed.
    The child shares its parent's open files, but must not go on holding the
    parent's rebuild lock: a rebuild elsewhere then goes ahead."""
    with MmapCache(path, **BUSY) as c:
        for i in range(20):
            c.put(f"k{i}", b"%d|" % i + PAD)
    parent = _spawn(f"""
        import os, threading, time
        from mmcache import MmapCache
        from mmcache._core import builders as _builders
        copying = threading.Event()
        def stuck(self, slots):
            copying.set()
            time.sleep(600)
        _builders.Builder.copy_all = _builders.HeapCopier.copy_all = stuck
        c = MmapCache({path!r}, **{BUSY!r})
        threading.Thread(target=c.atomic_rebuild, daemon=True).start()
        copying.wait()
        pid = os.fork()
        if pid == 0:
            time.sleep(600)
            os._exit(0)
        print(pid, flush=True)
        time.sleep(600)
    """)
    child = 0
    try:
        line = _line(parent)
        assert line is not None and line.isdigit()
        child = int(line)
        parent.send_signal(signal.SIGKILL)
        parent.wait(HANG)
        other = _spawn(f"""
            from mmcache import MmapCache
            MmapCache({path!r}, **{BUSY!r}).atomic_rebuild()
            print("rebuilt", flush=True)
        """)
        try:
            assert _line(other) == "rebuilt", "the forked child kept the dead parent's rebuild alive"
        finally:
            _stop(other)
    finally:
        if child:
            os.kill(child, signal.SIGKILL)
        _stop(parent)


def test_a_slow_reader_thread_never_moves_the_table_back(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process rebuilds; a reader thread's staleness check here opens
    the new generation and is slow to adopt it. Meanwhile this thread
    follows, compacts again and puts into the newest generation. The reader
    must not then make the older, retired generation current: the putting
    thread would read there and could miss its own acknowledged write (the
    mixed stress saw such a miss). Failed before the fix (generation went back)."""
    from mmcache._core import process

    with MmapCache(path, size=64, staleness_check_interval=3600) as c:
        c.put("k", b"v0")
        s = c._shared()
        code = f"from mmcache import MmapCache; MmapCache({path!r}, size=64).atomic_rebuild()"
        subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                       check=True, timeout=HANG)  # fmt: skip
        opened, go = threading.Event(), threading.Event()
        real_open = process.Generation.open

        def slow_open(*args: Any, **kwargs: Any) -> Any:
            g = real_open(*args, **kwargs)
            if threading.current_thread().name == "slow-reader":
                opened.set()
                go.wait(HANG)
            return g

        monkeypatch.setattr(process.Generation, "open", slow_open)
        reader = threading.Thread(target=s.refresh, name="slow-reader")
        reader.start()
        try:
            assert opened.wait(HANG)
            c.put("k", b"v1")  # follows the other process's rebuild (under the writer lock)
            c.atomic_rebuild()
            c.put("k", b"v2")
            newest = s.gen.gen
        finally:
            go.set()
            reader.join(HANG)
        assert s.gen.gen >= newest, f"a reader moved the table back to generation {s.gen.gen} < {newest}"
        assert c.get("k") == b"v2"
