"""A handle's policy is one frozen Options object (issue 18): read through
the handle's attributes, replaced whole when a compaction knob is set."""

from __future__ import annotations

import dataclasses

import pytest

from mmcache import MmapCache


def test_policy_reads_through_and_cannot_be_changed_in_place(path: str) -> None:
    with MmapCache(path, size=64, max_entries=3, eviction="fifo") as c:
        assert (c.max_entries, c.eviction, c.max_bytes) == (3, "fifo", None)
        with pytest.raises(AttributeError):
            c.max_entries = 10  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            c._opts.max_entries = 10  # type: ignore[misc]
        for i in range(6):
            c.put(f"k{i}", b"v")
        assert len(c) == 3 and c.get("k5") == b"v" and c.get("k0") is None  # fifo at 3 entries


@pytest.mark.parametrize(("name", "bad"), [("compact_threshold", 0), ("compact_threshold", 1.5),
                                           ("compact_threshold", True), ("compact_min_bytes", -1),
                                           ("compact_min_bytes", 1.5)])  # fmt: skip
def test_compaction_knobs_are_checked_when_set(path: str, name: str, bad: object) -> None:
    with MmapCache(path, size=64) as c:
        before = c._opts
        with pytest.raises(ValueError, match=name):
            setattr(c, name, bad)
        assert c._opts is before


def test_a_knob_set_replaces_the_options_the_writer_reads(path: str) -> None:
    """With the threshold and minimum lowered on the open handle, overwrites
    leave so much dead heap that a put asks for a compaction, which runs."""
    with MmapCache(path, size=64, compact_min_bytes=1 << 30) as c:
        before = c._opts
        c.compact_min_bytes, c.compact_threshold = 0, 0.1
        assert c._opts is not before and (c.compact_min_bytes, c.compact_threshold) == (0, 0.1)
        gen = c.get_stats()["generation"]
        for _ in range(50):
            c.put("k", b"x" * 1000)
        assert c.get_stats()["generation"] > gen and c.get("k") == b"x" * 1000
