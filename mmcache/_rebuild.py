"""Rebuilds: write a new generation beside the old one and rename it in.

Two ways, one builder:

- ``rebuild`` runs entirely under the writer lock. Used where a put cannot
  go on without it (tombstones fill the table, the table grows) and for
  ``clear``.
- ``rebuild_concurrently`` holds the lock only at both ends. Phase 0 (lock):
  take a unique generation number, register as the builder, copy the roster,
  and set LOGGING: from then on every writer appends the number of each slot
  it changes to a log in the index header. Phase 1 (no lock): copy every
  snapshot entry's record into the new files, noting which record (segment,
  offset) each slot pointed at; then, still without the lock, take the log
  (a moment under the lock) and recopy the slots it names, until few
  changes come in per pass. Phase 2 (lock): recopy what the last log names
  and commit. Writers wait only for phase 0, the takes and phase 2, which
  cost about the changes since the last pass rather than a scan of every
  slot. Records are immutable once published, so reading them without the
  lock is safe; a slot read mid-update is in a later log and recopied. A
  log that overflows means "look at every slot" (the old full scan).

Generation numbers are allocated from ``next_gen`` in the header, so a
locked rebuild that runs while a concurrent one is in phase 1 picks another
number; the concurrent one then finds its base generation retired and drops
its files.
"""

from __future__ import annotations

import array
import glob
import itertools
import os
import time
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

from xxhash import xxh3_64_intdigest

from . import _layout as L
from . import _maintenance as M
from . import _write as W
from ._fs import populate
from ._generation import Generation, Params
from ._shared import alive
from .errors import CacheFullError

if TYPE_CHECKING:
    from ._shared import SharedTable
    from .table import MmapCache

SKIP = 0xFFFFFFFF  # new_of_old marker: the record was expired or unreadable


class Builder:
    """Fills an unpublished generation (no reader can see it yet)."""

    def __init__(self, g: Generation, ng: Generation) -> None:
        self.g, self.ng = g, ng
        self.seg, self.tail = 0, L.SEG_HEADER_BYTES
        self.occ = self.dele = self.hwm = self.live = self.expired = self.written = 0
        self.now = time.time_ns()
        # per old slot number: the new slot number (or 0 / SKIP), and the
        # (segment << 32 | offset) of the record that was copied for it
        self.new_of_old = array.array("I", bytes(4 * (g.nslots + 1)))
        self.copied_loc = array.array("Q", bytes(8 * (g.nslots + 1)))
        self.visited: list[Collection[int]] = []  # every collection of slots given to copy_all
        self.unpack_slot = g.slot_struct.unpack_from
        self.pack_slot = ng.slot_struct.pack_into
        # The new files are fresh fallocated space: fault them in at once
        # rather than page by page in the copy loop (see _fs.populate).
        populate(ng.idx, 0, len(ng.idx))
        populate(ng.roster, 0, len(ng.roster))
        ng.heap.prefault = True

    def copy_all(self, slots: Collection[int]) -> None:
        """Copy each old slot's record and slot into the new generation.

        The record is copied verbatim, checksum (and MAC) included, without
        recomputing it: readers check every record anyway, so a damaged one
        stays a miss. The new slot's key and hash come from the old slot.
        One loop with everything in locals: this is most of a compaction."""
        self.visited.append(slots)
        g, ng = self.g, self.ng
        K = g.params.key_size
        om, oss, views = g.idx, g.slot_size, g.heap.views
        nm, n, nss = ng.idx, ng.nslots, ng.slot_size
        orec, nrec, orb, nrb = g.recency, ng.recency, g.rec_base - 1, ng.rec_base - 1
        roster = ng.roster
        nheap = ng.heap
        unpack_slot, pack_slot = self.unpack_slot, self.pack_slot
        rec_head, pack_u32 = L.RECORD.unpack_from, L.U32.pack_into
        new_of_old, copied_loc = self.new_of_old, self.copied_loc
        OCC, DEL, MAGIC, SIGNED, HASHED = L.OCCUPIED, L.DELETED, L.REC_MAGIC, L.KF_SIGNED, L.KF_HASHED
        HB, RH, SH, RHB = L.HEADER_BYTES, L.RECORD_HEADER, L.SEG_HEADER_BYTES, L.ROSTER_HEADER_BYTES
        now = self.now
        nseg, tail = self.seg, self.tail
        occ, hwm, live, expired, dele = self.occ, self.hwm, self.live, self.expired, self.dele
        nviews = nheap.views
        dst = nviews[nseg] if nseg < len(nviews) else None
        for slot in slots:
            o = HB + (slot - 1) * oss
            skey, state, kflags, sklen, _pos, seg, off, mtime, _len, _ = unpack_slot(om, o)
            copied_loc[slot] = seg << 32 | off
            new_of_old[slot] = SKIP
            if state != OCC or off < SH:
                continue
            src = views[seg] if seg < len(views) else None
            if src is None or off + RH > len(src):
                src = g.heap.view(seg, off + RH)
                if src is None:
                    continue
            _c, exp, klen, vlen, _f, rkf, magic, _ = rec_head(src, off)
            if magic != MAGIC:
                continue
            if exp and exp <= now:
                expired += 1
                continue
            rec_len = (RH + klen + vlen + (16 if rkf & SIGNED else 0) + 7) & ~7
            if off + rec_len > len(src):
                src = g.heap.view(seg, off + rec_len)
                if src is None:
                    continue
            end = tail + rec_len
            if dst is None or end > len(dst) or end > nheap.max_segment_bytes:
                nseg, tail, dst = nheap.append(nseg, tail, rec_len)
                end = tail + rec_len
            dst[tail:end] = src[off : off + rec_len]
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
        no = L.slot_offset(nslot, ng.slot_size)
        pos = L.U32.unpack_from(ng.idx, no + K + L.OFF_SLOT_ROSTER)[0]
        last = self.occ - 1
        moved = L.U32.unpack_from(ng.roster, L.ROSTER_HEADER_BYTES + 4 * last)[0]
        L.U32.pack_into(ng.roster, L.ROSTER_HEADER_BYTES + 4 * pos, moved)
        L.U32.pack_into(ng.idx, L.slot_offset(moved, ng.slot_size) + K + L.OFF_SLOT_ROSTER, pos)
        self.live -= M.slot_record_size(ng, no)
        ng.idx[no + K] = L.DELETED
        self.occ -= 1
        self.dele += 1

    def finish(self, next_gen: int) -> None:
        self.ng.heap.prefault = False  # from now on puts grow it, under the lock
        created = L.HOT.unpack_from(self.ng.idx, L.OFF_HOT)[8]
        # Records dropped in phase 2 stay in the new heap: count them as dead.
        dead = self.written - self.live
        L.HOT.pack_into(self.ng.idx, L.OFF_HOT, self.occ, self.dele, self.hwm, self.seg, 0,
                        self.tail, self.live, dead, created, 0)  # fmt: skip
        L.BUILD.pack_into(self.ng.idx, L.OFF_BUILD, next_gen, 0, 0)


# ----------------------------------------------------------------- files
def _remove(names: list[str]) -> None:
    for name in names:
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass


def generation_files(path: str, heap_path: str, gen: int) -> list[str]:
    names = [L.roster_name(path, gen)]
    names += glob.glob(glob.escape(f"{heap_path}.{gen}.") + "*")
    return names


def orphans(s: SharedTable, keep_gen: int) -> list[str]:
    """Files of other generations and temporary indexes left by killed
    writers, except those of a concurrent rebuild still in progress."""
    next_gen, bpid, bgen = L.BUILD.unpack_from(s.gen.idx, L.OFF_BUILD)
    busy = bgen if bpid and alive(bpid) else -1
    tmp_of_busy = f"{s.path}.rebuild.{bpid}.{busy}"
    doomed = [n for n in glob.glob(glob.escape(s.path) + ".rebuild.*") if n != tmp_of_busy]
    doomed += glob.glob(glob.escape(s.path) + ".new.*")
    for name in glob.glob(glob.escape(s.path) + ".roster.*"):
        gen = name.rsplit(".", 1)[1]
        if gen not in (str(keep_gen), str(busy)):
            doomed.append(name)
    for name in glob.glob(glob.escape(s.heap_path) + ".*.*"):
        gen, _, seg = name[len(s.heap_path) + 1 :].partition(".")
        if gen.isdigit() and seg.isdigit() and int(gen) not in (keep_gen, busy):
            doomed.append(name)
    return doomed


def remove_orphans(s: SharedTable, keep_gen: int) -> list[str]:
    """Unlink ``orphans``. Only under the lock: no live writer owns any of them."""
    doomed = orphans(s, keep_gen)
    _remove(doomed)
    return doomed


def cleanup_on_open(s: SharedTable) -> None:
    """Remove leftovers of killed writers if the lock is free right now (an
    opener never waits for a rebuild in progress just to tidy up)."""
    if orphans(s, s.gen.gen) and s.lock.try_acquire():
        try:
            remove_orphans(s, s.current_for_write().gen)
        finally:
            s.lock.release()


def _alloc_gen(g: Generation) -> int:
    """A generation number no other rebuild of this table has used."""
    next_gen, bpid, bgen = L.BUILD.unpack_from(g.idx, L.OFF_BUILD)
    gen: int = max(next_gen, g.gen, bgen) + 1
    L.BUILD.pack_into(g.idx, L.OFF_BUILD, gen, bpid, bgen)
    return gen


def _start(s: SharedTable, g: Generation, new_size: int | None) -> tuple[Generation, str]:
    """Create the new generation's files (under the lock) and map them."""
    p = g.params
    new_p = Params(new_size or p.size, p.slot_size, p.key_size, p.max_segment_bytes)
    new_gen = _alloc_gen(g)
    tmp = f"{s.path}.rebuild.{os.getpid()}.{new_gen}"
    _remove([tmp, *generation_files(s.path, s.heap_path, new_gen)])
    Generation.create(tmp, s.path, s.heap_path, new_p, new_gen, s.mode)
    try:
        return Generation.open(tmp, s.heap_path, s.mode, name=s.path), tmp
    except BaseException:
        _remove([tmp, *generation_files(s.path, s.heap_path, new_gen)])
        raise


def _commit(s: SharedTable, g: Generation, ng: Generation, b: Builder, tmp: str) -> None:
    """Under the lock: publish ``ng`` by renaming its index over the path."""
    next_gen = L.BUILD.unpack_from(g.idx, L.OFF_BUILD)[0]
    b.finish(max(next_gen, ng.gen))
    # No fsync of roster and heap: against kill -9 the page cache is enough
    # (every process shares it), and after a power loss a page that never
    # reached the disk fails its checksum and reads as a miss. Only the header
    # page is forced out, so a table that survives a power loss still opens.
    ng.idx.flush(0, L.HEADER_BYTES)
    # Retire first, then rename: a reader that sees the flag before the rename
    # reopens the same (still valid) files and tries again later; a rebuild
    # killed in between is undone by the next writer.
    g.idx[L.OFF_FLAGS] = g.idx[L.OFF_FLAGS] | L.FLAG_RETIRED
    try:
        os.rename(tmp, s.path)
    except BaseException:
        g.idx[L.OFF_FLAGS] = g.idx[L.OFF_FLAGS] & ~L.FLAG_RETIRED
        raise
    s._adopt(g, ng)
    remove_orphans(s, ng.gen)
    s.local[5] += b.expired
    s.local[6] += 1


# --------------------------------------------------------------- rebuilds
def rebuild(c: MmapCache | None, s: SharedTable, new_size: int | None, keep: bool = True) -> None:
    """The whole rebuild under the writer lock (the caller holds it)."""
    g = W.begin(s)
    occ = L.COUNTERS.unpack_from(g.idx, L.OFF_COUNTERS)[0]
    slots = M.roster_snapshot(g, occ) if keep else array.array("I")
    ng, tmp = _start(s, g, new_size)
    try:
        if len(slots) > W.live_cap(ng):
            raise CacheFullError(f"{len(slots)} live entries do not fit in a table of size {ng.params.size}")
        b = Builder(g, ng)
        b.copy_all(slots)
        _commit(s, g, ng, b, tmp)
    except BaseException:
        _remove([tmp, *generation_files(s.path, s.heap_path, ng.gen)])
        raise


def rebuild_concurrently(c: MmapCache | None, s: SharedTable, new_size: int | None = None) -> bool:
    """Rebuild holding the writer lock only to start and to commit (see the
    module docstring). False if another process's rebuild is in progress
    or ours lost a race with a locked rebuild (nothing changed then)."""
    if _busy(s, s.gen):
        return False
    lock = s.lock
    with lock.hold():
        g = W.begin(s)
        next_gen, bpid, bgen = L.BUILD.unpack_from(g.idx, L.OFF_BUILD)
        if bpid and bpid != os.getpid() and alive(bpid):
            return False
        occ = L.COUNTERS.unpack_from(g.idx, L.OFF_COUNTERS)[0]
        slots = M.roster_snapshot(g, occ)
        if len(slots) > W.live_cap_for(g, new_size):
            raise CacheFullError(f"{len(slots)} live entries do not fit in a table of size {new_size}")
        ng, tmp = _start(s, g, new_size)
        L.BUILD.pack_into(g.idx, L.OFF_BUILD, L.BUILD.unpack_from(g.idx, L.OFF_BUILD)[0], os.getpid(), ng.gen)
        # From here every writer logs the slots it changes (see _layout).
        L.U32.pack_into(g.idx, L.OFF_LOG, 0)
        g.idx[L.OFF_LOGGING] = L.FLAG_LOGGING >> 8
    committed = False
    try:
        b = Builder(g, ng)
        b.copy_all(slots)  # phase 1: no lock
        # Catch up without the lock too, while writers change many slots:
        # each pass takes the log under the lock for a moment and copies
        # what it names, until few changes are left for phase 2.
        for _ in range(CATCH_UP_PASSES):
            with lock.hold():
                if W.begin(s) is not g:
                    return False  # a locked rebuild replaced our base meanwhile
                changed = _take_log(g)
            _catch_up(g, b, changed)
            if changed is not None and len(changed) <= FEW_CHANGES:
                break
        with lock.hold():  # phase 2
            if W.begin(s) is not g:
                return False
            _catch_up(g, b, _take_log(g))
            if b.occ > W.live_cap(ng):
                return False
            g.idx[L.OFF_LOGGING] = 0
            L.BUILD.pack_into(g.idx, L.OFF_BUILD, L.BUILD.unpack_from(g.idx, L.OFF_BUILD)[0], 0, 0)
            _commit(s, g, ng, b, tmp)
            committed = True
            return True
    finally:
        if not committed:
            with lock.hold():
                nxt, bp, _bg = L.BUILD.unpack_from(g.idx, L.OFF_BUILD)
                if bp == os.getpid():
                    L.BUILD.pack_into(g.idx, L.OFF_BUILD, nxt, 0, 0)
                    g.idx[L.OFF_LOGGING] = 0
                _remove([tmp, *generation_files(s.path, s.heap_path, ng.gen)])


CATCH_UP_PASSES = 8  # lock-free catch-up passes at most, before phase 2
FEW_CHANGES = 32  # changes few enough to copy in phase 2, under the lock


def _busy(s: SharedTable, g: Generation) -> bool:
    """Another live process is rebuilding ``g`` (a look without the lock).

    While it does, each put here would ask for a compaction again; this
    answers without the lock, and checks the builder's liveness (a system
    call) at most once per staleness interval."""
    _n, bpid, bgen = L.BUILD.unpack_from(g.idx, L.OFF_BUILD)
    if not bpid:
        return False
    now = time.monotonic_ns()
    seen, until = s.builder_seen
    if seen == (bpid, bgen) and now < until:
        return True
    if bpid == os.getpid() or not alive(bpid):
        return False
    s.builder_seen = ((bpid, bgen), now + s.interval_ns)
    return True


def _take_log(g: Generation) -> array.array[int] | None:
    """The slots writers changed since the last take (None: too many to
    list, look at all), emptying the log. Under the lock."""
    mm = g.idx
    n = L.U32.unpack_from(mm, L.OFF_LOG)[0]
    L.U32.pack_into(mm, L.OFF_LOG, 0)
    if n > L.LOG_CAP:
        return None
    return array.array("I", mm[L.OFF_LOG_ENTRIES : L.OFF_LOG_ENTRIES + 4 * n])


def _catch_up(g: Generation, b: Builder, changed: Iterable[int] | None) -> None:
    """Bring the copy up to date with the old slots in ``changed`` (None:
    every slot copied so far and every live one).

    A slot named by the log is always dropped and copied afresh, even if it
    points at the record that was copied: a copy made without the lock may
    have read the slot mid-change (a new key over an old key's tombstone),
    and the change that tore it is in the log taken after that read. Without
    a log, a slot still pointing at its copied record is kept."""
    K, ss, mm = g.params.key_size, g.slot_size, g.idx
    OCC, HB = L.OCCUPIED, L.HEADER_BYTES
    copied_loc, nslots = b.copied_loc, g.nslots
    logged = changed is not None
    if changed is None:
        occ = L.COUNTERS.unpack_from(mm, L.OFF_COUNTERS)[0]
        changed = itertools.chain(*b.visited, M.roster_snapshot(g, occ))
    fresh = []
    for slot in set(changed):
        if not 1 <= slot <= nslots:
            continue
        o = HB + (slot - 1) * ss
        occupied = mm[o + K] == OCC
        if occupied and not logged:
            seg, off = L.SLOT_LOC.unpack_from(mm, o + K + L.OFF_SLOT_LOC)
            if (seg << 32 | off) == copied_loc[slot] and b.new_of_old[slot]:
                continue
        b.drop(slot)
        if occupied:
            fresh.append(slot)
    b.copy_all(fresh)
