"""The two ways to fill a new generation from the current one.

``Builder`` rebuilds: every live entry is re-inserted into a fresh index
(tombstones and expired entries dropped, the size may change) and its
record copied into a fresh heap. ``HeapCopier`` compacts: the new index
starts as a byte copy of the old one, every slot stays where it is, and only
the records move (about a third of the work per entry: no hashing, probing
or roster building). Both run without the writer lock while other processes
write (see ``_rebuild``), and catch up with what the change log names.
"""

from __future__ import annotations

import array
import itertools
import struct
import time
from collections.abc import Callable, Collection, Iterable
from typing import Protocol, cast

from xxhash import xxh3_64_intdigest

from .. import _native
from . import generation, layout, record
from .fs import populate
from .generation import Generation
from .heap import Heap

SKIP = 0xFFFFFFFF  # new_of_old marker: the record was expired or unreadable


def _fault_in(ng: Generation) -> None:
    """The new files are fresh fallocated space: fault them in at once
    rather than page by page in the copy loop (see _fs.populate); the heap
    too as it grows, until ``finish`` (puts then grow it under the lock)."""
    populate(ng.idx, 0, len(ng.idx))
    populate(ng.roster, 0, len(ng.roster))
    ng.heap.prefault = True


def _mapped(heap: Heap, seg: int) -> tuple[memoryview | None, int]:
    """Segment ``seg`` as this process maps it now, and its length
    ((None, -1): not mapped)."""
    view = heap.views[seg] if seg < len(heap.views) else None
    return view, -1 if view is None else len(view)


def _destination(heap: Heap, seg: int) -> tuple[memoryview | None, int]:
    """The new heap's segment ``seg`` as this process maps it now (None: not
    mapped), and how far a copy may write into it: its map or the segment
    size cap, the smaller."""
    dst, n = _mapped(heap, seg)
    return dst, min(n, heap.max_segment_bytes)


class _Filling(Protocol):
    seg: int  # the new heap's segment being filled
    failed: bool  # stop: the rebuild falls back


def _drive(
    f: _Filling,
    heap: Heap,
    todo: list[int],
    step: Callable[[int, memoryview, int], tuple[int, bool]],
    pure: Callable[[list[int]], None],
) -> None:
    """Both rebuild loops' driver: ``step(i, dst, lim)``, a compiled loop,
    copies from ``todo[i]`` on into the new heap's current segment and
    returns where it stopped and whether it was held there; ``pure`` then
    does that one slot (a segment to map, the destination to roll over, a
    record to look at closer) and the compiled loop goes on after it."""
    i, n = 0, len(todo)
    while i < n and not f.failed:
        dst, lim = _destination(heap, f.seg)
        held = dst is None  # the destination segment is not mapped here: the pure loop maps it
        if not held:
            i, held = step(i, cast(memoryview, dst), lim)
        if held:
            pure(todo[i : i + 1])
            i += 1


_UNREADABLE = (memoryview(b""), 0, 0, 0, 0, -1)


def _remapped_head(heap: Heap, seg: int, off: int) -> tuple[memoryview, int, int, int, int, int]:
    """(segment view, expire_ns, klen, vlen, kflags, magic) of the record at
    ``off`` when our map of its segment does not reach it: mapped anew
    (magic -1 if it cannot be read)."""
    src = heap.view(seg, off + record.HEAD_BYTES)
    if src is None:
        return _UNREADABLE
    _c, exp, klen, vlen, _f, rkf, magic, _ = record.HEAD.unpack_from(src, off)
    return src, exp, klen, vlen, rkf, magic


def _remapped(heap: Heap, seg: int, src: memoryview | None, off: int,
              size: int) -> tuple[memoryview | None, int]:  # fmt: skip
    """``_mapped`` for a record of ``size`` bytes at ``off`` that our map
    ``src`` of its segment does not reach: mapped anew; (None, -1) if it
    cannot be read (a segment not mapped here, a damaged view, a length of 0
    (a table written without record lengths) or a place in the segment's header)."""
    if src is None or not size or off < layout.SEG_HEADER_BYTES:
        return None, -1
    view = heap.view(seg, off + size)
    return view, -1 if view is None else len(view)


class Builder:
    """Fills an unpublished generation (no reader can see it yet)."""

    def __init__(self, g: Generation, ng: Generation) -> None:
        self.g, self.ng = g, ng
        self.seg, self.tail = 0, layout.SEG_HEADER_BYTES
        self.occ = self.dele = self.hwm = self.live = self.expired = self.written = 0
        self.now = time.time_ns()
        # per old slot number: the new slot number (or 0 / SKIP), and the
        # (segment << 32 | offset) of the record that was copied for it
        self.new_of_old = array.array("I", bytes(4 * (g.nslots + 1)))
        self.copied_loc = array.array("Q", bytes(8 * (g.nslots + 1)))
        self.visited: list[Collection[int]] = []  # every collection of slots given to copy_all
        self.failed = False  # (a Builder skips what it cannot read: never set)
        self.unpack_slot = g.slot_struct.unpack_from
        self.pack_slot = ng.slot_struct.pack_into
        _fault_in(ng)

    def copy_all(self, slots: Collection[int]) -> None:
        """Copy each old slot's record and slot into the new generation: the
        compiled loop (_native.build_records) over batches of slots where it
        exists, and ``_copy`` for each slot it leaves (a segment to map, a
        record past our map of it, the destination to roll over)."""
        self.visited.append(slots)
        build = _native.build_records
        if build is None:
            self._copy(slots)
            return
        todo = slots if type(slots) is list else list(slots)
        g, ng = self.g, self.ng
        fixed = (g.idx, g.slot_size, g.params.key_size, todo)
        new = (ng.idx, ng.slot_size, ng.nslots, g.roster, g.rec_base - 1, ng.roster, ng.rec_base - 1,
               self.new_of_old, self.copied_loc)  # fmt: skip

        def step(i: int, dst: memoryview, lim: int) -> tuple[int, bool]:
            counts = (self.occ, self.hwm, self.live, self.expired, self.dele)
            live = self.live
            i, self.tail, self.occ, self.hwm, self.live, self.expired, self.dele, held = build(
                *fixed, i, g.heap.views, *new, dst, lim, self.seg, self.tail, self.now, counts
            )
            self.written += self.live - live
            return i, held

        _drive(self, ng.heap, todo, step, self._copy)

    def _copy(self, slots: Iterable[int]) -> None:
        """Copy each old slot's record and slot into the new generation.

        The record is copied verbatim, checksum (and MAC) included, without
        recomputing it: readers check every record anyway, so a damaged one
        stays a miss. The new slot's key and hash come from the old slot.
        One loop with everything in locals: this is most of a compaction
        (a record our maps do not reach yet is read by a function of its own)."""
        g, ng = self.g, self.ng
        K = g.params.key_size
        # (a segment not mapped here is None: indexing it raises TypeError, handled below)
        om, oss, views = g.idx, g.slot_size, cast("list[memoryview]", g.heap.views)
        nm, n, nss = ng.idx, ng.nslots, ng.slot_size
        orec, nrec, orb, nrb = g.recency, ng.recency, g.rec_base - 1, ng.rec_base - 1
        roster = ng.roster
        nheap = ng.heap
        unpack_slot, pack_slot = self.unpack_slot, self.pack_slot
        head, size, pack_u32 = record.HEAD.unpack_from, record.size, layout.U32.pack_into
        new_of_old, copied_loc = self.new_of_old, self.copied_loc
        OCC, DEL, MAGIC = layout.OCCUPIED, layout.DELETED, record.MAGIC
        SIGNED, HASHED = record.KF_SIGNED, layout.KF_HASHED
        HB, SH, RHB = layout.HEADER_BYTES, layout.SEG_HEADER_BYTES, layout.ROSTER_HEADER_BYTES
        now = self.now
        nseg, tail = self.seg, self.tail
        occ, hwm, live, expired, dele = self.occ, self.hwm, self.live, self.expired, self.dele
        dst, dlim = _destination(nheap, nseg)
        for slot in slots:
            o = HB + (slot - 1) * oss
            skey, state, kflags, sklen, _pos, seg, off, mtime, _len, _ = unpack_slot(om, o)
            copied_loc[slot] = seg << 32 | off
            new_of_old[slot] = SKIP
            if state != OCC or off < SH:
                continue
            try:
                src = views[seg]
                _c, exp, klen, vlen, _f, rkf, magic, _ = head(src, off)
            except (IndexError, TypeError, struct.error):  # not mapped here, or mapped too short
                src, exp, klen, vlen, rkf, magic = _remapped_head(g.heap, seg, off)
            if magic != MAGIC:
                continue
            if 0 < exp <= now:
                expired += 1
                continue
            rec_len = size(klen, vlen, rkf & SIGNED)
            if off + rec_len > len(src) and (src := g.heap.view(seg, off + rec_len)) is None:
                continue
            end = tail + rec_len
            if end > dlim:
                nseg, tail, dst = nheap.append(nseg, tail, rec_len)
                dlim = min(len(dst), nheap.max_segment_bytes)
                end = tail + rec_len
            dst[tail:end] = src[off : off + rec_len]  # type: ignore[index]
            key = skey[:sklen]
            h = int.from_bytes(key[:8], "little") if kflags & HASHED else xxh3_64_intdigest(key)
            i = h % n
            no = HB + i * nss
            while nm[no + K] == OCC:
                i += 1
                no += nss
                if i == n:
                    i, no = 0, HB
            if nm[no + K] == DEL:
                dele -= 1
            pack_slot(nm, no, skey, OCC, kflags, sklen, occ, nseg, tail, mtime, rec_len, 0)
            nrec[nrb + i + 1] = orec[orb + slot]
            pack_u32(roster, RHB + 4 * occ, i + 1)
            occ += 1
            tail = end
            if i >= hwm:
                hwm = i + 1
            live += rec_len
            new_of_old[slot] = i + 1
        self.written += live - self.live
        self.seg, self.tail = nseg, tail
        self.occ, self.hwm, self.live, self.expired, self.dele = occ, hwm, live, expired, dele

    def drop(self, slot: int) -> None:
        """Undo the copy made for old ``slot`` (its slot has changed since)."""
        nslot = self.new_of_old[slot]
        self.new_of_old[slot] = 0
        if nslot in (0, SKIP):
            return
        ng, K = self.ng, self.ng.params.key_size
        no = layout.slot_offset(nslot, ng.slot_size)
        pos = layout.U32.unpack_from(ng.idx, no + K + layout.OFF_SLOT_ROSTER)[0]
        last = self.occ - 1
        moved = layout.U32.unpack_from(ng.roster, layout.ROSTER_HEADER_BYTES + 4 * last)[0]
        layout.U32.pack_into(ng.roster, layout.ROSTER_HEADER_BYTES + 4 * pos, moved)
        moved_at = layout.slot_offset(moved, ng.slot_size)
        layout.U32.pack_into(ng.idx, moved_at + K + layout.OFF_SLOT_ROSTER, pos)
        self.live -= record.slot_record_size(ng, no)
        ng.idx[no + K] = layout.DELETED
        self.occ -= 1
        self.dele += 1

    def catch_up(self, changed: Iterable[int] | None) -> None:
        """Bring the copy up to date with the old slots in ``changed`` (None:
        every slot copied so far and every live one).

        A slot named by the log is always dropped and copied afresh, even if it
        points at the record that was copied: a copy made without the lock may
        have read the slot mid-change (a new key over an old key's tombstone),
        and the change that tore it is in the log taken after that read. Without
        a log, a slot still pointing at its copied record is kept."""
        g = self.g
        K, ss, mm = g.params.key_size, g.slot_size, g.idx
        OCC, HB = layout.OCCUPIED, layout.HEADER_BYTES
        copied_loc, nslots = self.copied_loc, g.nslots
        logged = changed is not None
        if changed is None:
            occ = layout.COUNTERS.unpack_from(mm, layout.OFF_COUNTERS)[0]
            changed = itertools.chain(*self.visited, generation.roster_snapshot(g, occ))
        fresh = []
        for slot in set(changed):
            if not 1 <= slot <= nslots:
                continue
            o = HB + (slot - 1) * ss
            occupied = mm[o + K] == OCC
            if occupied and not logged:
                seg, off = layout.SLOT_LOC.unpack_from(mm, o + K + layout.OFF_SLOT_LOC)
                if (seg << 32 | off) == copied_loc[slot] and self.new_of_old[slot]:
                    continue
            self.drop(slot)
            if occupied:
                fresh.append(slot)
        self.copy_all(fresh)

    def finish(self, next_gen: int) -> None:
        self.ng.heap.prefault = False  # from now on puts grow it, under the lock
        created = layout.HOT.unpack_from(self.ng.idx, layout.OFF_HOT)[8]
        # Records dropped in phase 2 stay in the new heap: count them as dead.
        dead = self.written - self.live
        layout.HOT.pack_into(self.ng.idx, layout.OFF_HOT, self.occ, self.dele, self.hwm, self.seg, 0,
                        self.tail, self.live, dead, created, 0)  # fmt: skip
        layout.BUILD.pack_into(self.ng.idx, layout.OFF_BUILD, next_gen, 0, 0, 0)


class HeapCopier:
    """Compacts a table into a same-size generation, every slot in its place.

    The new index starts as a byte copy of the old one (taken without the
    lock, so some slots may be mid-change: those are in the change log and
    get copied again); then each live slot's record is copied into the new
    heap and the slot pointed at the copy. Tombstones and expired entries
    are kept (a ``Builder`` drops them), and a record that does not check
    out sets ``failed``: the caller then rebuilds with a ``Builder`` instead,
    which drops it.
    """

    def __init__(self, g: Generation, ng: Generation) -> None:
        if (g.nslots, g.slot_size, g.key_size) != (ng.nslots, ng.slot_size, ng.key_size):
            raise ValueError("a HeapCopier keeps the table's size and slot layout")
        self.g, self.ng = g, ng
        self.seg, self.tail = 0, layout.SEG_HEADER_BYTES
        self.written = self.expired = 0
        self.failed = False
        _fault_in(ng)

    @property
    def occ(self) -> int:
        """Live entries: the old table's (the same slots, the same entries)."""
        occ: int = layout.COUNTERS.unpack_from(self.g.idx, layout.OFF_COUNTERS)[0]
        return occ

    def copy_all(self, slots: Collection[int]) -> None:
        """Phase 1: the slots and recency stamps as bytes, then the records
        of ``slots`` (the live ones when the rebuild started)."""
        self._copy_index()
        self._move(slots)

    def _copy_index(self) -> None:
        g, ng = self.g, self.ng
        end = g.index_bytes
        ng.idx[layout.HEADER_BYTES : end] = g.idx[layout.HEADER_BYTES : end]
        base, n = g.rec_base, g.nslots
        ng.recency[base : base + n] = g.recency[base : base + n]

    def catch_up(self, changed: Iterable[int] | None) -> None:
        """Copy again each slot the log names, as it is now, and move its
        record (None: the log overflowed, so copy the whole index again and
        move every live slot's record)."""
        if changed is None:
            self._copy_index()
            self._move(range(1, self.g.nslots + 1))
            return
        om, nm, ss, HB = self.g.idx, self.ng.idx, self.g.slot_size, layout.HEADER_BYTES
        nslots = self.g.nslots
        slots = [slot for slot in set(changed) if 1 <= slot <= nslots]
        for slot in slots:
            o = HB + (slot - 1) * ss
            nm[o : o + ss] = om[o : o + ss]
        self._move(slots)

    def _move(self, slots: Iterable[int]) -> None:
        """Copy the record each OCCUPIED slot of the new index still points at
        in the old heap, and point the slot at the copy: the compiled loop
        (_native.move_records) over batches of slots where it exists, and
        ``_move_pure`` for each slot it leaves (a segment to map, the
        destination to roll over, a record that does not check out)."""
        move = _native.move_records
        if move is None:
            self._move_pure(slots)
            return
        todo = slots if type(slots) is list else list(slots)
        g, ng = self.g, self.ng
        nm, K, ss, views, nheap = ng.idx, g.key_size, g.slot_size, g.heap.views, ng.heap

        def step(i: int, dst: memoryview, lim: int) -> tuple[int, bool]:
            i, self.tail, written, held = move(nm, todo, i, K, ss, views, dst, lim, self.seg, self.tail)
            self.written += written
            return i, held

        _drive(self, nheap, todo, step, self._move_pure)

    def _move_pure(self, slots: Iterable[int]) -> None:
        """Copy the record each OCCUPIED slot of the new index still points
        at in the old heap, and point the slot at the copy. One loop with
        everything in locals: this is most of a compaction. The slot's record
        length says how much to copy; the record itself is not decoded, only
        its magic byte looked at (a damaged length or body stays as
        detectable in the copy as in the original: readers check every
        record, and verify() compares lengths with headers)."""
        g, ng = self.g, self.ng
        nm, K, ss, heap = ng.idx, g.key_size, g.slot_size, g.heap
        nheap = ng.heap
        loc_len = layout.SLOT_LOC_MTIME_LEN.unpack_from
        pack_loc = layout.SLOT_LOC.pack_into
        OCC, MAGIC, HB, SH = layout.OCCUPIED, record.MAGIC, layout.HEADER_BYTES, layout.SEG_HEADER_BYTES
        at_loc, at_magic = K + layout.OFF_SLOT_LOC, record.OFF_MAGIC
        nseg, tail, written = self.seg, self.tail, self.written
        dst, dlim = _destination(nheap, nseg)
        sseg, src, slim = -1, None, -1
        for slot in slots:
            o = HB + (slot - 1) * ss
            if nm[o + K] != OCC:
                continue
            seg, off, _mtime, size = loc_len(nm, o + at_loc)
            if seg != sseg:
                sseg = seg
                src, slim = _mapped(heap, seg)
            rend = off + size
            if rend > slim or not size or off < SH:
                src, slim = _remapped(heap, seg, src, off, size)
                if src is None:
                    self.failed = True  # unreadable, or a table written without record lengths
                    break
            if src[off + at_magic] != MAGIC:  # type: ignore[index]
                self.failed = True
                break
            end = tail + size
            if end > dlim:
                nseg, tail, dst = nheap.append(nseg, tail, size)
                dlim = min(len(dst), nheap.max_segment_bytes)
                end = tail + size
            dst[tail:end] = src[off:rend]  # type: ignore[index]
            pack_loc(nm, o + at_loc, nseg, tail)
            tail = end
            written += size
        self.seg, self.tail, self.written = nseg, tail, written

    def finish(self, next_gen: int) -> None:
        """Under the lock, at commit: the old header's counts and roster."""
        g, ng = self.g, self.ng
        ng.heap.prefault = False
        occ, dele, hwm = layout.COUNTERS.unpack_from(g.idx, layout.OFF_COUNTERS)
        live = layout.BYTES.unpack_from(g.idx, layout.OFF_BYTES)[0]
        RHB = layout.ROSTER_HEADER_BYTES
        ng.roster[RHB : RHB + 4 * occ] = g.roster[RHB : RHB + 4 * occ]
        created = layout.HOT.unpack_from(ng.idx, layout.OFF_HOT)[8]
        layout.HOT.pack_into(ng.idx, layout.OFF_HOT, occ, dele, hwm, self.seg, 0, self.tail, live,
                        max(self.written - live, 0), created, 0)  # fmt: skip
        layout.BUILD.pack_into(ng.idx, layout.OFF_BUILD, next_gen, 0, 0, 0)
