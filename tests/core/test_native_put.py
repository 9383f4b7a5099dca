"""The compiled put, add and delete (mmcache/_native/_write.c, _delete.c) against the pure path.

What it answers and what it hands to the pure path (with the pure path's
errors); its copy of capacity.rebuild_wanted; threads putting while another
thread or another process holds the writer lock (no deadlock, no frozen
thread, nothing lost); a native writer killed with SIGKILL mid-stream
(the table verifies, no acknowledged write lost); damaged header and slot
numbers in a real file (falls back, never crashes: `make test-asan` runs
this file). The differential test in test_native.py drives native puts
against a pure-Python process on one table.
"""

from __future__ import annotations

import mmap
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from support.helpers import ROOT, run_py

from mmcache import ClosedCacheError, MmapCache, _native
from mmcache._core import capacity, layout

needs_native = pytest.mark.skipif(not _native.AVAILABLE, reason="the compiled extension is not in use")
pytestmark = needs_native


def _counts(c: MmapCache) -> tuple[int, int]:
    counts: tuple[int, int] = c.put.counts()  # type: ignore[attr-defined]
    return counts


def test_common_puts_are_native_and_the_rest_goes_to_the_pure_path(path: str) -> None:
    c = MmapCache(path, size=512, key_size=32)
    assert type(c.put).__name__ == "Putter"
    c.put("warm", b"up")  # the first put of a process flushes its stats: the pure path's
    a0, p0 = _counts(c)
    c.put("k", b"v1")  # a new key with room
    c.put("k", bytearray(b"v2"), 10.0, flags=7)  # an overwrite, bytearray, ttl, flags
    c.put(b"k", memoryview(b"xx-bytes-xx")[3:-3])  # a bytes key is another key; a sliced view
    c.put("ключ", b"\0" * 3000, expire=5)  # non-ASCII, int ttl by keyword
    a1, p1 = _counts(c)
    assert (a1 - a0, p1 - p0) == (4, 0)
    assert c.get("k", with_flags=True) == (b"v2", 7)
    assert c.get(b"k") == b"bytes" and c.get("ключ") == b"\0" * 3000
    assert c.get_entry("k").expire_ns > time.time_ns()  # type: ignore[union-attr]
    # Handed to the pure path, which answers or raises as it always does.
    c.put("L" * 40, b"hashed")  # longer than key_size
    c.put("sur\udc80", b"surrogate")
    c.put("at", b"abs", expire_at_ns=time.time_ns() + 10**10)
    c.put("gone", b"x", -1)  # expired at once: a delete
    c.put("k", b"v3", None, flags=True)  # a bool flag (an int subclass)
    with pytest.raises(ValueError):
        c.put("", b"empty key")
    with pytest.raises(ValueError):
        c.put("k", b"v", flags=1 << 16)
    with pytest.raises(TypeError):
        c.put("k", "not bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        c.put("k", b"v", float("nan"))
    with pytest.raises(TypeError):
        c.put("k", b"v", nope=1)  # type: ignore[call-arg]
    a2, p2 = _counts(c)
    assert a2 == a1 and p2 - p1 == 10
    assert c.get("L" * 40) == b"hashed" and c.get("sur\udc80") == b"surrogate" and c.get("at") == b"abs"
    assert c.get("gone") is None and c.get("k", with_flags=True) == (b"v3", 1)
    assert c.verify() == []
    c.close()
    with pytest.raises(ClosedCacheError):
        c.put("k", b"v")  # (the pure path's error)
    with pytest.raises(ClosedCacheError):
        c.add("k2", b"v")
    with pytest.raises(ClosedCacheError):
        c.delete("k")


def test_deletes_are_native_and_keep_the_roster_whole(path: str) -> None:
    c = MmapCache(path, size=1024, key_size=32)
    assert type(c.delete).__name__ == "Putter"
    keys = [f"k{i}" for i in range(300)] + [b"b%d" % i for i in range(100)]
    for k in keys:
        c.put(k, b"v" * 50)
    c.put("soon", b"gone", 0.05)
    c.put("L" * 40, b"hashed")
    time.sleep(0.1)
    a0, p0 = c.delete.counts()  # type: ignore[attr-defined]
    assert c.delete("soon") is False  # expired: removed, but not live
    assert c.delete("absent") is False and c.delete(b"k1") is False  # (a bytes key is another key)
    rng = random.Random(4)
    rng.shuffle(keys)
    for k in keys[:250]:  # from anywhere in the roster: the last entry moves into the hole
        assert c.delete(k) is True
        assert c.get(k) is None
    a1, p1 = c.delete.counts()  # type: ignore[attr-defined]
    assert a1 - a0 >= 200 and p1 - p0 <= 10, (a1 - a0, p1 - p0)
    assert c.delete("L" * 40) is True and c.delete.counts()[1] == p1 + 1  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        c.delete("")
    assert len(c) == 150 and c.verify() == []
    assert all(c.get(k) == b"v" * 50 for k in keys[250:])
    assert c.get_stats()["deletes"] >= 252
    c.close()


def test_add_is_native_and_stores_only_where_no_live_entry_is(path: str) -> None:
    c = MmapCache(path, size=512, key_size=32)
    assert type(c.add).__name__ == "Putter"
    c.put("warm", b"up")
    c.put("t", b"old", 0.05)
    time.sleep(0.1)
    a0, p0 = c.add.counts()  # type: ignore[attr-defined]
    assert c.add("k", b"1") is True
    assert c.add("k", b"2") is False and c.get("k") == b"1"  # live: left as it is
    assert c.add("t", b"new", 10.0, flags=3) is True  # expired: replaced
    assert c.get("t", with_flags=True) == (b"new", 3)
    assert c.delete("k") is True and c.add("k", bytearray(b"3")) is True and c.get("k") == b"3"
    a1, p1 = c.add.counts()  # type: ignore[attr-defined]
    assert (a1 - a0, p1 - p0) == (4, 0)
    assert c.add("L" * 40, b"h") is True and c.add("L" * 40, b"h2") is False  # hashed: the pure path's
    assert c.add("x", b"v", -1) is True and c.get("x") is None  # (expired at once: not stored)
    with pytest.raises(ValueError):
        c.add("", b"v")
    assert c.add.counts() == (a1, p1 + 4)  # type: ignore[attr-defined]
    assert c.verify() == []
    c.close()


def test_adds_of_native_threads_and_a_pure_process_have_one_winner_per_key(path: str) -> None:
    keys = [f"k{i}" for i in range(300)]
    c = MmapCache(path, size=2048)
    c.put("warm", b"up")
    code = f"""
from mmcache import MmapCache, _native
assert not _native.AVAILABLE
c = MmapCache({path!r}, size=2048)
won = [k for k in {keys!r} if c.add(k, b"pure")]
print(len(won), *won)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MMCACHE_PURE_PYTHON": "1"}
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    won: list[list[str]] = [[], []]

    def adder(t: int) -> None:
        for k in keys:
            if c.add(k, b"native%d" % t):
                won[t].append(k)

    threads = [threading.Thread(target=adder, args=(t,)) for t in range(2)]
    for th in threads:
        th.start()
    out, _ = child.communicate(timeout=120)
    for th in threads:
        th.join(timeout=120)
    n, *theirs = out.split()
    assert int(n) == len(theirs)
    assert sorted(theirs + won[0] + won[1]) == sorted(keys)  # each key added exactly once
    for k in keys:
        want = b"pure" if k in theirs else b"native0" if k in won[0] else b"native1"
        assert c.get(k) == want, k
    assert c.add.counts()[0] > 100  # type: ignore[attr-defined]
    c.close()


def test_handles_with_a_secret_or_a_byte_cap_put_pure_python(path: str) -> None:
    with MmapCache(path, size=512, secret=b"s" * 32) as c:
        assert type(c.put).__name__ != "Putter"
        c.put("k", b"v")
        assert c.get("k") == b"v"
    with MmapCache(path + "2", size=512, max_bytes=10_000) as c:
        c.put("warm", b"up")
        c.put("k", b"v")
        assert _counts(c)[0] == 0 and c.get("k") == b"v"


def test_a_full_table_and_a_new_segment_are_the_pure_paths(path: str) -> None:
    # size 64: 31 live entries at most, then LRU eviction (pure); a 64 KiB
    # heap segment rolls over to a new one (pure), then native puts go on there.
    c = MmapCache(path, size=64, max_segment_bytes=1 << 16)
    for i in range(300):  # overwrites of 20 keys: five segments' worth
        c.put(f"k{i % 20}", b"%d|" % i + b"x" * 1000)
    answered, passed = _counts(c)
    assert answered > 250 and 4 <= passed < 20, (answered, passed)
    assert c.get_stats()["heap_segments"] >= 5
    for i in range(100, 200):  # new keys past the 31 a table of 64 slots holds: evictions
        c.put(f"k{i}", b"%d|" % i)
    assert _counts(c)[1] - passed > 60
    assert len(c) <= 31 and c.get("k199") == b"199|" and c.get("k198") == b"198|"
    assert c.verify() == []
    c.close()


def test_rebuild_wanted_matches_capacity() -> None:
    rng = random.Random(3)
    for _ in range(20_000):
        nslots = rng.choice([3, 63, 4095, rng.randrange(3, 10**7)])
        occ = rng.randrange(nslots + 1)
        dele = rng.choice([0, rng.randrange(nslots - occ + 1)])
        live, dead = rng.randrange(10**9), rng.choice([0, rng.randrange(10**9)])
        ib = layout.index_bytes(nslots + 1, 96)
        cap = capacity.live_cap_for(type("G", (), {"params": type("P", (), {"size": nslots + 1})})(), None)
        thr = rng.choice([0.5, 1, rng.random() or 1.0])
        mb = rng.choice([0, 1 << 20, rng.randrange(10**9)])
        ms = rng.choice([None, nslots + 1, 2 * nslots, 10**6])
        args = (occ, dele, live, dead, nslots, ib, nslots + 1, cap, thr, mb, ms)
        assert _native_rebuild_wanted(*args) == capacity.rebuild_wanted(*args), args


def _native_rebuild_wanted(*args: Any) -> tuple[bool, int | None]:
    from mmcache._native import _speedups

    return _speedups.rebuild_wanted(*args)


# ---------------------------------------------------------------- the lock
def test_threads_put_while_another_thread_holds_the_lock(path: str) -> None:
    c = MmapCache(path, size=4096)
    c.put("warm", b"up")
    holding = threading.Event()
    errors: list[BaseException] = []

    def holder() -> None:
        try:
            with c.transaction():
                holding.set()
                for i in range(100):
                    c.put(f"h{i}", b"h%d" % i)  # re-entrant: native inside the transaction
                    time.sleep(0.0005)  # lets the GIL go: the other threads must not hold it
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def worker(t: int) -> None:
        holding.wait()
        try:
            for i in range(400):
                c.put(f"w{t}-{i}", b"%d-%d" % (t, i))
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=holder)]
    threads += [threading.Thread(target=worker, args=(t,)) for t in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)  # a hang guard: a frozen or deadlocked put never ends
    assert not any(th.is_alive() for th in threads), "deadlock"
    assert not errors, errors
    assert all(c.get(f"h{i}") == b"h%d" % i for i in range(100))
    assert all(c.get(f"w{t}-{i}") == b"%d-%d" % (t, i) for t in range(3) for i in range(400))
    assert _counts(c)[0] > 100  # most of them native
    assert c.verify() == []
    c.close()


def test_a_put_waiting_for_another_process_does_not_freeze_other_threads(path: str) -> None:
    c = MmapCache(path, size=4096)
    c.put("warm", b"up")
    go = path + ".go"
    code = f"""
import os, sys, time
from mmcache import MmapCache
c = MmapCache({path!r}, size=4096)
with c.transaction():
    c.put("child", b"holds")
    print("held", flush=True)
    while not os.path.exists({go!r}):  # held until this process's main thread says so
        time.sleep(0.005)
c.close()
"""
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        done = threading.Event()

        def putter() -> None:
            c.put("mine", b"after the child")  # the flock is held elsewhere: waits
            done.set()

        t = threading.Thread(target=putter)
        t.start()
        # This thread runs on while the put waits (a put that kept the GIL
        # while it waited would hang here: the child would never be told).
        for _ in range(200):
            assert c.get("warm") == b"up"
            time.sleep(0.001)
        assert not done.is_set()  # still waiting for the child's lock
        open(go, "w").close()
        t.join(timeout=60)
        assert done.is_set()
        assert c.get("mine") == b"after the child" and c.get("child") == b"holds"
    finally:
        if not os.path.exists(go):
            open(go, "w").close()
        child.wait(timeout=60)
        c.close()


# ---------------------------------------------------------------- kill -9
def _value(key: str, seq: int) -> bytes:
    return f"{key}|{seq}|".encode() + b"x" * (seq % 700)


def _writer(path: str, seed: int, w: int) -> None:
    c = MmapCache(path, size=2048)
    assert type(c.put).__name__ == "Putter"
    rng = random.Random(seed)
    seq = 0
    while True:
        seq += 1
        key = f"k{rng.randrange(400)}"
        delete = rng.random() < 0.1
        os.write(w, f"I {seq} {key} {int(delete)}\n".encode())
        if delete:
            c.delete(key)
        else:
            c.put(key, _value(key, seq))
        os.write(w, f"A {seq} {c.put.counts()[0]}\n".encode())  # type: ignore[attr-defined]


def _drain(fd: int, into: list[bytes]) -> None:
    while chunk := os.read(fd, 1 << 16):
        into.append(chunk)


def test_a_native_writer_killed_mid_stream_loses_no_acknowledged_write(tmp_path: Any) -> None:
    path = str(tmp_path / "t")
    rng = random.Random(9)
    model: dict[str, bytes | None] = {}
    answered = 0
    for trial in range(25):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(r)
            try:
                _writer(path, trial, w)
            finally:
                os._exit(0)
        os.close(w)
        chunks: list[bytes] = []
        reader = threading.Thread(target=_drain, args=(r, chunks))
        reader.start()
        time.sleep(rng.uniform(0.02, 0.25))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        reader.join(timeout=60)
        os.close(r)
        acked, inflight = dict(model), None
        for line in b"".join(chunks).decode().splitlines():
            f = line.split()
            if f[0] == "I" and len(f) == 4:
                inflight = (f[2], None if f[3] == "1" else _value(f[2], int(f[1])))
            elif f[0] == "A" and len(f) == 3 and inflight is not None:
                acked[inflight[0]] = inflight[1]
                inflight = None
                answered = max(answered, int(f[2]))  # puts the child's compiled put answered
        c = MmapCache(path, size=2048)  # heals what the killed writer left dirty
        assert c.verify() == [], trial
        for k in {*acked, *(() if inflight is None else (inflight[0],))}:
            got = c.get(k)
            ok = [acked.get(k)] + ([inflight[1]] if inflight is not None and inflight[0] == k else [])
            assert got in ok, (trial, k, got[:20] if got else got, [o[:20] if o else o for o in ok])
        if inflight is not None:
            acked[inflight[0]] = c.get(inflight[0])
        model = acked
        c.put("after", b"ok")
        assert c.get("after") == b"ok"
        c.delete("after")
        c.close()
    assert answered > 100


# ---------------------------------------------------------- damaged files
HOT_FIELDS = [  # (offset, struct format) of the header numbers a put reads
    (48, "<Q"), (56, "<Q"), (64, "<Q"), (72, "<I"), (76, "<I"), (80, "<Q"), (88, "<Q"), (96, "<Q"),
    (112, "<Q"), (12, "<B"), (13, "<B"),
]  # fmt: skip


def test_damaged_numbers_in_the_files_never_crash_the_native_put(path: str) -> None:
    # Another process (here a second map of the index) damages one of the
    # header's numbers or a slot's fields; the next put, add or delete, native
    # unless it falls back, must do its work or raise a clear mmcache error, and
    # never touch memory outside the maps (make test-asan runs this file;
    # with the tail's bounds checks taken out of _write.c it crashes).
    # Then a repair, so that every step starts from a sound table.
    from mmcache.errors import MmcacheError

    rng = random.Random(11)
    c = MmapCache(path, size=256, key_size=32, max_segment_bytes=1 << 16)
    keys = [f"k{i}" for i in range(60)]
    for k in keys:
        c.put(k, k.encode() * 3)
    ss, ks = 96, 32
    answered = _counts(c)[0] + c.delete.counts()[0]  # type: ignore[attr-defined]
    for step in range(600):
        fd = os.open(path, os.O_RDWR)  # (the file at the path: a repair may have replaced it)
        idx = mmap.mmap(fd, 0)
        os.close(fd)
        try:
            if rng.random() < 0.6:
                at, fmt = rng.choice(HOT_FIELDS)
                v = rng.choice([0, 1, 2**8 - 1, 2**31, 2**32 - 1, 2**62, 2**64 - 1, rng.getrandbits(64)])
                if at == 72:  # heap_seg: a small wrong one makes the pure put raise FileNotFoundError
                    v = rng.choice([2**20, 2**32 - 1])  # (writer._publish -> heap._grow; not this file's)
                struct.pack_into(fmt, idx, at, v & ((1 << (8 * struct.calcsize(fmt))) - 1))
            else:
                o = layout.HEADER_BYTES + rng.randrange(255) * ss
                at = o + rng.choice([ks, ks + 2, ks + 4, ks + 8, ks + 12, ks + 24, rng.randrange(ks + 32)])
                struct.pack_into("<I", idx, at, rng.choice([0, 2**31, 2**32 - 1, rng.getrandbits(32)]))
        finally:
            idx.close()
        k = rng.choice(keys)
        value = b"%s|%d" % (k.encode(), step)
        op = rng.random()
        try:
            if op < 0.3:
                c.delete(k)
            elif op < 0.45:
                c.add(k, value)
            else:
                c.put(k, value)
        except MmcacheError:
            pass
        else:
            got = c.get(k)
            assert got is None if op < 0.3 else op < 0.45 or got in (value, None), (step, got)
        c.repair()
        if step % 50 == 49:
            assert c.verify() == []
    # the damaged table met the native put and delete, not only the pure ones
    assert _counts(c)[0] + c.delete.counts()[0] - answered > 100  # type: ignore[attr-defined]
    c.close()


def test_the_extension_runs_pure_when_forced() -> None:
    out = run_py(
        """
        import os, tempfile
        from mmcache import MmapCache
        with tempfile.TemporaryDirectory() as d, MmapCache(os.path.join(d, "t"), size=64) as c:
            print(type(c.put).__name__)
        """,
        env={"MMCACHE_PURE_PYTHON": "1"},
    )
    assert out.strip() == "method"


def test_compiled_writes_on_randomly_damaged_tables_answer_or_hand_on(tmp_path: Any) -> None:
    # A fixed-seed sweep of what the write fuzzer (tests/core/fuzz_native_write.py)
    # explores, so that make test and the ASan run cover it: a put, add or
    # delete on a table whose mapped header, slots, heap and roster are
    # overwritten at random answers (None / a bool) or hands on, never crashes.
    from _native_write_craft import PURE, DamagedTable, RandomProvider

    table = DamagedTable(str(tmp_path))
    provider = RandomProvider(random.Random(11))
    answers = [table.one(provider) for _ in range(6_000)]
    table.close()
    handed_on = sum(r is PURE for r in answers)
    assert 0 < handed_on < len(answers) // 2, handed_on  # most answered by the C, some handed on
    with MmapCache.open(str(tmp_path / "t")) as c:  # the maps put back: the table as it was
        assert c.get("k1") == b"v1" * 7 and c.get(b"k2") == b"bytes key" and c.get("k5") is None
        assert c.verify() == []
