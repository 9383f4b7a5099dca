"""Hand-made index and heap buffers for the native get, shared by
tests/core/test_native.py and the fuzzer (tests/core/fuzz_native.py): one valid entry
that the tests and the fuzzer then damage byte by byte."""

from __future__ import annotations

import struct
import time
from typing import Any

import xxhash

HB = 4096
KEY_SIZE = 16
SLOT_SIZE = KEY_SIZE + 32
NSLOTS = 8
SEG_HEADER = 64


def record(key: bytes, value: bytes, *, kflags: int = 0, flags: int = 0, expire: int = 0) -> bytes:
    body = struct.pack("<QIIHBBI", expire, len(key), len(value), flags, kflags, 0xA7, 0) + key + value
    raw = struct.pack("<Q", xxhash.xxh3_64_intdigest(body)) + body
    return raw + b"\0" * (-len(raw) % 8)


def table(key: bytes, value: bytes, **rec: Any) -> tuple[bytearray, bytearray, bytearray, int]:
    """(index, heap segment 0, roster, slot index) holding ``key`` -> ``value``."""
    idx = bytearray(HB + NSLOTS * SLOT_SIZE)
    heap = bytearray(SEG_HEADER) + record(key, value, **rec)
    i = xxhash.xxh3_64_intdigest(key) % NSLOTS
    o = HB + i * SLOT_SIZE
    idx[o : o + len(key)] = key
    struct.pack_into("<BBBxIIIQII", idx, o + KEY_SIZE, 1, rec.get("kflags", 0), len(key), 0, 0, SEG_HEADER,
                     time.time_ns(), len(heap) - SEG_HEADER, 0)  # fmt: skip
    roster = bytearray(8 * (NSLOTS + 1 + 8))
    return idx, heap, roster, i


def call(
    get: Any, idx: Any, views: list[Any], roster: Any, key: object, *, rec_base: int = 8,
    next_check: int | None = None, local: list[int] | None = None, with_flags: bool = False,
) -> Any:  # fmt: skip
    """The native get on these buffers (``hot`` shaped like Generation.hot)."""
    hot = (idx, NSLOTS, SLOT_SIZE, rec_base, memoryview(roster).cast("Q"), [])
    nc = time.monotonic_ns() + 10**9 if next_check is None else next_check
    return get(hot, views, key, KEY_SIZE, True, nc, [0] * 7 if local is None else local, "MISS", with_flags)
