"""Expiry past what the format holds (issue 16 item 7): an expiry is a u64
of ns since the epoch, so anything past 2**63 ns (April 2262) means "never",
for the core and for Django's timeouts; NaN and negative values keep the
contract of ``MmapCache.put``."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmcache import MmapCache


@pytest.mark.parametrize("expire", [1e11, 1e300, float("inf"), 2**80, 9.3e9])
def test_expiry_past_the_format_is_never(path: str, expire: float) -> None:
    """Seconds beyond what a u64 of ns holds (past 2262) mean "never", for
    put, add and touch; they raised struct.error / OverflowError."""
    with MmapCache(path, size=64) as c:
        c.put("keep", b"k")
        c.put("p", b"1", expire=expire)
        assert c.add("a", b"2", expire=expire)
        c.put("t", b"3", expire=60)
        assert c.touch("t", expire=expire)
        for k, v in (("p", b"1"), ("a", b"2"), ("t", b"3")):
            e = c.get_entry(k)
            assert e is not None and e.value == v and e.expire_ns is None
        c.put("at", b"4", expire_at_ns=2**64 + 5)
        assert c.get_entry("at").expire_ns is None  # type: ignore[union-attr]
        assert c.get("keep") == b"k" and c.verify() == []


def test_expiry_nan_and_negative_follow_the_contract(path: str) -> None:
    with MmapCache(path, size=64) as c:
        c.put("k", b"v")
        with pytest.raises(ValueError, match="NaN"):
            c.put("k", b"other", expire=float("nan"))
        assert c.get("k") == b"v"  # nothing stored is lost
        c.put("k", b"gone", expire=-1e300)  # 0 or less: removed at once
        assert c.get("k") is None
        c.put("j", b"v", expire=float("-inf"))
        assert c.get("j") is None
        near = 1e9  # ~32 years: an ordinary expiry, not clamped
        c.put("n", b"v", expire=near)
        assert c.get_entry("n").expire_ns is not None  # type: ignore[union-attr]


def test_django_huge_timeouts_are_forever(tmp_path: Path) -> None:
    pytest.importorskip("django", reason="Django is not installed")
    from support.helpers import configure_django

    configure_django()
    from mmcache.contrib.django import MmapCacheBackend

    cache = MmapCacheBackend(str(tmp_path / "cache"), {})
    cache.set("a", 1, timeout=1e11)
    cache.set_many({"b": 2, "c": 3}, timeout=1e300)
    assert cache.add("d", 4, timeout=float("inf"))
    assert cache.get_or_set("e", 5, timeout=10**30) == 5
    cache.set("f", 6, timeout=60)
    assert cache.touch("f", timeout=1e11)
    assert cache.incr("a") == 2
    assert cache.get_many(["a", "b", "c", "d", "e", "f"]) == {"a": 2, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6}
    assert cache.table.get_entry(cache.make_key("f")).expire_ns is None  # type: ignore[union-attr]
