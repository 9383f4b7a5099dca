"""Heap records: the one place that parses a record and checks it.

A record's bytes are described in ``_layout`` (and docs/FORMAT.md); every
reader that needs more than the hot path's inline decode calls these. The
writer builds records in ``_write.prepare``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any, NamedTuple

from xxhash import xxh3_64_intdigest

from . import layout
from .generation import Generation


class Entry(NamedTuple):
    """A stored value with its metadata, as returned by ``get_entry``."""

    value: bytes
    flags: int
    mtime_ns: int
    expire_ns: int | None


def mac(secret: bytes, data: bytes | memoryview) -> bytes:
    """The keyed hash that signs a record when the table has a secret."""
    return hashlib.blake2b(data, key=secret, digest_size=layout.MAC_BYTES, person=b"mmcache-rec-v1").digest()


def mac_ok(g: Generation, seg: int, off: int, end: int, rkf: int, secret: bytes | None) -> bool:
    """True unless ``secret`` is set and the record is unsigned or forged."""
    if secret is None:
        return True
    if not rkf & layout.KF_SIGNED:
        return False
    mv = g.heap.view(seg, end + layout.MAC_BYTES)
    if mv is None:
        return False
    return hmac.compare_digest(bytes(mv[end : end + layout.MAC_BYTES]), mac(secret, mv[off + 8 : end]))


def read_record(g: Generation, o: int, verify: bool = True) -> tuple[Any, ...] | None:
    """(seg, off, exp, klen, vlen, flags, rkf, rec_len) of slot ``o``'s record,
    or None if it cannot be read or does not check out."""
    K = g.params.key_size
    seg, off = layout.SLOT_LOC.unpack_from(g.idx, o + K + layout.OFF_SLOT_LOC)
    mv = g.heap.view(seg, off + layout.RECORD_HEADER)
    if mv is None or off < layout.SEG_HEADER_BYTES:
        return None
    csum, exp, klen, vlen, flags, rkf, magic, _ = layout.RECORD.unpack_from(mv, off)
    end = off + layout.RECORD_HEADER + klen + vlen
    if magic != layout.REC_MAGIC or end > len(mv) and (mv := g.heap.view(seg, end)) is None:
        return None
    if verify and xxh3_64_intdigest(mv[off + 8 : end]) != csum:
        return None
    return seg, off, exp, klen, vlen, flags, rkf, layout.record_size(klen, vlen, bool(rkf & layout.KF_SIGNED))


def record_key(g: Generation, o: int) -> bytes | None:
    r = read_record(g, o)
    if r is None:
        return None
    seg, off, _e, klen, *_ = r
    start = off + layout.RECORD_HEADER
    return bytes(g.heap.maps[seg][start : start + klen])


def is_expired(g: Generation, o: int, now: int | None = None) -> bool:
    r = read_record(g, o, verify=False)
    if r is None:
        return True  # unreadable counts as gone: evict / overwrite it first
    exp: int = r[2]
    return bool(exp) and exp <= (now if now is not None else time.time_ns())


def slot_record_size(g: Generation, o: int) -> int:
    r = read_record(g, o, verify=False)
    return 0 if r is None else r[7]
