"""Heap records: the one module that builds, parses, sizes and checks a record.

Every fact of a record's layout is named here: its structs, the offsets of
its fields, its magic, the MAC, the size formula (docs/FORMAT.md describes
the same bytes). The hot paths elsewhere (``table._get_probe``, the writer,
the builders, eviction) bind these structs' methods and offsets to locals or
module globals for speed; none spells an offset, a format or a size of its
own (tests/proofs/test_record_layout.py checks). The compiled get mirrors them in
``_native/_speedups.c``.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import time
from typing import Any, NamedTuple

from xxhash import xxh3_64, xxh3_64_intdigest

from . import layout
from .generation import Generation

# ------------------------------------------------------------------ layout
# A record, 8-byte aligned, never rewritten once published:
#   0: u64 checksum: xxh3_64 (seed 0, never keyed) of bytes [8, end); a table
#      with a secret signs the record with the MAC below besides
#   8: u64 expire_ns (CLOCK_REALTIME; 0 = never)
#  16: u32 klen | 20: u32 vlen | 24: u16 flags (the caller's codec tag)
#  26: u8 kflags (layout.KF_STR, KF_SIGNED) | 27: u8 MAGIC | 28: u32 reserved (0)
#  32: key[klen] | 32+klen: value[vlen]   (end = 32 + klen + vlen)
#  [if KF_SIGNED] end: MAC_BYTES of keyed BLAKE2b of bytes [8, end)
#  then zeros up to a multiple of 8 (the next record's start)
CHECKSUM = struct.Struct("<Q")  # at 0
# The header's fields after the checksum (expire_ns, klen, vlen, flags,
# kflags, magic, reserved): the first bytes the checksum covers, as built.
CHECKED_HEAD = struct.Struct("<QIIHBBI")
# The whole header, as read: checksum, then CHECKED_HEAD's fields.
HEAD = struct.Struct(CHECKSUM.format + CHECKED_HEAD.format[1:])
HEAD_BYTES = HEAD.size
OFF_CHECKED = CHECKSUM.size  # the checksum and the MAC cover [OFF_CHECKED, end)
OFF_EXPIRE = OFF_CHECKED  # u64 expire_ns, the first checked field
EXPIRE = struct.Struct("<Q")
OFF_KFLAGS = 26
OFF_MAGIC = 27
OFF_KEY = HEAD_BYTES  # the key, then the value
MAGIC = 0xA7
KF_SIGNED = 4  # kflags: a MAC follows the value (KF_STR, shared with the slots, is layout's)
MAC_BYTES = 16
assert (HEAD_BYTES, struct.calcsize("<QQIIH"), struct.calcsize("<QQIIHB")) == (32, OFF_KFLAGS, OFF_MAGIC)


def size(klen: int, vlen: int, signed: object) -> int:
    """Bytes a record takes in the heap: header, key, value, the MAC if
    ``signed``, zeros up to the next multiple of 8."""
    return (HEAD_BYTES + klen + vlen + (MAC_BYTES if signed else 0) + 7) & ~7


class Entry(NamedTuple):
    """A stored value with its metadata, as returned by ``get_entry``."""

    value: bytes
    flags: int
    mtime_ns: int
    expire_ns: int | None


# ------------------------------------------------------------------ build
_PACK_CHECKED_HEAD = CHECKED_HEAD.pack
_KF_STR = layout.KF_STR
INLINE_VALUE = 1024  # values up to this size are copied into the built record


def build(secret: bytes | None, kb: bytes, kf: int, data: bytes | memoryview, exp: int,
          flags: int) -> tuple[bytes, bytes | memoryview, int, bytes | None, int]:  # fmt: skip
    """A record built before the writer lock is taken, so that the lock is
    held only to place it: (its bytes from OFF_CHECKED on, the value if it
    is placed separately (else b""), the checksum, the MAC or None, the
    record's size). The writer stores the checksum at 0, the bytes at
    OFF_CHECKED, then the value and the MAC after them.

    A small value is copied into the record's bytes (one store under the
    lock); a large one is not copied twice: the checksum streams over the
    parts and the value is placed as it is."""
    rkf = (kf & _KF_STR) | (KF_SIGNED if secret else 0)
    body = _PACK_CHECKED_HEAD(exp, len(kb), len(data), flags, rkf, MAGIC, 0)
    body += kb
    # size(), written out: every put runs this
    rec_len = (HEAD_BYTES + len(kb) + len(data) + (MAC_BYTES if secret else 0) + 7) & ~7
    if len(data) <= INLINE_VALUE:
        body += data
        return body, b"", xxh3_64_intdigest(body), mac(secret, body) if secret else None, rec_len
    h = xxh3_64(body)
    h.update(data)
    return body, data, h.intdigest(), mac(secret, body + data) if secret else None, rec_len


def mac(secret: bytes, data: bytes | memoryview) -> bytes:
    """The keyed hash that signs a record when the table has a secret."""
    return hashlib.blake2b(data, key=secret, digest_size=MAC_BYTES, person=b"mmcache-rec-v1").digest()


# ------------------------------------------------------------ parse, check
_HEAD = HEAD.unpack_from
_LOC = layout.SLOT_LOC.unpack_from


def mac_ok(g: Generation, seg: int, off: int, end: int, rkf: int, secret: bytes | None) -> bool:
    """True unless ``secret`` is set and the record is unsigned or forged."""
    if secret is None:
        return True
    if not rkf & KF_SIGNED:
        return False
    mv = g.heap.view(seg, end + MAC_BYTES)
    if mv is None:
        return False
    return hmac.compare_digest(bytes(mv[end : end + MAC_BYTES]), mac(secret, mv[off + OFF_CHECKED : end]))


def read_record(g: Generation, o: int, verify: bool = True) -> tuple[Any, ...] | None:
    """(seg, off, exp, klen, vlen, flags, rkf, size) of slot ``o``'s record,
    or None if it cannot be read or does not check out. Its key starts at
    ``off + OFF_KEY``, its value ``klen`` bytes later."""
    seg, off = _LOC(g.idx, o + g.params.key_size + layout.OFF_SLOT_LOC)
    mv = g.heap.view(seg, off + HEAD_BYTES)
    if mv is None or off < layout.SEG_HEADER_BYTES:
        return None
    csum, exp, klen, vlen, flags, rkf, magic, _ = _HEAD(mv, off)
    end = off + OFF_KEY + klen + vlen
    if magic != MAGIC or end > len(mv) and (mv := g.heap.view(seg, end)) is None:
        return None
    if verify and xxh3_64_intdigest(mv[off + OFF_CHECKED : end]) != csum:
        return None
    return seg, off, exp, klen, vlen, flags, rkf, size(klen, vlen, rkf & KF_SIGNED)


def record_key(g: Generation, o: int) -> bytes | None:
    r = read_record(g, o)
    if r is None:
        return None
    seg, off, _e, klen, *_ = r
    start = off + OFF_KEY
    mm = g.heap.mapped(seg, start + klen)  # (see Heap.mapped: not heap.maps)
    return None if mm is None else mm[start : start + klen]


def is_expired(g: Generation, o: int, now: int | None = None) -> bool:
    r = read_record(g, o, verify=False)
    if r is None:
        return True  # unreadable counts as gone: evict / overwrite it first
    exp: int = r[2]
    return bool(exp) and exp <= (now if now is not None else time.time_ns())


def slot_record_size(g: Generation, o: int) -> int:
    """Padded size of slot ``o``'s record, 0 if it cannot be read."""
    r = read_record(g, o, verify=False)
    return 0 if r is None else r[7]


def size_at(g: Generation, o: int) -> int:
    """``slot_record_size`` for the writer: the header read straight from
    the mapped heap when the map reaches it (the common case); only the
    magic is checked there."""
    seg, off = _LOC(g.idx, o + g.key_size + layout.OFF_SLOT_LOC)
    try:
        _c, _e, klen, vlen, _f, rkf, magic, _ = _HEAD(g.heap.views[seg], off)
    except (IndexError, TypeError, struct.error):
        return slot_record_size(g, o)
    return size(klen, vlen, rkf & KF_SIGNED) if magic == MAGIC else 0
