"""The compiled get's per-table state (``_native.Table``, one per SharedTable):
bound where the generation changes, pinning the maps it reads, counting in C
into exact stats, detached at a handle's close, inherited by a fork child;
and gets from threads racing rebinds (rebuilds here and in another process,
heap segments added and remapped). The handle-level tests run both ways
(``make test-pure``); the ones about the Table itself need the extension.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mmcache import ClosedCacheError, MmapCache, _native

ROOT = Path(__file__).resolve().parents[2]
needs_native = pytest.mark.skipif(not _native.AVAILABLE, reason="the compiled extension is not in use")


def test_a_closed_handles_get_raises_while_another_handle_keeps_the_table(path: str) -> None:
    a = MmapCache(path, size=64)
    b = MmapCache(path, size=64)  # the same SharedTable (and Table) stays open through b
    a.put("k", b"v" * 5000)
    get, view = a.get, a._get_view
    assert get("k") == b"v" * 5000 and bytes(view("k")) == b"v" * 5000
    a.close()
    for f in (get, view, a.get):
        with pytest.raises(ClosedCacheError):
            f("k")
    assert b.get("k") == b"v" * 5000
    b.close()
    with pytest.raises(ClosedCacheError):
        b.get("k")


def test_stats_count_every_get_exactly_and_keep_them_at_close(path: str) -> None:
    c = MmapCache(path, size=256)
    for i in range(10):
        c.put(f"k{i}", b"v")
    for i in range(10):
        assert c.get(f"k{i}") == b"v"
        assert c._get_view(f"k{i}") == b"v"
    for i in range(7):
        assert c.get(f"absent{i}") is None
    st = c.get_stats()
    assert (st["hits"], st["misses"]) == (20, 7)
    c.close()  # the counts go to this process's stripe now, not lost with the Table
    c = MmapCache(path, size=256)
    st = c.get_stats()
    assert (st["hits"], st["misses"]) == (20, 7)
    c.close()


@needs_native
def test_a_memo_false_handle_reads_through_the_compiled_get_and_gives_bytes(path: str) -> None:
    from mmcache.table import VIEW_MIN

    big = os.urandom(VIEW_MIN + 10)
    with MmapCache(path, size=256, memo=False) as lean, MmapCache(path, size=256) as c:
        assert type(lean.get).__name__ == "Getter" and type(lean._get_view).__name__ == "Getter"
        lean.put("big", big)
        for i in range(20):
            lean.put(f"k{i}", b"v%d" % i)
        for _ in range(2):
            assert [lean.get(f"k{i}") for i in range(20)] == [b"v%d" % i for i in range(20)]
            assert lean.get("absent") is None and lean.get("absent", 5) == 5
            got = lean._get_view("big")
            assert type(got) is bytes and got == big  # never a view of the map
        assert lean.get_stats()["hits"] >= 42
        assert isinstance(c._get_view("big"), memoryview)  # the memo-using handle's read
        assert len(c._s.memo) == 0  # type: ignore[union-attr]  # nothing memoised by either
        lean.put("k3", b"new")
        assert lean.get("k3") == b"new" and c.get("k3") == b"new"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_fork_child_reads_through_the_inherited_state_and_counts_only_its_own(path: str) -> None:
    c = MmapCache(path, size=256)
    c.put("k", b"v")
    for _ in range(7):
        assert c.get("k") == b"v"  # counted, not yet flushed: the parent's
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's verdict is its exit code
        code = 1
        try:
            ok = [c.get("k") for _ in range(2)] == [b"v", b"v"] and c.get("x") is None
            st = c.get_stats()
            c.put("from-child", b"c")
            ok = ok and (st["hits"], st["misses"]) == (2, 1) and c.get("from-child") == b"c"
            c.close()
            code = 0 if ok else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert c.get("from-child") == b"c"
    st = c.get_stats()
    # ours (7, and 1 just above), the child's 3 hits (2 + its check) and its miss
    assert (st["hits"], st["misses"]) == (7 + 1 + 3, 1)
    c.close()


@needs_native
def test_the_table_pins_the_maps_it_reads_and_lets_go_at_a_switch_and_at_close(path: str) -> None:
    c = MmapCache(path, size=256)
    for i in range(50):
        c.put(f"k{i}", b"%d" % i * 40)
    s = c._s
    assert s is not None and s.native is not None
    n, g = s.native, s.gen
    assert n.bound and n.next_check == s.next_check
    assert c.get("k1") == b"1" * 40
    with pytest.raises(BufferError):
        g.idx.close()  # exported to the compiled get: it cannot go while it may be read
    with pytest.raises(BufferError):
        g.heap.views[0].release()  # (once a get has read the segment)
    c.atomic_rebuild()  # a generation switch: the Table rebinds
    assert s.gen is not g and n.bound
    g.idx.close()  # no export of the old generation's maps is left
    assert c.get("k2") == b"2" * 40
    s.refresh()
    assert n.next_check == s.next_check  # the C copy of the next staleness check follows
    c.close()
    assert not n.bound
    gen = s.gen
    gen.idx.close()  # nothing holds the maps once the last handle is closed


@needs_native
def test_a_table_that_does_not_fit_its_maps_answers_nothing(path: str) -> None:
    assert _native.Table is not None and _native.Getter is not None
    t = _native.Table()
    t.bind(bytearray(4096 + 10 * 48 - 1), 10, 48, 16, 8, None, [])  # one byte short of its slots
    assert not t.bound
    t.bind(bytearray(4096 + 10 * 48), 10, 48, 16, 8, None, [])
    assert t.bound
    with pytest.raises(TypeError):
        t.bind(bytearray(4096 + 10 * 48), 10, 48, 16, 8, None, ())  # views must be the heap's list
    t.unbind()
    assert not t.bound
    with MmapCache(path, size=64, key_size=16) as c:
        c.put("k", b"v")
        get = _native.Getter(c, _native.Table())  # an unbound Table: the pure path answers
        assert get("k") == b"v" and get("x", 5) == 5


_CHURN = """
import sys, time
from mmcache import MmapCache
c = MmapCache(sys.argv[1], size=512, key_size=32, max_segment_bytes=1 << 16)
end = time.monotonic() + float(sys.argv[2])
i = 0
while time.monotonic() < end:
    i += 1
    k = f"k{i % 60}"
    c.put(k, (k + "|").encode() + b"p" * (i % 3000))
    if i % 150 == 0:
        c.atomic_rebuild()
print(i)
"""


def test_gets_from_threads_race_rebinds_here_and_in_another_process(path: str) -> None:
    # Readers in threads (get, get with flags, _get_view) while this process
    # rebuilds (a generation switch: the Table rebinds) and rolls over small
    # heap segments (new views, remapped views), and another process does
    # the same: every answer is a value written for that key, or a miss.
    c = MmapCache(path, size=512, key_size=32, max_segment_bytes=1 << 16)
    keys = [f"k{i}" for i in range(60)]
    for k in keys:
        c.put(k, (k + "|").encode())
    other = subprocess.Popen(
        [sys.executable, "-c", _CHURN, path, "3"], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    stop = threading.Event()
    errors: list[str] = []
    reads = [0]

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            k = rng.choice(keys)
            way = rng.randrange(3)
            try:
                got = c.get(k) if way == 0 else c.get(k, with_flags=True) if way == 1 else c._get_view(k)
            except Exception as e:  # noqa: BLE001 - any exception is a finding
                import traceback

                errors.append(f"{k}: {e!r} {traceback.format_exc()}")
                return
            if isinstance(got, tuple):
                got = got[0]
            if got is not None and not bytes(got).startswith((k + "|").encode()):
                errors.append(f"{k}: {bytes(got)[:40]!r}")
            reads[0] += 1

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    try:
        rng = random.Random(7)
        end = time.monotonic() + 3
        i = 0
        while time.monotonic() < end:
            i += 1
            k = rng.choice(keys)
            c.put(k, (k + "|").encode() + b"m" * rng.randrange(6000))
            if i % 100 == 0:
                c.atomic_rebuild()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        out, _ = other.communicate(timeout=120)
    assert other.returncode == 0 and int(out) > 0
    assert not errors, errors[:5]
    assert reads[0] > 100
    for k in keys:
        got = c.get(k)
        assert got is not None and got.startswith((k + "|").encode())
    c.close()


def test_a_replaced_segment_view_is_let_go_only_at_the_next_bind(path: str) -> None:
    """A get that meets a segment the heap remapped (it grew) swaps its pin to
    the new view but keeps the old one alive until the next bind: dropping its
    last reference there would unmap with the GIL released (mmap's dealloc),
    and another thread could rebind the Table in the middle of that get (a
    segfault seen under load before this rule)."""
    import gc
    import weakref

    c = MmapCache(path, size=512, key_size=32, max_segment_bytes=1 << 24)
    c.put("a", b"x" * 100)
    assert c.get("a") == b"x" * 100  # the Table pins segment 0's view
    g = c._s.gen  # type: ignore[union-attr]
    old = weakref.ref(g.heap.maps[0])
    i = 0
    while old() is g.heap.maps[0]:  # grow segment 0 until the heap remaps it
        c.put(f"k{i}", b"y" * 4000)
        i += 1
        assert i < 1000
    gc.collect()
    assert old() is not None  # the Table's pin holds it
    assert c.get("a") == b"x" * 100  # the get swaps to the new view ...
    gc.collect()
    assert old() is not None  # ... and retires the old one, not freed mid-get
    c.atomic_rebuild()  # a new generation: the next bind lets it go
    assert c.get("a") == b"x" * 100
    gc.collect()
    assert old() is None
    c.close()
