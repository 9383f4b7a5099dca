"""Process-wide state of one table: its maps, its writer lock, its counters.

Every ``MmapCache`` handle on the same path in one process shares one
``SharedTable`` (a registry keyed by the index's real path), so frameworks that
make a cache object per thread pay for one set of maps and file descriptors.
"""

from __future__ import annotations

import mmap
import os
import threading
import time
import weakref
from typing import Any

from . import _layout as L
from ._fs import open_checked, reserve
from ._generation import Generation
from ._locking import WriterLock
from .errors import CorruptCacheError, IncompatibleCacheError, ReadOnlyCacheError

_U64_MAX = (1 << 64) - 1
_registry: dict[str, SharedTable] = {}
_registry_lock = threading.Lock()
_all: weakref.WeakSet[SharedTable] = weakref.WeakSet()


class SharedTable:
    """The current generation of a table plus what every handle shares."""

    def __init__(
        self, path: str, heap_path: str, mode: int, interval: float, foreign_ok: bool = False
    ) -> None:
        self.path = path
        self.heap_path = heap_path
        self.mode = mode
        self.interval = interval
        self.foreign_ok = foreign_ok  # allow_foreign_owner: other users' files are used
        # False when the files can only be read (a read-only mount, another
        # user's files): gets are served from read-only maps, and nothing is
        # created, locked or written; every write raises ReadOnlyCacheError.
        self.writable = True
        self.gen = self._open_retrying()
        refuse = None if self.writable else f"{path!r} is read-only for this process: it serves reads only"
        self.lock = WriterLock(L.lock_name(path), mode, foreign_ok=foreign_ok, refuse=refuse)
        self.ctl = self._map_control()
        self.refs = 0
        # This process's counts not yet added to its stats stripe (see _layout).
        self.local = [0] * len(L.STATS_FIELDS)
        self.stripe: int | None = None
        self.compact_wanted = False  # set under the lock, acted on after it
        self.flush_due = 0  # monotonic_ns when a write next flushes the stats (see _write)
        # Keys this process has found, with what their last hit learnt (see
        # MmapCache.get): valid while their slot's bytes are unchanged.
        self.memo: dict[str | bytes, tuple[Any, ...]] = {}
        self.memo_skip = 0  # first reads before admit() is asked again (see there)
        self.memo_fails = 0  # full memos in a row that served too few hits
        self.first_reads = 0  # hits that had to probe (the rest came from the memo)
        self.flushed_hits = 0  # hits already added to the stats stripe
        self._memo_mark = (0, 0)  # (hits, first_reads) when the memo last started afresh
        self.grow_to: int | None = None  # the size that rebuild should have
        # ((pid, generation) of another process's rebuild seen in progress,
        # monotonic_ns until which it is taken to be alive): see _rebuild._busy
        self.builder_seen: tuple[tuple[int, int], int] = ((0, 0), 0)
        self.compactions = 0  # automatic compactions this process started (see _rebuild)
        self.full_rebuild_next = False
        # time.monotonic_ns() of the next staleness check (an int: the get hot
        # path compares it with monotonic_ns, which also makes its LRU stamp).
        self.interval_ns = int(interval * 1e9)
        self.next_check = time.monotonic_ns() + self.interval_ns
        _all.add(self)

    # ------------------------------------------------------------ opening
    def _open_retrying(self) -> Generation:
        # A rebuild in another process may unlink the generation we are
        # opening between reading its index and opening its roster: retry.
        for _ in range(50):
            try:
                return self._open_generation()
            except FileNotFoundError as e:
                missing = e
                time.sleep(0.001)
        if not os.path.exists(self.path):
            raise missing
        raise CorruptCacheError(
            f"{self.path!r} names files that do not exist ({missing.filename}); "
            "the table is damaged: delete its files to start afresh"
        ) from missing

    def _open_generation(self) -> Generation:
        try:
            return Generation.open(
                self.path, self.heap_path, self.mode, foreign_ok=self.foreign_ok, writable=self.writable
            )
        except ReadOnlyCacheError:
            if not self.writable or hasattr(self, "gen"):
                raise  # (only the first open decides: a table never turns read-only under us)
            self.writable = False  # serve reads from read-only maps
            return self._open_generation()

    def _remap_control(self) -> None:
        """The files were created anew: counts go to a stripe of the new file."""
        self.flush_stats()
        self.ctl = self._map_control()
        self.stripe = None

    def _map_control(self) -> mmap.mmap | bytes:
        """Map <path>.lock, sizing it (once, under the lock) for the stats stripes.

        A read-only table maps it read-only (its stats are then this
        process's alone if the file cannot be read or is still short)."""
        name = L.lock_name(self.path)
        if not self.writable:
            try:
                fd = open_checked(
                    name, os.O_RDONLY, "control file", mode=self.mode, foreign_ok=self.foreign_ok
                )
            except (OSError, CorruptCacheError):
                return bytes(L.CTL_BYTES)
            try:
                if os.fstat(fd).st_size < L.CTL_BYTES:
                    return bytes(L.CTL_BYTES)
                return mmap.mmap(fd, L.CTL_BYTES, access=mmap.ACCESS_READ)
            finally:
                os.close(fd)
        fd = open_checked(name, os.O_RDWR, "control file", mode=self.mode, foreign_ok=self.foreign_ok)
        try:
            if os.fstat(fd).st_size < L.CTL_BYTES:
                with self.lock.hold():
                    size = os.fstat(fd).st_size
                    if size < L.CTL_BYTES:
                        reserve(fd, size, L.CTL_BYTES - size, name)
                        os.pwrite(fd, L.CTL_HEADER.pack(L.CTL_MAGIC, L.FORMAT_VERSION), 0)
            return mmap.mmap(fd, L.CTL_BYTES)
        finally:
            os.close(fd)

    # ---------------------------------------------------------- staleness
    def refresh(self) -> Generation:
        """Reader-side check, at most every ``interval`` s or when retired.

        Flushes this process's statistics, and follows a rebuild by another
        process: the old index is marked retired and a new one renamed over
        the path. No lock is taken; a reader keeps using the old maps (still
        valid, just stale) until the new files can be opened.
        """
        g = self.gen
        self.next_check = time.monotonic_ns() + self.interval_ns
        self.flush_stats()
        try:
            ino = os.stat(self.path).st_ino
        except FileNotFoundError:
            return g
        if ino == g.ino:
            return g
        try:
            new = self._open_generation()
        except FileNotFoundError:
            return g
        if not self.lock.held and self.lock.rebind_if_replaced():
            self._remap_control()
        self._adopt(g, new)
        return self.gen

    def current_for_write(self) -> Generation:
        """Writer-side check, under the lock: never write to a retired generation."""
        g = self.gen
        if g.idx[L.OFF_FLAGS] & L.FLAG_RETIRED or time.monotonic_ns() >= self.next_check:
            # The stat first: if the files are gone, every write must keep
            # failing (the caller recreates them), not only the first.
            ino = os.stat(self.path).st_ino
            self.next_check = time.monotonic_ns() + self.interval_ns
            self.flush_stats()
            if ino != g.ino:
                if self.lock.rebind_if_replaced():
                    self._remap_control()
                self._adopt(g, self._open_retrying())
            elif g.idx[L.OFF_FLAGS] & L.FLAG_RETIRED:
                # Retired but still the file at the path: a rebuild died
                # between marking and renaming. We hold the lock, so no rebuild
                # is running; the old generation is intact and current again.
                g.idx[L.OFF_FLAGS] = g.idx[L.OFF_FLAGS] & ~L.FLAG_RETIRED
        return self.gen

    def _adopt(self, old: Generation, new: Generation) -> None:
        p, q = old.params, new.params
        if (p.slot_size, p.key_size) != (q.slot_size, q.key_size):
            raise IncompatibleCacheError(f"{self.path!r} was replaced by a table with other slot/key sizes")
        # The generation first, then the memo: MmapCache._get_probe reads them
        # in the other order (see there), so no entry of ``old`` gets into the
        # new memo, which the get hot path trusts to be of the current one.
        self.gen = new
        self.memo = {}
        old.close()

    # --------------------------------------------------------------- memo
    def admit(self, entries: int) -> bool:
        """May a first read add its key to the memo (of at most ``entries``)?

        Asked on a first read once ``memo_skip`` (counted down by the caller)
        is 0. A memo that is not full fills. A full one means a working set
        larger than the memo, or one that moved: it starts afresh. If it
        served at least as many hits as it holds keys since it last did, at
        once; if not, keys come at random from a set much larger than the
        memo, where a memo hit costs as much as a first read (its entries
        are cache misses too) and filling it is pure cost: the next 4, 8 ...
        64 x ``entries`` first reads (more each time in a row) leave it empty.
        """
        if len(self.memo) < entries:
            return True
        hits = self.flushed_hits + self.local[0]
        mark_hits, mark_first = self._memo_mark
        served = (hits - mark_hits) - (self.first_reads - mark_first)  # memo hits since the mark
        self.memo.clear()
        self._memo_mark = (hits, self.first_reads)
        if served >= entries:
            self.memo_fails = 0
            return True
        self.memo_fails += 1
        self.memo_skip = entries << min(self.memo_fails + 1, 6)
        return False

    # -------------------------------------------------------------- stats
    def flush_stats(self) -> None:
        """Add local counts into this process's stripe.

        Each process claims a stripe of its own (its pid in the stripe's
        last 4 bytes), so counts are exact while at most STATS_STRIPES
        processes are alive; past that, processes share stripes and an
        increment can be lost in a race (the sums are then approximate).
        """
        local = self.local
        if not any(local) or not self.writable:
            return  # (read-only: the counts stay local, total_stats adds them)
        if self.stripe is None:
            self.stripe = self._claim_stripe()
        self.local = [0] * len(local)
        self.flushed_hits += local[0]
        off = L.OFF_STATS + self.stripe * L.STATS_STRIPE_BYTES
        cur = L.STATS.unpack_from(self.ctl, off)
        # (wrapping at 2**64: a damaged count must not make every flush fail)
        L.STATS.pack_into(self.ctl, off, *((a + b) & _U64_MAX for a, b in zip(cur, local, strict=True)))

    def _claim_stripe(self) -> int:
        pid = os.getpid()
        with self.lock.hold():
            owners = [
                L.U32.unpack_from(self.ctl, L.OFF_STATS + i * L.STATS_STRIPE_BYTES + L.STATS_PID)[0]
                for i in range(L.STATS_STRIPES)
            ]
            if pid in owners:
                return owners.index(pid)
            for i, owner in enumerate(owners):
                if owner == 0 or not alive(owner):
                    L.U32.pack_into(self.ctl, L.OFF_STATS + i * L.STATS_STRIPE_BYTES + L.STATS_PID, pid)
                    return i
        return pid % L.STATS_STRIPES

    def total_stats(self) -> dict[str, int]:
        tot = list(self.local)
        for i in range(L.STATS_STRIPES):
            row = L.STATS.unpack_from(self.ctl, L.OFF_STATS + i * L.STATS_STRIPE_BYTES)
            tot = [a + b for a, b in zip(tot, row, strict=True)]
        return dict(zip(L.STATS_FIELDS, tot, strict=True))

    def close(self) -> None:
        try:
            self.flush_stats()
        except (ValueError, OSError):
            pass
        self.gen.close()
        self.lock.close()


def alive(pid: int) -> bool:
    if not 0 < pid < 1 << 22:  # past Linux's largest pid_max: a damaged field, no process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire(path: str, heap_path: str, mode: int, interval: float, foreign_ok: bool = False) -> SharedTable:
    """The process's SharedTable for ``path`` (opened on first use)."""
    with _registry_lock:
        t = _registry.get(path)
        if t is None:
            t = SharedTable(path, heap_path, mode, interval, foreign_ok)
            _registry[path] = t
        elif t.heap_path != heap_path:
            raise IncompatibleCacheError(
                f"{path!r} is already open in this process with heap_path {t.heap_path!r}"
            )
        t.refs += 1
        return t


def release(t: SharedTable) -> None:
    with _registry_lock:
        t.refs -= 1
        if t.refs <= 0:
            if _registry.get(t.path) is t:
                del _registry[t.path]
            t.close()


def _after_fork_in_child() -> None:
    # Counts made before the fork belong to the parent's stripe and were not
    # ours to flush; the child starts from zero.
    for t in list(_all):
        t.local = [0] * len(t.local)
        t.stripe = None


os.register_at_fork(after_in_child=_after_fork_in_child)
