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

What fills the new generation is a ``Builder`` (every entry re-inserted:
rebuilds, resizes, and every few compactions) or a ``HeapCopier`` (slots
kept in place, only records moved: the other compactions); see
``_builders``.

Generation numbers are allocated from ``next_gen`` in the header, so a
locked rebuild that runs while a concurrent one is in phase 1 picks another
number; the concurrent one then finds its base generation retired and drops
its files.
"""

from __future__ import annotations

import array
import glob
import os
import random
import time
from typing import TYPE_CHECKING

from . import _layout as L
from . import _maintenance as M
from . import _write as W
from ._builders import Builder, HeapCopier
from ._generation import Generation, Params
from ._locking import disown, try_own
from .errors import CacheFullError

if TYPE_CHECKING:
    from ._shared import SharedTable
    from .table import MmapCache


# ----------------------------------------------------------------- files
def _remove(names: list[str]) -> None:
    for name in names:
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass
        except IsADirectoryError:  # planted or damaged where a file was: gone if empty
            try:
                os.rmdir(name)
            except OSError:
                pass


def generation_files(path: str, heap_path: str, gen: int) -> list[str]:
    names = [L.roster_name(path, gen)]
    names += glob.glob(glob.escape(f"{heap_path}.{gen}.") + "*")
    return names


def orphans(s: SharedTable, keep_gen: int) -> list[str]:
    """Files of other generations and temporary indexes left by killed
    writers. While a concurrent rebuild runs (its lock is held: see
    ``rebuild_concurrently``), its files are spared: every temporary index
    and every generation above ``keep_gen`` (it may have registered in a
    header that a locked rebuild has replaced since, so the header cannot
    say which is its own); they go at a cleanup when none runs."""
    running = s.rebuild_running()
    doomed = [] if running else glob.glob(glob.escape(s.path) + ".rebuild.*")
    doomed += glob.glob(glob.escape(s.path) + ".new.*")
    for name in glob.glob(glob.escape(s.path) + ".roster.*"):
        gen = name.rsplit(".", 1)[1]
        if gen != str(keep_gen) and not (running and gen.isdigit() and int(gen) > keep_gen):
            doomed.append(name)
    for name in glob.glob(glob.escape(s.heap_path) + ".*.*"):
        gen, _, seg = name[len(s.heap_path) + 1 :].partition(".")
        if gen.isdigit() and seg.isdigit() and int(gen) != keep_gen and not (running and int(gen) > keep_gen):
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
    next_gen, bpid, nonce, bgen = L.BUILD.unpack_from(g.idx, L.OFF_BUILD)
    gen: int = max(next_gen, g.gen, bgen) + 1
    L.BUILD.pack_into(g.idx, L.OFF_BUILD, gen, bpid, nonce, bgen)
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


def _commit(s: SharedTable, g: Generation, ng: Generation, b: Builder | HeapCopier, tmp: str) -> None:
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


def rebuild_concurrently(c: MmapCache | None, s: SharedTable, new_size: int | None = None,
                         compact: bool = False) -> bool:  # fmt: skip
    """Rebuild holding the writer lock only to start and to commit (see the
    module docstring). False if another process's rebuild is in progress
    or ours lost a race with a locked rebuild (nothing changed then).

    ``compact``: the caller only wants dead heap space back, so a
    ``HeapCopier`` may do it (see ``_heap_copy_will_do``).

    At most one runs per table: it holds, from start to end, the process's
    ``rebuilding`` thread lock (no other thread of it starts one) and the
    byte lock LOCK_REBUILD of the control file (no other process does; a
    builder killed by any signal lets go of it at once)."""
    if _busy(s, s.gen) or not s.rebuilding.acquire(blocking=False):
        return False
    try:
        fd = s.owner()
        if not try_own(fd, L.LOCK_REBUILD):
            return False
        try:
            return _rebuild_claimed(s, new_size, compact)
        finally:
            disown(fd, L.LOCK_REBUILD)
    finally:
        s.rebuilding.release()


def _rebuild_claimed(s: SharedTable, new_size: int | None, compact: bool) -> bool:
    """``rebuild_concurrently`` once it holds the rebuild lock."""
    lock = s.lock
    with lock.hold():
        g = W.begin(s)
        occ = L.COUNTERS.unpack_from(g.idx, L.OFF_COUNTERS)[0]
        slots = M.roster_snapshot(g, occ)
        if len(slots) > W.live_cap_for(g, new_size):
            raise CacheFullError(f"{len(slots)} live entries do not fit in a table of size {new_size}")
        heap_only = compact and _heap_copy_will_do(s, g, new_size)
        ng, tmp = _start(s, g, new_size)
        # Who builds (for people and tools; the lock is the proof of life).
        L.BUILD.pack_into(g.idx, L.OFF_BUILD, L.BUILD.unpack_from(g.idx, L.OFF_BUILD)[0],
                          os.getpid(), random.getrandbits(32) | 1, ng.gen)  # fmt: skip
        # From here every writer logs the slots it changes (see _layout).
        L.U32.pack_into(g.idx, L.OFF_LOG, 0)
        g.idx[L.OFF_LOGGING] = L.FLAG_LOGGING >> 8
    committed = False
    try:
        b: Builder | HeapCopier = HeapCopier(g, ng) if heap_only else Builder(g, ng)
        b.copy_all(slots)  # phase 1: no lock
        # Catch up without the lock too, while writers change many slots:
        # each pass takes the log under the lock for a moment and copies
        # what it names, until few changes are left for phase 2.
        for _ in range(CATCH_UP_PASSES):
            with lock.hold():
                if W.begin(s) is not g:
                    return False  # a locked rebuild replaced our base meanwhile
                changed = _take_log(g)
            b.catch_up(changed)
            if b.failed or changed is not None and len(changed) <= FEW_CHANGES:
                break
        with lock.hold():  # phase 2
            if W.begin(s) is not g:
                return False
            if not b.failed:
                b.catch_up(_take_log(g))
            if b.failed:
                s.full_rebuild_next = True  # a damaged record: a Builder drops it
                return False
            if b.occ > W.live_cap(ng):
                return False
            g.idx[L.OFF_LOGGING] = 0
            L.BUILD.pack_into(g.idx, L.OFF_BUILD, L.BUILD.unpack_from(g.idx, L.OFF_BUILD)[0], 0, 0, 0)
            _commit(s, g, ng, b, tmp)
            committed = True
            return True
    finally:
        if not committed:
            with lock.hold():
                nxt, _pid, _nonce, bg = L.BUILD.unpack_from(g.idx, L.OFF_BUILD)
                if bg == ng.gen:  # generation numbers are never handed out twice
                    L.BUILD.pack_into(g.idx, L.OFF_BUILD, nxt, 0, 0, 0)
                    g.idx[L.OFF_LOGGING] = 0
                _remove([tmp, *generation_files(s.path, s.heap_path, ng.gen)])


def _heap_copy_will_do(s: SharedTable, g: Generation, new_size: int | None) -> bool:
    """A compaction may keep the slots where they are unless the size
    changes, tombstones are many (only a Builder clears them), or it is this
    process's every FULL_EVERY-th compaction (a Builder also drops expired
    entries, which a HeapCopier keeps) or the last one met damage."""
    s.compactions += 1
    if s.full_rebuild_next or s.compactions % FULL_EVERY == 0:
        s.full_rebuild_next = False
        return False
    dele = L.COUNTERS.unpack_from(g.idx, L.OFF_COUNTERS)[1]
    return new_size in (None, g.params.size) and dele * 8 <= g.nslots


FULL_EVERY = 4  # every 4th compaction of a process is a full rebuild
CATCH_UP_PASSES = 8  # lock-free catch-up passes at most, before phase 2
FEW_CHANGES = 32  # changes few enough to copy in phase 2, under the lock


def _busy(s: SharedTable, g: Generation) -> bool:
    """A rebuild of the table is running, in any thread of any process (a
    look at its lock, without waiting and without the writer lock).

    While one does, each put here would ask for a compaction again; a yes
    is trusted for one staleness interval while ``g``'s header names the
    same registered rebuild, so that this costs a system call at most that
    often. (An unregistered one, starting or ending, is looked at afresh.)"""
    _n, *build = L.BUILD.unpack_from(g.idx, L.OFF_BUILD)
    who = (build[0], build[1], build[2])
    now = time.monotonic_ns()
    seen, until = s.builder_seen
    if who[2] and seen == who and now < until:
        return True
    if not s.rebuild_running():
        return False
    s.builder_seen = (who, now + s.interval_ns)
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
