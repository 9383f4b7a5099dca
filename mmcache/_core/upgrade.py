"""Replace a table of another format version, for tables that hold a cache.

The Django backend and ``@mmap_cached`` keep only what they can compute
again, so when ``FORMAT_VERSION`` changes they replace the old table by
themselves rather than fail. A direct ``MmapCache`` user gets
``FormatVersionError`` and decides (the table may hold data of value).

What makes the replacement safe for a process of the other version:

- Its files are only renamed and unlinked, never truncated or written: a
  process that still maps them keeps valid maps (SIGBUS comes only from
  shrinking a mapped file), and an unlinked file lives until it is unmapped.
- It happens only while no other process maps the index or the lock file
  (found in ``/proc/<pid>/maps``; every mmcache handle maps both). A process
  of the other version that has the table open would otherwise notice the
  new index at its next staleness check and fail on a format it cannot read.
  While one has, the table is left alone and the caller reports it: the
  replacement happens on a later open, once those processes have exited
  (e.g. when the old deploy's workers are gone). Without ``/proc`` (not
  Linux) nothing is replaced. A process of another user (root) is not
  visible there; mmcache refuses files of another owner anyway.
- It happens under the table's writer lock, taken without waiting (a writer
  of the other version at work means: not now), so no writer of any version
  is mid-update.

The lock file is kept (its inode is the lock every process shares) and its
content reset to an empty control block; the index is renamed aside and
unlinked with the roster and heap files of the current layout's names.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import time

from ..errors import CorruptCacheError, FormatVersionError
from . import layout
from .fs import check_safe
from .generation import read_header


def replace_other_format(path: str) -> bool:
    """Remove the table at ``path`` if it is of another format version and
    nobody has it open; True if the path is now free for a new table (also
    when another process replaced it first), False if it is in use."""
    lock = layout.lock_name(path)
    for name in (path, lock):
        check_safe(name, allow_symlink=False, allow_foreign_owner=False)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = -1  # no lock file: nothing can be holding the table's lock
    try:
        if fd >= 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a writer (of either version) is at work
        if not _still_other_format(path):
            return True  # replaced by another process meanwhile (or gone)
        if in_use(path, lock):
            return False
        aside = f"{path}.old-format.{os.getpid()}"
        os.rename(path, aside)
        for name in (
            aside,
            *glob.glob(glob.escape(path) + ".roster.*"),
            *glob.glob(glob.escape(path) + ".heap.*"),
        ):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
        if fd >= 0:
            _reset_control(fd)
        return True
    finally:
        if fd >= 0:
            os.close(fd)  # drops the flock


def _still_other_format(path: str) -> bool:
    try:
        with open(path, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW | os.O_NONBLOCK)) as f:
            head = f.read(layout.HEADER.size)
    except FileNotFoundError:
        return False
    if len(head) < layout.HEADER.size:
        return False  # damaged, not another version: not ours to remove
    try:
        read_header(head, path)
    except FormatVersionError:
        return True
    except CorruptCacheError:
        return False
    return False


def in_use(*names: str) -> list[int]:
    """Pids of other processes that map any of the files ``names`` (by
    device and inode, as ``/proc/<pid>/maps`` shows them). Without a
    readable ``/proc`` every file counts as in use (the pid -1)."""
    wanted = set()
    for name in names:
        try:
            st = os.stat(name)
        except FileNotFoundError:
            continue
        wanted.add((f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}", str(st.st_ino)))
    if not wanted:
        return []
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return [-1]
    me = os.getpid()
    users = []
    for pid in pids:
        if pid == me:
            continue  # this process failed to open the table: it maps none of it
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    fields = line.split(maxsplit=5)
                    if len(fields) >= 5 and (fields[3], fields[4]) in wanted:
                        users.append(pid)
                        break
        except OSError:
            continue  # exited meanwhile, or not ours to read
    return users


def _reset_control(fd: int) -> None:
    """An empty control block of this format (no stats, no stripe owners),
    written in place: no process maps the file (checked), and its inode
    must stay, being the lock."""
    if os.fstat(fd).st_size >= layout.CTL_BYTES:
        os.pwrite(fd, bytes(layout.CTL_BYTES), 0)
        os.pwrite(fd, layout.CTL_HEADER.pack(layout.CTL_MAGIC, layout.FORMAT_VERSION), 0)


def replace_or_raise(e: FormatVersionError, who: str) -> None:
    """For a face that met ``e``: replace the table (a few tries, in case
    another process of this version is opening it at the same moment), or
    raise a FormatVersionError that says why not and what happens next."""
    for attempt in range(4):
        if replace_other_format(e.path):
            return
        time.sleep(0.05 * (attempt + 1))
    pids = in_use(e.path, layout.lock_name(e.path))
    users = "this system has no /proc to tell" if pids == [-1] else f"pids {pids}" if pids else "a writer"
    raise FormatVersionError(
        f"{e.path!r} has format version {e.version}, this mmcache reads {layout.FORMAT_VERSION}, "
        "and the table "
        f"is in use ({users}); {who} replaces it by itself at the first open after those processes "
        "exit (it holds only a cache). Stop them, or remove the table's files by hand",
        e.path,
        e.version,
    ) from e
