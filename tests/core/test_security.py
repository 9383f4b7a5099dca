"""Security: signed records, owner-only files, refused foreign files."""

from __future__ import annotations

import os

import pytest
from xxhash import xxh3_64_intdigest

from mmcache import MmapCache, UnsafePathError
from mmcache._core import layout as L
from mmcache._core import record


def test_signed_records_round_trip_and_unsigned_are_misses(path: str) -> None:
    with MmapCache(path, size=256, secret=b"s3cret") as signed:
        signed.put("k", b"signed value")
        assert signed.get("k") == b"signed value"
        assert dict(signed.list_items()) == {"k": b"signed value"}
    with MmapCache(path, size=256) as plain:  # an attacker without the secret
        assert plain.get("k") == b"signed value"  # readable, it is not encrypted
        plain.put("k", b"planted")
        plain.put("other", b"planted too")
    with MmapCache(path, size=256, secret=b"s3cret") as signed:
        assert signed.get("k") is None and signed.get("other") is None
        assert signed.get_entry("k") is None and "k" not in signed
        assert signed.list_items() == []
    with MmapCache(path, size=256, secret=b"another") as wrong:
        wrong.put("w", b"x")
    with MmapCache(path, size=256, secret="s3cret") as signed:  # str secrets are UTF-8
        assert signed.get("w") is None


def test_a_plain_handles_memo_does_not_vouch_for_a_signed_handle(path: str) -> None:
    """Handles on one table in one process share the memo of found keys; a
    record a plain handle found (and memoised) is still unsigned, so a handle
    with a secret must not take it from the memo."""
    with MmapCache(path, size=256) as plain, MmapCache(path, size=256, secret=b"s3cret") as signed:
        plain.put("k", b"planted")
        for _ in range(3):
            assert plain.get("k") == b"planted"
        assert signed.get("k") is None and "k" not in signed
        signed.put("k", b"signed")
        assert signed.get("k") == b"signed" and plain.get("k") == b"signed"


def test_tampered_value_with_a_fixed_checksum_is_a_miss(path: str) -> None:
    with MmapCache(path, size=256, secret=b"s3cret") as c:
        c.put("k", b"AAAAAAAA")
        g = c._s.gen  # type: ignore[union-attr]
        seg, off = 0, L.SEG_HEADER_BYTES  # the first record of the heap
        mv = g.heap.views[seg]
        end = off + record.OFF_KEY + 1 + 8
        mv[end - 8 : end] = b"BBBBBBBB"  # the attacker edits the value...
        L.U64.pack_into(mv, off, xxh3_64_intdigest(mv[off + 8 : end]))  # ...and fixes the checksum
    with MmapCache(path, size=256) as plain:
        assert plain.get("k") == b"BBBBBBBB"  # integrity checks alone cannot stop a forger
    with MmapCache(path, size=256, secret=b"s3cret") as c:
        assert c.get("k") is None  # the MAC does


@pytest.mark.parametrize("n", [10, 1024, 1025, 20_000])  # both sides of record.INLINE_VALUE
def test_signed_values_of_every_size_round_trip_and_resist_tampering(path: str, n: int) -> None:
    value = bytes(range(256)) * (n // 256) + b"v" * (n % 256)
    with MmapCache(path, size=256, secret=b"s3cret") as c:
        c.put("k", value)
        assert c.add("a", value) and c.get("a") == value
        assert c.get("k") == value and c.get_entry("k").value == value  # type: ignore[union-attr]
        g = c._s.gen  # type: ignore[union-attr]
        off = L.SEG_HEADER_BYTES  # the first record: k's
        mv = g.heap.views[0]
        end = off + record.OFF_KEY + 1 + n
        mv[end - 1] ^= 1  # the value's last byte...
        L.U64.pack_into(mv, off, xxh3_64_intdigest(mv[off + 8 : end]))  # ...with the checksum fixed
    with MmapCache(path, size=256, secret=b"s3cret") as c:
        assert c.get("k") is None and c.get("a") == value


def test_bad_secret(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for bad in (b"x" * 65, b"", 12):
        with pytest.raises(ValueError):
            MmapCache(str(tmp_path / "t"), size=16, secret=bad)  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


def test_mode_is_configurable(path: str) -> None:
    with MmapCache(path, size=64, mode=0o640) as c:
        c.put("k", b"v")
    assert os.stat(path).st_mode & 0o777 == 0o640


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown needs root")
def test_files_of_another_user_are_refused(path: str) -> None:
    with MmapCache(path, size=64) as c:
        c.put("k", b"v")
    os.chown(path, 65534, 65534)
    with pytest.raises(UnsafePathError, match="owned by uid 65534"):
        MmapCache(path, size=64)
    with MmapCache(path, size=64, allow_foreign_owner=True) as c:
        assert c.get("k") == b"v"
