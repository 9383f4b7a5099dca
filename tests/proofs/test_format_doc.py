"""docs/FORMAT.md read back: a table's bytes parsed with struct from the
offsets the document gives, independently of mmcache's own code (only the
public MmapCache writes them). If the code or the doc changes alone, this fails.
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

from xxhash import xxh3_64_intdigest, xxh3_128_digest

from mmcache import MmapCache

KEY_SIZE = 32


def _u(fmt: str, buf: bytes, off: int) -> int:
    return int(struct.unpack_from("<" + fmt, buf, off)[0])


def _probe(idx: bytes, size: int, slot_size: int, key: bytes) -> int:
    """FORMAT.md "Keys" and "Probing": the slot number holding ``key``."""
    if len(key) <= KEY_SIZE:
        skey, kflags_hashed, h = key, 0, xxh3_64_intdigest(key)
    else:
        digest = xxh3_128_digest(key)
        skey, kflags_hashed, h = digest, 1, struct.unpack("<Q", digest[:8])[0]
    slot = 1 + h % (size - 1)
    for _ in range(size - 1):
        o = 4096 + (slot - 1) * slot_size  # "slot i starts at 4096 + (i - 1) * slot_size"
        state, kflags, klen = idx[o + KEY_SIZE], idx[o + KEY_SIZE + 1], idx[o + KEY_SIZE + 2]
        if state == 0:
            break
        if state == 1 and klen == len(skey) and idx[o : o + klen] == skey and kflags & 1 == kflags_hashed:
            assert idx[o + klen : o + KEY_SIZE] == bytes(KEY_SIZE - klen)  # null padded
            return slot
        slot = slot % (size - 1) + 1
    raise AssertionError(f"{key!r} not found by the documented probe")


def test_table_bytes_match_format_md(tmp_path: Path) -> None:
    path = str(tmp_path / "t")
    long_key = "k" * 100  # longer than key_size: the slot holds its digest
    expire_at = time.time() + 3600
    with MmapCache(path, size=128, key_size=KEY_SIZE) as c:
        c.put("alpha", b"one", expire=3600)
        c.put(b"beta", b"two" * 10)
        c.put(long_key, b"three")
        c.put("gone", b"x")
        c.delete("gone")
    idx = Path(path).read_bytes()
    # Index header.
    assert idx[0:8] == b"MMCACHE\x00"
    assert _u("I", idx, 8) == 2  # format version
    assert _u("I", idx, 12) & 1 == 0  # not RETIRED
    size, slot_size, key_size = _u("Q", idx, 16), _u("I", idx, 24), _u("I", idx, 28)
    assert (size, key_size) == (128, KEY_SIZE) and slot_size >= key_size + 32
    gen = _u("Q", idx, 40)
    assert gen >= 1
    assert (_u("Q", idx, 48), _u("Q", idx, 56)) == (3, 1)  # occupied, deleted
    assert _u("I", idx, 76) == 0  # not dirty
    assert len(idx) == 4096 + (size - 1) * slot_size
    seg_now, tail, live_bytes = _u("I", idx, 72), _u("Q", idx, 80), _u("Q", idx, 88)
    # Slots, records and the roster.
    roster = Path(f"{path}.roster.{gen}").read_bytes()
    assert roster[0:8] == b"MMCROST\x00" and _u("Q", roster, 16) == gen and _u("Q", roster, 24) == size
    live = {_u("I", roster, 64 + 4 * i) for i in range(3)}
    total = 0
    for key, value, is_str in ((b"alpha", b"one", True), (b"beta", b"two" * 10, False),
                               (long_key.encode(), b"three", True)):  # fmt: skip
        slot = _probe(idx, size, slot_size, key)
        assert slot in live
        o = 4096 + (slot - 1) * slot_size + KEY_SIZE
        assert idx[o + 1] & 2 == (2 if is_str else 0)  # STR
        pos, seg, off, mtime, rec_len = struct.unpack_from("<IIIQI", idx, o + 4)
        assert _u("I", roster, 64 + 4 * pos) == slot  # the roster position links back
        assert abs(mtime - time.time_ns()) < 600 * 10**9
        heap = Path(f"{path}.heap.{gen}.{seg}").read_bytes()
        assert heap[0:8] == b"MMCHEAP\x00" and _u("I", heap, 12) == seg and _u("Q", heap, 16) == gen
        csum, exp, klen, vlen, flags, rkf, magic, reserved = struct.unpack_from("<QQIIHBBI", heap, off)
        assert (klen, vlen, magic, reserved, flags) == (len(key), len(value), 0xA7, 0, 0)
        assert rkf & 2 == (2 if is_str else 0) and not rkf & 4  # STR; not SIGNED
        assert heap[off + 32 : off + 32 + klen] == key
        assert heap[off + 32 + klen : off + 32 + klen + vlen] == value
        assert csum == xxh3_64_intdigest(heap[off + 8 : off + 32 + klen + vlen])  # seed 0
        padded = (32 + klen + vlen + 7) & ~7
        assert off % 8 == 0 and rec_len in (0, padded)
        assert (seg, off + padded) <= (seg_now, tail)  # below the heap tail
        if key == b"alpha":
            assert abs(exp / 1e9 - expire_at) < 60
        else:
            assert exp == 0
        total += padded
    assert live_bytes == total
    stamps_at = 64 + ((4 * size + 7) & ~7)
    assert len(roster) == stamps_at + 8 * size
    assert os.path.exists(f"{path}.lock")
