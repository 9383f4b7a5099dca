"""MmapCache: the single-process contract (round trips, keys, errors, files)."""

from __future__ import annotations

import os
import time

import pytest

from mmcache import (
    CacheFullError,
    ClosedCacheError,
    CorruptCacheError,
    IncompatibleCacheError,
    MmapCache,
    UnsafePathError,
    ValueTooLargeError,
    _native,
)

# The memo belongs to the pure-Python get (the compiled one needs none):
# these run in `make test-pure`.
pure_get = pytest.mark.skipif(_native.AVAILABLE, reason="a pure-Python get feature (make test-pure)")


def test_round_trip_overwrite_delete(cache: MmapCache) -> None:
    assert cache.get("a") is None
    assert cache.get("a", b"dflt") == b"dflt"
    cache.put("a", b"1")
    assert cache.get("a") == b"1"
    cache.put("a", b"22")
    assert cache.get("a") == b"22"
    assert cache.delete("a") is True
    assert cache.delete("a") is False
    assert cache.get("a") is None
    assert len(cache) == 0


def test_value_types(cache: MmapCache) -> None:
    cache.put("ba", bytearray(b"xy"))
    cache.put("mv", memoryview(b"abcdef")[1:4])
    cache.put("empty", b"")
    assert cache.get("ba") == b"xy"
    assert cache.get("mv") == b"bcd"
    assert cache.get("empty") == b""
    assert type(cache.get("ba")) is bytes
    for bad in ("text", 12, None, [1]):
        with pytest.raises(TypeError):
            cache.put("k", bad)  # type: ignore[arg-type]


def test_str_and_bytes_keys_are_distinct_like_a_dict(cache: MmapCache) -> None:
    cache.put("k", b"str")
    cache.put(b"k", b"bytes")
    assert cache.get("k") == b"str"
    assert cache.get(b"k") == b"bytes"
    assert sorted(cache.list(), key=repr) == sorted(["k", b"k"], key=repr)
    cache.put("é∂", b"unicode")
    assert cache.get("é∂") == b"unicode"
    assert "é∂" in cache.list()


def test_bad_keys(cache: MmapCache) -> None:
    for bad in ("", b""):
        with pytest.raises(ValueError):
            cache.put(bad, b"v")
        with pytest.raises(ValueError):
            cache.get(bad)
    for bad in (1, None, 2.5, ("a",)):
        with pytest.raises(TypeError):
            cache.put(bad, b"v")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            cache.get(bad)  # type: ignore[arg-type]


def test_long_keys_sharing_a_prefix_never_collide(path: str) -> None:
    with MmapCache(path, size=1024, key_size=64) as c:
        prefix = "p" * 64
        keys = [prefix + s for s in ("a", "b", "", "ab", "x" * 500)] + [prefix[:-1]]
        for i, k in enumerate(keys):
            c.put(k, str(i).encode())
        for i, k in enumerate(keys):
            assert c.get(k) == str(i).encode()
        assert c.get(prefix + "c") is None
        assert sorted(c.list()) == sorted(keys)
        assert c.delete(prefix + "a")
        assert c.get(prefix + "b") == b"1"
        # a bytes key that equals a long key's 16-byte digest is still its own key
        digest = c._prep(prefix + "b")[2][:16]
        c.put(digest, b"digest")
        assert c.get(prefix + "b") == b"1" and c.get(digest) == b"digest"


def test_persistence_across_reopen(path: str) -> None:
    with MmapCache(path, size=1024) as c:
        for i in range(300):
            c.put(f"k{i}", f"v{i}".encode())
        c.delete("k7")
    with MmapCache(path, size=1024) as c:
        assert c.get("k8") == b"v8" and c.get("k7") is None
        assert len(c) == 299
        assert c.verify() == []


def test_get_mtime_contains(cache: MmapCache) -> None:
    before = time.time_ns()
    cache.put("a", b"1")
    m = cache.get_mtime("a")
    assert m is not None and before <= m <= time.time_ns()
    assert cache.get_mtime("b") is None
    assert cache.contains("a") and "a" in cache and "b" not in cache
    entry = cache.get_entry("a")
    assert entry is not None and entry.value == b"1" and entry.expire_ns is None


def test_list_items_equal_the_puts(cache: MmapCache) -> None:
    model = {f"key{i}": os.urandom(i % 50) for i in range(1000)}
    for k, v in model.items():
        cache.put(k, v)
    for k in list(model)[::3]:
        cache.delete(k)
        del model[k]
    assert dict(cache.list_items()) == model
    assert sorted(cache.list()) == sorted(model)


def test_stats_counters(cache: MmapCache) -> None:
    for i in range(10):
        cache.put(f"k{i}", b"v" * 10)
    cache.delete("k0")
    cache.get("k1")
    cache.get("missing")
    st = cache.get_stats()
    assert st["occupied_count"] == 9 and st["deleted_count"] == 1
    assert st["high_water_mark"] >= 1
    assert st["size"] == 4096 and st["heap_segments"] == 1
    assert st["heap_live_bytes"] == 9 * 48 and st["heap_dead_bytes"] == 48
    assert st["hits"] == 1 and st["misses"] == 1 and st["sets"] == 10 and st["deletes"] == 1


def test_closed_handle_raises(path: str) -> None:
    c = MmapCache(path, size=64)
    c.put("a", b"1")
    c.close()
    c.close()  # idempotent
    for op in (lambda: c.get("a"), lambda: c.put("a", b"2"), lambda: c.delete("a"), c.list):
        with pytest.raises(ClosedCacheError):
            op()


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"size": 1}, ValueError),
        ({"size": 0}, ValueError),
        ({"size": "10"}, TypeError),
        ({"key_size": 80}, ValueError),  # 80 + 32 > 96
        ({"key_size": 8}, ValueError),
        ({"slot_size": 40, "key_size": 16}, ValueError),
        ({"max_segment_bytes": 10}, ValueError),
        ({"eviction": "random"}, ValueError),
        ({"max_entries": 0}, ValueError),
        ({"size": 100, "max_size": 50}, ValueError),
    ],
)
def test_bad_arguments_touch_no_file(tmp_path, kwargs, exc) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(exc):
        MmapCache(str(tmp_path / "t"), **kwargs)
    assert os.listdir(tmp_path) == []


def test_missing_directory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FileNotFoundError):
        MmapCache(str(tmp_path / "nope" / "t"), size=64)
    assert os.listdir(tmp_path) == []


def test_mismatched_parameters_and_foreign_files(path: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with MmapCache(path, size=128) as c:
        c.put("a", b"1")
    with pytest.raises(IncompatibleCacheError, match="size=128"):
        MmapCache(path, size=256)
    with pytest.raises(IncompatibleCacheError, match="key_size"):
        MmapCache(path, size=128, key_size=32)
    with MmapCache.open(path) as c:  # adopts the stored parameters
        assert c.get("a") == b"1"
    foreign = tmp_path / "foreign"
    foreign.write_bytes(b"SQLite format 3\x00" + b"\x00" * 8000)
    with pytest.raises(CorruptCacheError, match="not an mmcache index"):
        MmapCache(str(foreign), size=128)
    assert foreign.read_bytes().startswith(b"SQLite")


def test_symlinked_path_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    real = tmp_path / "real"
    with MmapCache(str(real), size=64) as c:
        c.put("a", b"1")
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(UnsafePathError):
        MmapCache(str(link), size=64)
    with MmapCache(str(link), size=64, allow_symlink=True) as c:
        assert c.get("a") == b"1"


def test_files_are_owner_only(path: str) -> None:
    with MmapCache(path, size=64) as c:
        c.put("a", b"1")
    d = os.path.dirname(path)
    for name in os.listdir(d):
        assert os.stat(os.path.join(d, name)).st_mode & 0o077 == 0, name


def test_full_table_raises_and_keeps_everything(path: str) -> None:
    with MmapCache(path, size=64, eviction="none") as c:
        cap = c.get_stats()["capacity"]
        for i in range(cap):
            c.put(f"k{i}", b"v%d" % i)
        with pytest.raises(CacheFullError):
            c.put("one-more", b"x")
        c.put("k0", b"overwrite is fine")
        assert all(c.get(f"k{i}") == b"v%d" % i for i in range(1, cap))
        assert c.get("k0") == b"overwrite is fine" and len(c) == cap
        assert c.verify() == []


def test_tombstones_are_purged_by_rebuild_on_put(path: str) -> None:
    with MmapCache(path, size=64, eviction="none") as c:
        for round_ in range(20):
            for i in range(30):
                c.put(f"r{round_}k{i}", b"v")
            for i in range(30):
                assert c.delete(f"r{round_}k{i}")
        assert len(c) == 0
        assert c.get_stats()["rebuilds"] > 0
        assert c.verify() == []


def test_growth_up_to_max_size(path: str) -> None:
    with MmapCache(path, size=64, max_size=1024, eviction="none") as c:
        for i in range(500):
            c.put(f"k{i}", b"v")
        assert c.get_stats()["size"] == 1024
        assert all(c.get(f"k{i}") == b"v" for i in range(500))
        with pytest.raises(CacheFullError):
            for i in range(500, 1000):
                c.put(f"k{i}", b"v")
    with MmapCache(path, size=64, max_size=1024) as c:  # reopens the grown table
        assert c.get("k5") == b"v"


def test_value_too_large(path: str) -> None:
    with MmapCache(path, size=64, max_segment_bytes=1 << 16) as c:
        c.put("ok", b"x" * 60000)
        with pytest.raises(ValueTooLargeError):
            c.put("big", b"x" * 70000)
        assert c.get("ok") == b"x" * 60000


def test_segments_roll_over(path: str) -> None:
    with MmapCache(path, size=1024, max_segment_bytes=1 << 16) as c:
        for i in range(100):
            c.put(f"k{i}", bytes([i]) * 5000)
        st = c.get_stats()
        assert st["heap_segments"] >= 7
        assert all(c.get(f"k{i}") == bytes([i]) * 5000 for i in range(100))
        c.atomic_rebuild()
        assert all(c.get(f"k{i}") == bytes([i]) * 5000 for i in range(100))


def test_atomic_rebuild_compacts_and_resizes(path: str) -> None:
    with MmapCache(path, size=1024) as c:
        for i in range(300):
            c.put(f"k{i}", b"x" * 100)
        for i in range(300):
            c.put(f"k{i}", b"y" * 100)
        for i in range(100):
            c.delete(f"k{i}")
        before = c.get_stats()
        assert before["heap_dead_bytes"] > 0 and before["deleted_count"] == 100
        c.atomic_rebuild(new_size=2048)
        after = c.get_stats()
        assert after["size"] == 2048 and after["deleted_count"] == 0
        assert after["heap_dead_bytes"] == 0 and after["occupied_count"] == 200
        assert after["heap_live_bytes"] == before["heap_live_bytes"]
        assert dict(c.list_items()) == {f"k{i}": b"y" * 100 for i in range(100, 300)}
        with pytest.raises(CacheFullError):
            c.atomic_rebuild(new_size=64)
        assert len(c) == 200
        # only the current generation's files remain
        names = sorted(os.listdir(os.path.dirname(path)))
        gen = after["generation"]
        assert names == sorted(["table", "table.lock", f"table.roster.{gen}", f"table.heap.{gen}.0"])


def test_handles_in_one_process_share_maps(path: str) -> None:
    a = MmapCache(path, size=64)
    b = MmapCache(path, size=64)
    assert a._s is b._s
    a.put("k", b"v")
    assert b.get("k") == b"v"
    a.close()
    assert b.get("k") == b"v"
    b.close()


def test_clear(cache: MmapCache) -> None:
    for i in range(50):
        cache.put(f"k{i}", b"v")
    cache.clear()
    assert len(cache) == 0 and cache.list() == [] and cache.get("k1") is None
    cache.put("k1", b"again")
    assert cache.get("k1") == b"again"


def test_get_with_flags_and_absolute_expiry(path: str) -> None:
    with MmapCache(path, size=256) as c:
        c.put("k", b"v", flags=7)
        c.put("long" * 30, b"w", flags=9)
        assert c.get("k", with_flags=True) == (b"v", 7)
        assert c.get("long" * 30, with_flags=True) == (b"w", 9)
        assert c.get("missing", "dflt", with_flags=True) == "dflt"
        at = time.time_ns() + 100_000_000
        c.put("a", b"1", expire_at_ns=at)
        e = c.get_entry("a")
        assert e is not None and e.expire_ns == at
        assert not c.add("a", b"2", expire_at_ns=at)
        time.sleep(0.12)
        assert c.get("a") is None
        c.put("b", b"1")
        c.put("b", b"2", expire_at_ns=time.time_ns() - 1)  # already past: removed
        assert c.get("b") is None
        with pytest.raises(TypeError):
            c.put("b", b"1", expire=1, expire_at_ns=at)
        with pytest.raises(ValueError):
            c.put("b", b"1", flags=1 << 16)


def test_entries_lists_metadata_without_counting_hits(path: str) -> None:
    with MmapCache(path, size=256) as c:
        c.put("a", b"1", flags=3)
        c.put(b"b", b"2", expire=60)
        before = c.get_stats()["hits"]
        got = dict(c.entries())
        assert got["a"].value == b"1" and got["a"].flags == 3 and got["a"].expire_ns is None
        assert got[b"b"].expire_ns is not None and got[b"b"].mtime_ns > 0
        assert c.get_stats()["hits"] == before


def test_damaged_counter_is_repaired_on_open(path: str) -> None:
    with MmapCache(path, size=64) as c:
        for i in range(10):
            c.put(f"k{i}", b"v")
    with open(path, "r+b") as f:
        f.seek(48)  # occupied_count (docs/FORMAT.md)
        f.write(b"\xff" * 8)
    with MmapCache(path, size=64) as c:
        assert len(c) == 10 and c.verify() == []
        c.put("new", b"x")
        assert c.get("k3") == b"v" and c.get("new") == b"x"


def test_repair_moves_the_heap_tail_past_published_records(path: str) -> None:
    """A writer killed after publishing a slot but before moving the heap tail
    (header still dirty): the repair on open must not let the next put write
    its record over the published one."""
    import struct

    with MmapCache(path, size=64) as c:
        c.put("first", b"v" * 50)
    with open(path, "rb") as f:
        seg, _dirty, _tail = struct.unpack_from("<IIQ", f.read(96), 72)
    with open(path, "r+b") as f:
        f.seek(72)  # heap_seg, dirty, heap_tail (docs/FORMAT.md): tail back to 64
        f.write(struct.pack("<IIQ", seg, 1, 64))
    with MmapCache(path, size=64) as c:
        c.put("second", b"w" * 50)
        assert c.get("first") == b"v" * 50
        assert c.get("second") == b"w" * 50
        assert c.verify() == []


@pure_get
def test_memo_false_handles_neither_use_nor_fill_the_memo(path: str) -> None:
    with MmapCache(path, size=256, memo=False) as lean, MmapCache(path, size=256) as c:
        memo = c._s.memo  # type: ignore[union-attr]  # shared by both handles
        for i in range(20):
            lean.put(f"k{i}", b"v%d" % i)
        for _ in range(2):
            assert [lean.get(f"k{i}") for i in range(20)] == [b"v%d" % i for i in range(20)]
        assert len(memo) == 0
        assert [c.get(f"k{i}") for i in range(20)] == [b"v%d" % i for i in range(20)]
        assert len(memo) == 20
        lean.put("k3", b"new")
        assert lean.get("k3") == b"new" and c.get("k3") == b"new"


def _memo_hits(c: MmapCache, keys: list[str]) -> int:
    """Reads ``keys`` (all stored, value b"v"); how many the memo answered."""
    s = c._s  # type: ignore[union-attr]
    first = s.first_reads
    assert [c.get(k) for k in keys] == [b"v"] * len(keys)
    return len(keys) - (s.first_reads - first)


@pure_get
def test_memo_pauses_when_keys_come_from_a_set_much_larger_than_it(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys read at random from a set 20 times the memo's size: a memo that
    fills up having served fewer hits than it holds keys is dropped and left
    empty for a while (filling it is pure cost), longer each time in a row;
    a working set that fits is memoised again once the pause is over."""
    import random

    from mmcache import table

    monkeypatch.setattr(table, "_MEMO_ENTRIES", 50)
    rng = random.Random(7)
    with MmapCache(path, size=4096) as c:
        s = c._s  # type: ignore[union-attr]
        for i in range(1000):
            c.put(f"k{i}", b"v")
        _memo_hits(c, [f"k{rng.randrange(1000)}" for _ in range(60)])
        assert s.memo_fails == 1 and 0 < s.memo_skip <= 4 * 50 and len(s.memo) == 0
        _memo_hits(c, [f"k{rng.randrange(1000)}" for _ in range(s.memo_skip + 60)])  # the pause, a fill
        assert s.memo_fails == 2 and s.memo_skip > 4 * 50 and len(s.memo) == 0  # a longer pause
        pause = s.memo_skip  # paused: that many first reads memoise nothing
        assert _memo_hits(c, [f"k{rng.randrange(1000)}" for _ in range(pause)]) == 0
        assert len(s.memo) == 0 and s.memo_skip == 0
        hot = [f"k{i}" for i in range(10)]
        for _ in range(100):  # the pause (8 x 50 first reads now) runs out ...
            _memo_hits(c, hot)
        assert s.memo_skip == 0 and set(hot) <= set(s.memo)
        assert _memo_hits(c, hot) == len(hot)  # ... and the small working set is served from the memo


@pure_get
def test_memo_follows_a_working_set_that_moves(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full memo of yesterday's keys serves nothing today: after one window
    of first reads it is dropped and refilled with the new working set."""
    from mmcache import table

    monkeypatch.setattr(table, "_MEMO_ENTRIES", 50)
    with MmapCache(path, size=4096) as c:
        s = c._s  # type: ignore[union-attr]
        old, new = [f"a{i}" for i in range(50)], [f"b{i}" for i in range(50)]
        for k in old + new:
            c.put(k, b"v")
        for _ in range(3):
            _memo_hits(c, old)
        assert set(s.memo) == set(old)
        for _ in range(3):
            _memo_hits(c, new)
        assert set(s.memo) == set(new) and s.memo_fails == 0  # (the old one had paid its way)
        assert _memo_hits(c, new) == 50


def test_get_view_is_a_view_of_an_immutable_record_for_large_values(path: str) -> None:
    """``_get_view`` (the decorator's read) gives a memoryview of the mapped
    record for a large memoised value and bytes otherwise; a view taken
    before the key is overwritten and the table compacted by another process
    still reads the old value, whole."""
    from support.helpers import run_py

    from mmcache.table import VIEW_MIN

    big, small = os.urandom(VIEW_MIN + 100), b"s" * 100
    with MmapCache(path, size=256) as c:
        c.put("big", big)
        c.put("small", small)
        assert c._get_view("big") == big  # a first read: bytes
        view = c._get_view("big")
        assert isinstance(view, memoryview) and view == big
        assert type(c._get_view("small")) is bytes and c._get_view("small") == small
        assert c._get_view("nope", 7) == 7
        run_py(
            """
            import sys
            from mmcache import MmapCache
            with MmapCache.open(sys.argv[1]) as c:
                c.put("big", b"new" * 5000)
                c.atomic_rebuild()
            """,
            path,
        )
        assert view == big  # the old record, intact, though unlinked and replaced
        assert c._get_view("big") == b"new" * 5000
    with MmapCache(path, size=256, memo=False) as lean:
        assert type(lean._get_view("big")) is bytes and lean._get_view("big") == b"new" * 5000
