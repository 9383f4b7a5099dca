"""Slot-level steps of a mutation, under the writer lock: find a key's
slot, take a slot out (tombstone and roster), note a change for a
concurrent rebuild, and the recorded size of a slot's record. The writer
(``writer``) strings them together; a repair (``repair.fix``) recounts
what a writer killed among them left.
"""

from __future__ import annotations

import mmap

from . import layout, record
from .generation import Generation

_U32 = layout.U32.unpack_from
_U32_PACK = layout.U32.pack_into
_HB = layout.HEADER_BYTES
_KF_HASHED = layout.KF_HASHED
_EMPTY = layout.EMPTY
_OFF_RECLEN = layout.OFF_SLOT_RECLEN
_OFF_LOGGING = layout.OFF_LOGGING
_OFF_LOG = layout.OFF_LOG
_OFF_LOG_ENTRIES = layout.OFF_LOG_ENTRIES
_LOG_CAP = layout.LOG_CAP


def find(g: Generation, kb: bytes, kf: int, probe: bytes, h: int) -> tuple[int, int]:
    """(offset of the slot holding this key or -1, offset of the first free slot)."""
    mm, n, ss, K = g.idx, g.nslots, g.slot_size, g.key_size
    span = K + 3
    i = h % n
    o = _HB + i * ss
    if mm[o : span + o] == probe:
        if not kf & _KF_HASHED:
            return o, -1  # the common case of a key stored: in its home slot
    elif mm[o + K] == _EMPTY:
        return -1, o  # the common case of a new key: its home slot is free
    free = -1
    for _ in range(n):
        if mm[o : span + o] == probe and (not kf & layout.KF_HASHED or record.record_key(g, o) in (kb, None)):
            return o, free
        st = mm[o + K]
        if st == layout.EMPTY:
            return -1, (o if free < 0 else free)
        if st == layout.DELETED and free < 0:
            free = o
        i += 1
        o += ss
        if i == n:
            i, o = 0, layout.HEADER_BYTES
    return -1, free


def log_change(mm: mmap.mmap, slot: int) -> None:
    """Note for a concurrent rebuild that ``slot`` changed (see _layout's log)."""
    n = _U32(mm, _OFF_LOG)[0]
    if n < _LOG_CAP:
        _U32_PACK(mm, _OFF_LOG_ENTRIES + 4 * n, slot)
    if n <= _LOG_CAP:
        _U32_PACK(mm, _OFF_LOG, n + 1)


def recorded_size(g: Generation, o: int) -> int:
    """Padded size of the record slot ``o`` points at: the slot's record
    length field, or (0 there) the record's own header."""
    n: int = _U32(g.idx, o + g.key_size + _OFF_RECLEN)[0]
    return n if 0 < n <= g.heap.max_segment_bytes else record.size_at(g, o)


def bump_seq(mm: mmap.mmap) -> None:
    (seq,) = layout.U64.unpack_from(mm, layout.OFF_WRITE_SEQ)
    layout.U64.pack_into(mm, layout.OFF_WRITE_SEQ, seq + 1)


def remove_slot(g: Generation, o: int) -> None:
    """Tombstone slot ``o`` and take it out of the roster (swap with the last).

    If the slot's roster link does not check out (damaged files), the dirty
    flag is left set so that the caller's ``done`` repairs the roster."""
    mm, K, ss = g.idx, g.params.key_size, g.params.slot_size
    size = recorded_size(g, o)
    occ, dele, hwm = layout.COUNTERS.unpack_from(mm, layout.OFF_COUNTERS)
    pos = layout.U32.unpack_from(mm, o + K + layout.OFF_SLOT_ROSTER)[0]
    slot = (o - layout.HEADER_BYTES) // ss + 1
    mm[o + K] = layout.DELETED
    if mm[_OFF_LOGGING]:
        log_change(mm, slot)
    at = layout.ROSTER_HEADER_BYTES + 4 * pos
    linked = 0 <= pos < occ and layout.U32.unpack_from(g.roster, at)[0] == slot
    if linked:
        last = occ - 1
        if pos < last:
            moved = layout.U32.unpack_from(g.roster, layout.ROSTER_HEADER_BYTES + 4 * last)[0]
            if 1 <= moved <= g.nslots:
                layout.U32.pack_into(g.roster, layout.ROSTER_HEADER_BYTES + 4 * pos, moved)
                layout.U32.pack_into(mm, layout.slot_offset(moved, ss) + K + layout.OFF_SLOT_ROSTER, pos)
                if mm[_OFF_LOGGING]:  # its roster position changed
                    log_change(mm, moved)
            else:
                linked = False
    layout.COUNTERS.pack_into(mm, layout.OFF_COUNTERS, max(occ - 1, 0), dele + 1, hwm)
    live, dead = layout.BYTES.unpack_from(mm, layout.OFF_BYTES)
    layout.BYTES.pack_into(mm, layout.OFF_BYTES, max(live - size, 0), dead + size)
    if not linked:
        g.needs_repair = True
