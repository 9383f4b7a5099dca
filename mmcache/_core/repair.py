"""Repair of one generation's numbers, the part a writer may do itself.

A writer killed mid-update leaves the dirty flag set; the next lock holder
recounts the header's counters, the roster and the byte counts from the
slots (``fix``). A damaged heap segment cannot be fixed here: ``fix`` says
so and the caller escalates (the writer answers ``Room(PURGE)``, the table
rebuilds; ``maintenance.repair`` rebuilds itself). Callers hold the lock.
"""

from __future__ import annotations

from ..keys import slot_key
from . import layout
from .generation import Generation, heal_numbers
from .record import OFF_KEY, read_record, slot_record_size


def scan(g: Generation) -> tuple[list[int], int, int, list[str], list[int]]:
    """(live slot offsets, tombstones, highest used slot, problems, bad slots)."""
    mm, ss, K, n = g.idx, g.params.slot_size, g.params.key_size, g.nslots
    live: list[int] = []
    bad: list[int] = []
    problems: list[str] = []
    dele = hwm = 0
    for slot in range(1, n + 1):
        o = layout.slot_offset(slot, ss)
        st = mm[o + K]
        if st == layout.EMPTY:
            continue
        hwm = slot
        if st == layout.DELETED:
            dele += 1
            continue
        if st != layout.OCCUPIED:
            problems.append(f"slot {slot}: unknown state {st}")
            bad.append(o)
            continue
        r = read_record(g, o)
        if r is None:
            problems.append(f"slot {slot}: record unreadable or checksum mismatch")
            bad.append(o)
            continue
        seg, off, _e, klen, _v, _f, rkf, _ = r
        start = off + OFF_KEY
        kb = g.heap.maps[seg][start : start + klen]
        skey, hashed, _h = slot_key(kb, K)
        kf, sklen = mm[o + K + 1], mm[o + K + 2]
        if mm[o : o + sklen] != skey or sklen != len(skey) or kf != hashed | (rkf & layout.KF_STR):
            problems.append(f"slot {slot}: slot key does not match its record")
            bad.append(o)
            continue
        live.append(o)
    return live, dele, hwm, problems, bad


def _damaged(g: Generation) -> list[int]:
    """The heap segments up to the tail whose header is missing or damaged."""
    last = layout.HEAP_POS.unpack_from(g.idx, layout.OFF_HEAP_SEG)[0]
    return [seg for seg in range(min(last, 1 << 16) + 1) if g.heap.view(seg, layout.SEG_HEADER_BYTES) is None]


def damaged_segments(g: Generation) -> list[str]:
    return [f"heap segment {seg}: missing or damaged header" for seg in _damaged(g)]


def fix(g: Generation) -> bool:
    """Make counters, roster and bytes match the slots; drop damaged slots.
    True if a heap segment is damaged: then only a rebuild helps (the
    caller's to do), and ``g.heap.damaged`` names those segments."""
    live, dele, hwm, _p, bad = scan(g)
    mm, K, ss = g.idx, g.params.key_size, g.params.slot_size
    mm[layout.OFF_DIRTY] = 1
    heal_numbers(g)
    if mm[layout.OFF_LOGGING]:  # a concurrent rebuild must look at every slot again
        layout.U32.pack_into(mm, layout.OFF_LOG, layout.LOG_CAP + 1)
    for o in bad:
        mm[o + K] = layout.DELETED
    live_bytes = 0
    for pos, o in enumerate(live):
        slot = (o - layout.HEADER_BYTES) // ss + 1
        layout.U32.pack_into(g.roster, layout.ROSTER_HEADER_BYTES + 4 * pos, slot)
        layout.U32.pack_into(mm, o + K + layout.OFF_SLOT_ROSTER, pos)
        size = slot_record_size(g, o)
        layout.U32.pack_into(mm, o + K + layout.OFF_SLOT_RECLEN, size)
        live_bytes += size
    layout.COUNTERS.pack_into(mm, layout.OFF_COUNTERS, len(live), dele + len(bad), hwm)
    seg, _d, tail = layout.HEAP_POS.unpack_from(mm, layout.OFF_HEAP_SEG)
    if not (seg < 1 << 20 and layout.SEG_HEADER_BYTES <= tail <= g.params.max_segment_bytes):
        seg, tail = 0, layout.SEG_HEADER_BYTES  # damaged: found from the live records alone
    # A writer killed after publishing a slot but before moving the heap
    # tail leaves a live record past the tail: move the tail past it, so that
    # no record a slot (or a reader's memo) points at is ever overwritten.
    for o in live:
        rseg, roff = layout.SLOT_LOC.unpack_from(mm, o + K + layout.OFF_SLOT_LOC)
        rend = roff + slot_record_size(g, o)
        if (rseg, rend) > (seg, tail):
            seg, tail = rseg, rend
    layout.HEAP_POS.pack_into(mm, layout.OFF_HEAP_SEG, seg, 1, tail)
    used = seg * g.params.max_segment_bytes + tail
    layout.BYTES.pack_into(mm, layout.OFF_BYTES, live_bytes, max(used - live_bytes, 0))
    mm[layout.OFF_DIRTY] = 0
    g.heap.damaged.update(_damaged(g))
    return bool(g.heap.damaged)
