"""Defaults a newcomer meets first: what ``MmapCache(path)`` costs on disk,
how it grows, and sizes too small to hold an entry refused at the call."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmcache import MmapCache
from mmcache._core.args import DEFAULT_INITIAL_SIZE, DEFAULT_SIZE, MIN_SIZE


def _disk_bytes(directory: Path) -> int:
    """Bytes really allocated (st_blocks) by every file in ``directory``."""
    return sum(os.stat(p).st_blocks * 512 for p in directory.iterdir())


def test_default_table_starts_small_on_disk(tmp_path: Path) -> None:
    # The seed's fixed 1,000,000 slots took a 92 MiB index up front.
    with MmapCache(tmp_path / "t") as c:
        c.put("k", b"v" * 100)
        st = c.get_stats()
        assert st["size"] == DEFAULT_INITIAL_SIZE
        assert c.max_size == DEFAULT_SIZE
    used = _disk_bytes(tmp_path)
    assert used < 1 << 20, f"a fresh default table allocates {used} bytes"


def test_default_table_grows_and_is_reopened_at_its_size(tmp_path: Path) -> None:
    n = DEFAULT_INITIAL_SIZE  # twice what the first size holds
    with MmapCache(tmp_path / "t") as c:
        for i in range(n):
            c.put(f"k{i}", b"x")
        grown = c.get_stats()["size"]
        assert grown > DEFAULT_INITIAL_SIZE
        assert len(c) == n and c.get_stats()["evictions"] == 0
    with MmapCache(tmp_path / "t") as again:  # no size: adopts the grown table
        assert again.get_stats()["size"] == grown
        assert again.get(f"k{n - 1}") == b"x"


def test_explicit_size_is_still_fixed(tmp_path: Path) -> None:
    with MmapCache(tmp_path / "t", size=64) as c:
        assert c.max_size is None and c.get_stats()["size"] == 64


@pytest.mark.parametrize("size", [2, 3])
def test_size_that_holds_no_entry_is_refused_at_the_call(tmp_path: Path, size: int) -> None:
    refusal = f"size must be between {MIN_SIZE} and .* cannot hold a single entry"
    with pytest.raises(ValueError, match=refusal):
        MmapCache(tmp_path / "t", size=size)
    assert list(tmp_path.iterdir()) == []  # nothing created
    with pytest.raises(ValueError, match="max_size must be between"):
        MmapCache(tmp_path / "t", max_size=size)


def test_smallest_size_holds_one_entry(tmp_path: Path) -> None:
    with MmapCache(tmp_path / "t", size=MIN_SIZE, eviction="none") as c:
        c.put("a", b"1")
        assert c.get("a") == b"1"


def test_rebuild_to_a_size_that_holds_nothing_is_refused(tmp_path: Path) -> None:
    with MmapCache(tmp_path / "t", size=64) as c:
        c.put("a", b"1")
        with pytest.raises(ValueError, match="cannot hold a single entry"):
            c.atomic_rebuild(3)
        assert c.get("a") == b"1"
