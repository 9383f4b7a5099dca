"""The writer lock: one exclusive ``flock`` between processes, one RLock inside.

Readers never take it. The lock is re-entrant within a thread (so a caller's
``transaction()`` can wrap puts), and it survives ``os.fork()``: flock locks
belong to the open file description, which a child shares with its parent, so
the child must reopen the file to get a lock of its own, and its copy of the
thread lock (possibly held by a parent thread that does not exist in the
child) is replaced.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading
import weakref

from ._fs import open_checked
from ._platform import LINUX, PORTABLE
from .errors import CorruptCacheError, ReadOnlyCacheError

_live: weakref.WeakSet[WriterLock] = weakref.WeakSet()
_EX_NB = fcntl.LOCK_EX | fcntl.LOCK_NB
_SPINS = 40  # non-blocking tries (about half a microsecond each) before blocking


class WriterLock:
    """Exclusive inter-process + inter-thread lock on ``<path>.lock``."""

    def __init__(
        self, path: str, mode: int = 0o600, *, foreign_ok: bool = False, refuse: str | None = None
    ) -> None:
        self.path = path
        self._mode = mode
        self._foreign_ok = foreign_ok
        # A table that can only be read: the file is never opened (nor
        # created), and taking the lock raises ReadOnlyCacheError(refuse).
        self._refuse = refuse
        self._fd = -2 if refuse else self._open()
        self._tlock = threading.RLock()
        self._depth = 0
        _live.add(self)

    def _open(self) -> int:
        if self._refuse:
            raise ReadOnlyCacheError(errno.EROFS, self._refuse, self.path)
        return open_checked(
            self.path, os.O_RDWR | os.O_CREAT, "lock file", mode=self._mode, foreign_ok=self._foreign_ok
        )

    def acquire(self) -> bool:
        """Take the lock; True if this call took the flock (outermost level)."""
        if self._fd == -2:
            self._fd = self._open()  # after a fork that could not reopen it: try again
        self._tlock.acquire()
        if self._depth == 0:
            try:
                try:
                    fcntl.flock(self._fd, _EX_NB)
                except BlockingIOError:
                    self._wait()
            except BaseException:
                self._tlock.release()
                raise
        self._depth += 1
        return self._depth == 1

    def _wait(self) -> None:
        """Another process holds the flock: spin briefly, then sleep."""
        # A put holds the lock for a few microseconds, while a blocked flock
        # costs a sleep and a wake-up (tens of microseconds) in the waiter and
        # a wake-up call in the holder's unlock: retrying first is cheaper.
        fd = self._fd
        for _ in range(_SPINS):
            try:
                fcntl.flock(fd, _EX_NB)
                return
            except BlockingIOError:
                pass
        fcntl.flock(fd, fcntl.LOCK_EX)

    def try_acquire(self) -> bool:
        """Take the lock only if no other process holds it; True if taken."""
        if self._fd == -2:
            self._fd = self._open()
        if not self._tlock.acquire(blocking=False):
            return False
        if self._depth == 0:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._tlock.release()
                return False
            except BaseException:
                self._tlock.release()
                raise
        self._depth += 1
        return True

    def open_owner(self) -> int:
        """A new owner description of the lock file (see ``open_owner``)."""
        return open_owner(self.fileno(), self.path)

    def fileno(self) -> int:
        """The lock file's descriptor."""
        if self._fd == -2:
            self._fd = self._open()  # after a fork that could not reopen it: try again
        return self._fd

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._tlock.release()

    @property
    def held(self) -> bool:
        """True if the calling thread holds the lock."""
        return self._depth > 0 and self._tlock._is_owned()  # type: ignore[attr-defined]

    def hold(self) -> WriterLock:
        """``with lock.hold():`` holds the lock for the block (a plain
        context manager: a generator-based one costs a microsecond a put)."""
        return self

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def rebind_if_replaced(self) -> bool:
        """If the lock file at our path is no longer the one we have open (the
        table's files were deleted and created anew), move to the new one,
        keeping the lock if we hold it. True if it moved.

        Without this a process would go on locking a deleted file while
        others lock the new one: two writers at once on the same table.
        A reader thread calls this too: it leaves the move to the writers
        while another thread of this process holds or takes the lock (moving
        the descriptor under it would drop its flock), and never waits.
        """
        if not self._tlock.acquire(blocking=False):
            return False
        try:
            return self._rebind()
        finally:
            self._tlock.release()

    def _rebind(self) -> bool:
        if self._fd < 0:
            return False  # not open (a read-only table, or after a failed reopen)
        try:
            same = os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return False
        fd = self._open()
        if self._depth > 0:
            fcntl.flock(fd, fcntl.LOCK_EX)  # take the new lock before letting the old go
        os.close(self._fd)
        self._fd = fd
        return True

    def close(self) -> None:
        _live.discard(self)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _after_fork_in_child(self) -> None:
        if self._fd < 0:
            return
        os.close(self._fd)  # the shared description; our parent's lock stays theirs
        self._tlock = threading.RLock()
        self._depth = 0
        try:
            self._fd = self._open()
        except (OSError, CorruptCacheError):
            # The table's directory is gone: this handle cannot write any
            # more (acquire raises); never fail the fork itself over it.
            self._fd = -2


def _reinit_all_in_child() -> None:
    _close_owners_in_child()
    for lock in list(_live):
        lock._after_fork_in_child()


os.register_at_fork(after_in_child=_reinit_all_in_child)


# ------------------------------------------------------------ owner locks
# Who owns a rebuild or a stats stripe is proven by a byte-range lock on the
# control file, one byte per role (offsets in _layout), taken through the
# process's own open of the file (``open_owner``), and by a thread lock
# inside the process: the kernel drops a byte lock when its owner dies,
# kill -9 included, so a held lock names a live owner, and no pid is ever
# trusted (a reused pid means nothing). Locks are taken and probed without
# waiting.
#
# On Linux these are open-file-description (OFD) locks: they belong to that
# one open of the file, so closing some other descriptor of it drops nothing.
# Elsewhere (macOS, BSD; MMCACHE_PORTABLE=1) they are POSIX record locks
# (``lockf``), which belong to the process and are dropped when it closes
# *any* descriptor of the file: mmcache keeps one open of the control file
# for the writer lock and one for the owner locks, and closes neither while
# their locks matter. Either kind conflicts only between processes; threads
# of one process are told apart by the caller's thread lock.
_OFD = LINUX and not PORTABLE and hasattr(fcntl, "F_OFD_SETLK")
# struct flock of 64-bit Linux (native alignment): type, whence, start, len, pid (0 for OFD locks)
_FLOCK = struct.Struct("hhqqi4x")
_owner_fds: set[int] = set()  # every open owner description of this process (closed in a fork's child)


def open_owner(fd: int, path: str) -> int:
    """A new open of the file ``fd`` refers to, for owner locks: on Linux
    through /proc (the same file whatever its path names now), elsewhere
    through ``path``, checked to be that same file."""
    if _OFD:
        new = os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
    else:
        new = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    a, b = os.fstat(new), os.fstat(fd)
    if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
        os.close(new)
        raise OSError(f"{path!r} is no longer the control file this table has open")
    _owner_fds.add(new)
    return new


def close_owner(fd: int) -> None:
    """Close an owner description: every lock it holds is dropped."""
    _owner_fds.discard(fd)
    os.close(fd)


def try_own(fd: int, offset: int) -> bool:
    """Take the write lock on byte ``offset`` through ``fd`` without waiting;
    False if another process (or, on Linux, another description) holds it."""
    try:
        if _OFD:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0))
        else:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset, os.SEEK_SET)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def disown(fd: int, offset: int) -> None:
    """Let go of byte ``offset`` (the description stays open)."""
    if _OFD:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_UNLCK, os.SEEK_SET, offset, 1, 0))
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset, os.SEEK_SET)


def owned_elsewhere(fd: int, offset: int) -> bool:
    """Does another process hold byte ``offset``? Only for a byte that no
    thread of this process holds through ``fd`` (the caller's thread lock
    says so): the portable probe takes and drops the lock."""
    if _OFD:
        res = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0))
        return bool(_FLOCK.unpack(res)[0] != fcntl.F_UNLCK)
    if not try_own(fd, offset):
        return True
    disown(fd, offset)
    return False


def _close_owners_in_child() -> None:
    # A forked child shares its parent's open descriptions: keeping them open
    # would keep the parent's OFD locks (its rebuild, its stripe) held after
    # the parent died.
    for fd in list(_owner_fds):
        close_owner(fd)
