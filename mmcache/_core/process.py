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

from .. import _native
from ..errors import CorruptCacheError, IncompatibleCacheError, ReadOnlyCacheError
from . import layout
from .fs import open_checked, reserve
from .generation import Generation
from .lock import WriterLock, close_owner, owned_elsewhere
from .memo import HitMemo
from .stats import StatsStripes

OPEN_TRIES = 5  # a reader's tries at opening a generation that rebuilds keep replacing
_registry: dict[str, SharedTable] = {}
_registry_lock = threading.Lock()
_all: weakref.WeakSet[SharedTable] = weakref.WeakSet()


class SharedTable(StatsStripes, HitMemo):
    """The current generation of a table plus what every handle shares: its
    maps, lock and staleness check here; the stats stripes (``StatsStripes``)
    and the hit memo (``HitMemo``) are mixins of their own modules, so the
    hot read path still finds their fields as plain attributes of this one
    object. Also the compaction a write asked for (``compact_wanted``,
    ``grow_to``) and what a rebuild notes (``builder_seen`` ...)."""

    def __init__(
        self, path: str, heap_path: str, mode: int, interval: float, foreign_ok: bool = False
    ) -> None:
        self.path = path
        self.heap_path = heap_path
        self.mode = mode
        self.interval = interval
        self.foreign_ok = foreign_ok  # allow_foreign_owner: other users' files are used
        # The compiled get's view of this table (None without the extension):
        # what it reads, bound again wherever that changes (_bind_native), and
        # its hit / miss counts, taken into ``local`` by the stats (StatsStripes).
        self.native = _native.Table() if _native.Table is not None else None
        # False when the files can only be read (a read-only mount, another
        # user's files): gets are served from read-only maps, and nothing is
        # created, locked or written; every write raises ReadOnlyCacheError.
        self.writable = True
        # This process's own open of the control file, for its owner locks
        # (see _layout and _locking): our stats stripe's, the rebuild's.
        self.owner_fd: int | None = None
        # Held by the thread of this process that rebuilds (or looks whether
        # one does): byte locks tell processes apart, this tells threads.
        self.rebuilding = threading.Lock()
        self._adopting = threading.Lock()  # held for the few stores that switch generations
        self.gen = self._open_retrying()
        refuse = None if self.writable else f"{path!r} is read-only for this process: it serves reads only"
        self.lock = WriterLock(layout.lock_name(path), mode, foreign_ok=foreign_ok, refuse=refuse)
        self.ctl = self._map_control()
        self.refs = 0
        self.init_stats()
        self.compact_wanted = False  # set under the lock, acted on after it
        self.init_memo()
        self.grow_to: int | None = None  # the size that rebuild should have
        # (the BUILD fields of a rebuild seen in progress, monotonic_ns until
        # which it is taken to be still running): see _rebuild._busy
        self.builder_seen: tuple[tuple[int, int, int], int] = ((0, 0, 0), 0)
        self.compactions = 0  # automatic compactions this process started (see _rebuild)
        self.full_rebuild_next = False
        # time.monotonic_ns() of the next staleness check (an int: the get hot
        # path compares it with monotonic_ns, which also makes its LRU stamp).
        self.interval_ns = int(interval * 1e9)
        self._schedule_check()
        self._bind_native()
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
        self._drop_owner()

    def owner(self) -> int:
        """This process's own open file description of the control file."""
        fd = self.owner_fd
        if fd is None:
            fd = self.owner_fd = self.lock.open_owner()
        return fd

    def rebuild_running(self) -> bool:
        """Is a rebuild of the table running, in a thread of this process or
        in another process (a look, never a wait)? (A read-only process has
        no owner locks, and never tidies up: no.)"""
        if not self.writable:
            return False
        if not self.rebuilding.acquire(blocking=False):
            return True  # a thread here rebuilds (or is looking too)
        try:
            return owned_elsewhere(self.owner(), layout.LOCK_REBUILD)
        finally:
            self.rebuilding.release()

    def _drop_owner(self) -> None:
        """Close our description: our stripe's lock goes with it."""
        fd, self.owner_fd, self.stripe = self.owner_fd, None, None
        if fd is not None:
            close_owner(fd)

    def _map_control(self) -> mmap.mmap | bytes:
        """Map <path>.lock, sizing it (once, under the lock) for the stats stripes.

        A read-only table maps it read-only (its stats are then this
        process's alone if the file cannot be read or is still short)."""
        name = layout.lock_name(self.path)
        if not self.writable:
            try:
                fd = open_checked(
                    name, os.O_RDONLY, "control file", mode=self.mode, foreign_ok=self.foreign_ok
                )
            except (OSError, CorruptCacheError):
                return bytes(layout.CTL_BYTES)
            try:
                if os.fstat(fd).st_size < layout.CTL_BYTES:
                    return bytes(layout.CTL_BYTES)
                return mmap.mmap(fd, layout.CTL_BYTES, access=mmap.ACCESS_READ)
            finally:
                os.close(fd)
        fd = open_checked(name, os.O_RDWR, "control file", mode=self.mode, foreign_ok=self.foreign_ok)
        try:
            if os.fstat(fd).st_size < layout.CTL_BYTES:
                with self.lock.hold():
                    size = os.fstat(fd).st_size
                    if size < layout.CTL_BYTES:
                        reserve(fd, size, layout.CTL_BYTES - size, name)
                        os.pwrite(fd, layout.CTL_HEADER.pack(layout.CTL_MAGIC, layout.FORMAT_VERSION), 0)
            return mmap.mmap(fd, layout.CTL_BYTES)
        finally:
            os.close(fd)

    def _bind_native(self) -> None:
        """Point the compiled get at the current generation's maps (it holds
        exports of them until the next bind or unbind)."""
        n = self.native
        if n is not None:
            g = self.gen
            n.bind(g.idx, g.nslots, g.slot_size, g.key_size, g.rec_base, g.recency, g.heap.views)
            n.next_check = self.next_check

    # ---------------------------------------------------------- staleness
    def _schedule_check(self) -> None:
        """The next staleness check is one interval from now (for the
        compiled get too, which keeps its own copy as a C integer)."""
        self.next_check = time.monotonic_ns() + self.interval_ns
        if self.native is not None:
            self.native.next_check = self.next_check

    def refresh(self) -> Generation:
        """Reader-side check, at most every ``interval`` s or when retired.

        Flushes this process's statistics, and follows a rebuild by another
        process: the old index is marked retired and a new one renamed over
        the path. No lock is taken; a reader keeps using the old maps (still
        valid, just stale) until the new files can be opened. (A rebuild
        that replaces the files again while we open them makes the open fail:
        it is tried again at once, a few times, never waiting.)
        """
        g = self.gen
        self._schedule_check()
        self.flush_stats()
        try:
            ino = os.stat(self.path).st_ino
        except FileNotFoundError:
            return g
        if ino == g.ino:
            return g
        for _ in range(OPEN_TRIES):
            try:
                new = self._open_generation()
                break
            except FileNotFoundError:
                continue
        else:
            return g
        if not self.lock.held and self.lock.rebind_if_replaced():
            self._remap_control()
        # Only from the generation this check started from: another thread
        # (a writer, or a faster reader) may have moved on to a newer one
        # while we opened ``new``, which may by now be older than that. Going
        # back would make a thread read a retired generation that lacks what
        # it has just written. A switch under way elsewhere: leave it to it.
        if not self._adopting.acquire(blocking=False):
            new.close()
            return self.gen
        try:
            if self.gen is g:
                self._switch(new)
            else:
                new.close()
        finally:
            self._adopting.release()
        return self.gen

    def current_for_write(self) -> Generation:
        """Writer-side check, under the lock: never write to a retired generation."""
        g = self.gen
        if g.idx[layout.OFF_FLAGS] & layout.FLAG_RETIRED or time.monotonic_ns() >= self.next_check:
            # The stat first: if the files are gone, every write must keep
            # failing (the caller recreates them), not only the first.
            ino = os.stat(self.path).st_ino
            self._schedule_check()
            self.flush_stats()
            if ino != g.ino:
                if self.lock.rebind_if_replaced():
                    self._remap_control()
                self._adopt(g, self._open_retrying())
            elif g.idx[layout.OFF_FLAGS] & layout.FLAG_RETIRED:
                # Retired but still the file at the path: a rebuild died
                # between marking and renaming. We hold the lock, so no rebuild
                # is running; the old generation is intact and current again.
                g.idx[layout.OFF_FLAGS] = g.idx[layout.OFF_FLAGS] & ~layout.FLAG_RETIRED
        return self.gen

    def _adopt(self, old: Generation, new: Generation) -> None:
        """Make ``new`` (opened or committed under the writer lock, so the
        newest there is) the current generation, in place of ``old``."""
        with self._adopting:
            self._switch(new)

    def _switch(self, new: Generation) -> None:
        """Replace the current generation by ``new`` (``_adopting`` held)."""
        old = self.gen
        p, q = old.params, new.params
        if (p.slot_size, p.key_size) != (q.slot_size, q.key_size):
            raise IncompatibleCacheError(f"{self.path!r} was replaced by a table with other slot/key sizes")
        # The generation first, then the memo: MmapCache._get_probe reads them
        # in the other order (see there), so no entry of ``old`` gets into the
        # new memo, which the get hot path trusts to be of the current one.
        self.gen = new
        self.memo = {}
        self._bind_native()  # (releases its exports of old's maps)
        old.close()

    def close(self) -> None:
        try:
            self.flush_stats()
        except (ValueError, OSError):
            pass
        if self.native is not None:
            self.native.unbind()
        self.gen.close()
        self._drop_owner()
        self.lock.close()


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
        t.forget_stats()
        t.owner_fd = None  # closed by _locking: the parent's, not ours
        t._adopting = threading.Lock()
        t.rebuilding = threading.Lock()  # (a parent's thread may have held it)


os.register_at_fork(after_in_child=_after_fork_in_child)
