"""The compiled record copy of a compaction (_native.move_records, used by
HeapCopier._move): the same bytes as the pure loop, the pure loop for what
it leaves, and no crash on hostile slots."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from mmcache import MmapCache, _native
from mmcache._core import layout
from mmcache._core import rebuild as R

pytestmark = pytest.mark.skipif(not _native.AVAILABLE, reason="the compiled extension is not in use")


def _table(path: Path) -> dict[str, bytes]:
    """Overwrites (dead records), deletes, expired entries, values up to 20 KB
    over several 64 KB segments; the model of what is live."""
    rng = random.Random(7)
    model: dict[str, bytes] = {}
    with MmapCache(path, size=2048, max_segment_bytes=1 << 16, compact_min_bytes=1 << 30) as c:
        for _ in range(3000):
            k = f"k{rng.randrange(700)}"
            if rng.random() < 0.1:
                c.delete(k)
                model.pop(k, None)
                continue
            v = rng.randbytes(rng.choice([0, 5, 100, 900, rng.randrange(1, 20_000)]))
            if rng.random() < 0.05:
                c.put(k, v, 0.001)  # expired by the compaction: kept in place, as the pure loop keeps it
                model.pop(k, None)
            else:
                c.put(k, v)
                model[k] = v
    return model


def _compact(path: Path) -> tuple[bytes, list[bytes], dict[str, bytes]]:
    """Compact the table at ``path``; the new index's slots, its heap
    segments past their headers, and what it holds."""
    with MmapCache(path, max_segment_bytes=1 << 16, compact_min_bytes=1 << 30) as c:
        s = c._shared()
        assert R.rebuild_concurrently(c, s, compact=True)
        g = s.gen
        idx = bytes(g.idx[layout.HEADER_BYTES : g.index_bytes])
        segs = [bytes(v[layout.SEG_HEADER_BYTES :]) for v in g.heap.views if v is not None]
        return idx, segs, dict(c.list_items())


def test_compiled_compaction_writes_the_bytes_the_pure_loop_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir()
    model = _table(tmp_path / "a" / "t")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    calls = {"held": 0, "batches": 0}
    move = _native.move_records
    assert move is not None

    def counted(*args: Any) -> tuple[int, int, int, bool]:
        r = move(*args)
        calls["batches"] += 1
        calls["held"] += r[3]
        return r

    monkeypatch.setattr(_native, "move_records", counted)
    native = _compact(tmp_path / "a" / "t")
    monkeypatch.setattr(_native, "move_records", None)
    pure = _compact(tmp_path / "b" / "t")
    assert native[2] == pure[2] == model
    assert len(native[1]) >= 3  # the destination rolled over (the pure loop's part)
    assert calls["held"] >= 2 and calls["batches"] > calls["held"]
    assert native[0] == pure[0], "the slots point elsewhere"
    assert native[1] == pure[1], "the new heap's bytes differ"
    with MmapCache.open(tmp_path / "a" / "t") as c:
        assert c.verify() == []


def test_move_records_stops_at_hostile_slots_without_reading_past_a_map(tmp_path: Path) -> None:
    with MmapCache(tmp_path / "t", size=64, key_size=16) as c:
        for i in range(20):
            c.put(f"k{i}", b"v" * 50)
        g = c._shared().gen
        K, ss, n = g.key_size, g.slot_size, g.nslots
        nm = bytearray(g.idx[: g.index_bytes])
        views = list(g.heap.views)
        HB = layout.HEADER_BYTES
        occupied = [s for s in range(1, n + 1) if nm[HB + (s - 1) * ss + K] == layout.OCCUPIED]
        rng = random.Random(3)
        move = _native.move_records
        assert move is not None
        for _ in range(3000):
            bad = bytearray(nm)
            for _ in range(rng.randrange(1, 4)):
                o = HB + (rng.choice(occupied) - 1) * ss + K + rng.choice([8, 12, 24, 0])
                bad[o : o + 4] = rng.choice([rng.randbytes(4), b"\xff" * 4, b"\0" * 4, b"\x40\0\0\0"])
            dst = memoryview(bytearray(4096))
            slots = [*occupied, rng.choice([0, n + 1, 1 << 40, -1])]
            stop, tail, written, held = move(bad, slots, 0, K, ss, views, dst, len(dst), 0, 64)
            assert 0 <= stop < len(slots) and held  # a hostile slot (at the latest the bad number) stops it
            assert tail == 64 + written <= len(dst)
        with pytest.raises(ValueError):
            move(nm, occupied, 0, 8, ss, views, memoryview(bytearray(64)), 64, 0, 64)  # key_size < 16
        with pytest.raises(TypeError):
            move(nm, tuple(occupied), 0, K, ss, views, memoryview(bytearray(64)), 64, 0, 64)
