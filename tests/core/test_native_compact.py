"""The compiled loops of a rebuild: the record copy of a compaction
(_native.move_records, HeapCopier._move) and the re-insert of a full rebuild
(_native.build_records, Builder.copy_all): the same bytes as the pure loops,
the pure loops for what they leave, and no crash on hostile slots."""

from __future__ import annotations

import array
import random
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from mmcache import MmapCache, _native
from mmcache._core import layout
from mmcache._core import rebuild as R

pytestmark = pytest.mark.skipif(not _native.AVAILABLE, reason="the compiled extension is not in use")


OPTS: dict[str, Any] = {"max_segment_bytes": 1 << 16, "compact_min_bytes": 1 << 30}


def _table(path: Path, **secret: Any) -> dict[str, bytes]:
    """Overwrites (dead records), deletes, expired entries, values up to 20 KB
    over several 64 KB segments, keys too long for a slot (hashed); the model
    of what is live."""
    rng = random.Random(7)
    model: dict[str, bytes] = {}
    with MmapCache(path, size=2048, **OPTS, **secret) as c:
        for _ in range(3000):
            k = f"k{rng.randrange(700)}" + ("-long" * 20 if rng.random() < 0.1 else "")
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


Rebuilt = tuple[bytes, list[bytes], dict[str, bytes], int]


def _compact(path: Path, compact: bool = True, **secret: Any) -> Rebuilt:
    """Compact (or fully rebuild) the table at ``path``; the new index's slots
    and its roster (entries and stamps), its heap segments past their
    headers, what it holds, and the expired entries the rebuild counted."""
    with MmapCache(path, **OPTS, **secret) as c:
        s = c._shared()
        assert R.rebuild_concurrently(c, s, compact=compact)
        g = s.gen
        idx = bytes(g.idx[layout.HEADER_BYTES : g.index_bytes])
        idx += bytes(g.roster[layout.ROSTER_HEADER_BYTES :])
        segs = [bytes(v[layout.SEG_HEADER_BYTES :]) for v in g.heap.views if v is not None]
        return idx, segs, dict(c.list_items()), c.get_stats()["expirations"]  # what the rebuild counted


@pytest.mark.parametrize(
    ("loop", "secret"),
    [("move_records", {}), ("build_records", {}), ("build_records", {"secret": b"k" * 32})],
)
def test_compiled_rebuilds_write_the_bytes_the_pure_loops_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loop: str, secret: dict[str, Any]
) -> None:
    (tmp_path / "a").mkdir()
    model = _table(tmp_path / "a" / "t", **secret)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    calls = {"held": 0, "batches": 0}
    compiled = getattr(_native, loop)
    assert compiled is not None

    def counted(*args: Any) -> Any:
        r = compiled(*args)
        calls["batches"] += 1
        calls["held"] += r[-1]
        return r

    compact = loop == "move_records"
    monkeypatch.setattr(_native, loop, counted)
    native = _compact(tmp_path / "a" / "t", compact, **secret)
    monkeypatch.setattr(_native, loop, None)
    pure = _compact(tmp_path / "b" / "t", compact, **secret)
    assert native[2] == pure[2] == model
    assert native[3] == pure[3] and (native[3] > 0) is (not compact)  # a compaction keeps expired entries
    assert len(native[1]) >= 3  # the destination rolled over (the pure loop's part)
    assert calls["held"] >= 2 and calls["batches"] > calls["held"]
    assert native[0] == pure[0], "the slots point elsewhere"
    assert native[1] == pure[1], "the new heap's bytes differ"
    with MmapCache.open(tmp_path / "a" / "t", **secret) as c:
        assert c.verify() == []


def test_the_loops_stop_at_hostile_slots_without_reading_past_a_map(tmp_path: Path) -> None:
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
            # the full rebuild's loop on the same slots, into a fresh index and roster
            build = _native.build_records
            assert build is not None
            nroster = bytearray(len(g.roster))
            new = (bytearray(len(nm)), ss, n, bytes(g.roster), g.rec_base - 1, nroster, g.rec_base - 1,
                   array.array("I", bytes(4 * (n + 1))), array.array("Q", bytes(8 * (n + 1))))  # fmt: skip
            dst = memoryview(bytearray(4096))
            now = time.time_ns()
            r = build(bad, ss, K, slots, 0, views, *new, dst, len(dst), 0, 64, now, (0, 0, 0, 0, 0))
            stop, tail, occ, _hwm, live, _expired, _dele, held = r
            assert 0 <= stop < len(slots) and held
            assert tail == 64 + live <= len(dst) and occ <= len(occupied)
        with pytest.raises(ValueError):
            move(nm, occupied, 0, 8, ss, views, memoryview(bytearray(64)), 64, 0, 64)  # key_size < 16
        with pytest.raises(TypeError):
            move(nm, tuple(occupied), 0, K, ss, views, memoryview(bytearray(64)), 64, 0, 64)
