"""The capacity rule as a pure function (``_capacity.room``), and that a real
table acts on each of its answers: grow, evict (by entries, by bytes), purge."""

from __future__ import annotations

from pathlib import Path

from mmcache import MmapCache
from mmcache._core.capacity import EVICT, GROW, PURGE, Room, room

CAPS = (50, 85)  # a 101-slot table: live cap 50, load cap 85
BASE = dict(new_key=True, free_empty=True, rec_len=64, old_len=0, size=101, max_size=None,
            max_entries=None, max_bytes=None)  # fmt: skip


def test_room_answers() -> None:
    assert room(10, 0, 640, CAPS, **BASE) is None
    assert room(50, 0, 3200, CAPS, **{**BASE, "max_size": 1000}) == Room(GROW, 202)
    assert room(50, 0, 3200, CAPS, **{**BASE, "max_size": 150}) == Room(GROW, 150)
    assert room(50, 0, 3200, CAPS, **BASE) == Room(EVICT, 1, "entries")
    assert room(20, 0, 1280, CAPS, **{**BASE, "max_entries": 10}) == Room(EVICT, 11, "entries")
    assert room(40, 45, 2560, CAPS, **BASE) == Room(PURGE)
    assert room(40, 45, 2560, CAPS, **{**BASE, "free_empty": False}) is None  # reuses a tombstone
    assert room(10, 0, 1000, CAPS, **{**BASE, "max_bytes": 1050}) == Room(EVICT, 1, "bytes")
    overwrite = {**BASE, "new_key": False, "max_bytes": 1050, "old_len": 64}
    assert room(50, 84, 1000, CAPS, **overwrite) is None  # an overwrite needs no slot
    assert room(50, 84, 1000, CAPS, **{**overwrite, "rec_len": 200}) == Room(EVICT, 1, "bytes")


def test_a_table_acts_on_each_answer(tmp_path: Path) -> None:
    grown = MmapCache(str(tmp_path / "g"), size=101, max_size=1000)
    for i in range(200):
        grown.put(f"k{i}", b"v")
    assert grown.get_stats()["size"] > 101 and len(grown.keys()) == 200  # grow: nothing evicted
    grown.close()
    capped = MmapCache(str(tmp_path / "e"), size=101)
    for i in range(200):
        capped.put(f"k{i}", b"v")
    assert capped.get_stats()["occupied_count"] == 50 and capped.get("k199") == b"v"  # evict
    for i in range(200, 400):  # every put evicts: tombstones pile up until a purge
        capped.put(f"k{i}", b"v")
    assert capped.get_stats()["deleted_count"] < 85 - 50 + 1 and capped.verify() == []
    capped.close()
    small = MmapCache(str(tmp_path / "b"), size=101, max_bytes=4096)
    for i in range(100):
        small.put(f"k{i}", b"x" * 100)
    assert small.get_stats()["heap_live_bytes"] <= 4096 and small.get("k99") == b"x" * 100
    small.close()
