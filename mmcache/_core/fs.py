"""Filesystem helpers: space reservation, safe creation, mount-type checks.

Kept apart from the table so that every system call with a failure mode worth
a test (ENOSPC, a symlinked path, a network mount) lives in one small module.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
import warnings

from .. import _platform
from ..errors import (
    CorruptCacheError,
    DiskFullError,
    NetworkFilesystemError,
    NetworkFilesystemWarning,
    ReadOnlyCacheError,
    UnsafePathError,
)

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

# Mount types where fcntl locks and MAP_SHARED pages are not coherent across
# hosts (or not at all): the first complaint users of file caches have.
NETWORK_FS_TYPES = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "ncpfs", "9p", "afs",
        "ceph", "glusterfs", "lustre", "gpfs", "beegfs", "davfs", "fuse.sshfs",
        "fuse.glusterfs", "fuse.cephfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone",
        "fuse.juicefs", "fuse.davfs2", "fuse.smbnetfs", "vboxsf", "prl_fs",
        "afpfs", "webdav",  # macOS statfs names
    }
)  # fmt: skip


def reserve(fd: int, offset: int, length: int, what: str, *, fill: bool = False) -> None:
    """Allocate real blocks for [offset, offset+length) of ``fd``.

    A store through a map into a hole of a sparse file gets SIGBUS when the
    disk is full; posix_fallocate (or its stand-in, see _platform.allocate)
    reports the same condition as an errno, so space is always reserved this
    way before it is mapped for writing.
    ``fill=True``: space that will be written through soon and in full (heap
    segments, written sequentially) is also zero-filled where that pays.
    """
    if length <= 0:
        return
    try:
        zeros_written = not _platform.allocate(fd, offset, length)
    except OSError as e:
        if e.errno in _FULL:
            raise DiskFullError(
                f"cannot grow {what} by {length} bytes: {os.strerror(e.errno)}", e.errno
            ) from e
        raise
    if fill and not zeros_written and _zero_fill_pays(fd):
        # Then write the zeros the range already reads as. On ext4 fallocate
        # leaves "unwritten" extents, and the first store through a map into
        # each such page is a fault in which the filesystem converts the
        # extent: 1.2-4.5 us a page measured here. After a write() the pages
        # are in the page cache and a store costs a plain minor fault
        # (~0.3 us); the write itself ~0.5 us a page, in 1 MiB calls. The
        # range is new space past what the file held: nothing is overwritten.
        _reserve_by_writing(fd, offset, length, what)


ZERO_FILL_FS = frozenset({"ext4"})  # where reserve() measured faster with the zeros written
_zero_fill_by_dev: dict[int, bool] = {}


def _zero_fill_pays(fd: int) -> bool:
    """True if ``fd``'s filesystem is one of ZERO_FILL_FS (cached per device;
    tmpfs, for one, allocates zeroed pages in fallocate already)."""
    dev = os.fstat(fd).st_dev
    known = _zero_fill_by_dev.get(dev)
    if known is None:
        known = _zero_fill_by_dev[dev] = _platform.fd_mount_type(fd) in ZERO_FILL_FS
    return known


def populate(mm: mmap.mmap, start: int, end: int) -> None:
    """Fault in [start, end) of a shared file map for writing, in one call.

    The first store into each page of space reserved with fallocate is a
    page fault that costs microseconds (the filesystem converts the
    unwritten extent); a copy loop storing into fresh pages spends most of
    its time there. Doing it in bulk beforehand is several times cheaper.
    Best effort: older kernels and other systems just skip it."""
    _platform.populate_write(mm, start, end)


def _reserve_by_writing(fd: int, offset: int, length: int, what: str) -> None:
    # Write zeros, which allocates or fails cleanly (new space only: it overwrites).
    try:
        _platform.write_zeros(fd, offset, length)
    except OSError as e:
        if e.errno in _FULL:
            raise DiskFullError(f"cannot grow {what}: {os.strerror(e.errno)}", e.errno) from e
        raise


def total_size(paths: list[str]) -> int:
    """Bytes the files in ``paths`` take, a file that is gone counting 0: a
    rebuild in another process deletes a retired generation's files at any
    moment, also between listing them and asking their size. A symlink counts
    as itself (lstat): nothing in a cache directory is followed."""
    total = 0
    for name in paths:
        try:
            total += os.lstat(name).st_size
        except FileNotFoundError:
            continue
    return total


def check_parent(path: str) -> None:
    """Raise FileNotFoundError / NotADirectoryError before any file is created."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(parent):
        raise FileNotFoundError(errno.ENOENT, "cache directory does not exist", parent)
    if not os.path.isdir(parent):
        raise NotADirectoryError(errno.ENOTDIR, "cache location's parent is not a directory", parent)


def make_private_dirs(directory: str, mode: int = 0o700) -> None:
    """Create ``directory`` and any missing parents, each owner-only.

    Every missing level gets ``mkdir(..., mode)`` and then an explicit chmod
    (the umask could only remove bits); existing directories are left as they
    are. Used by the faces that pick a cache directory themselves.
    """
    missing = []
    d = os.path.abspath(directory)
    while not os.path.isdir(d):
        missing.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    for d in reversed(missing):
        try:
            os.mkdir(d, mode)
        except FileExistsError:
            if not os.path.isdir(d):
                raise
            continue
        os.chmod(d, mode)


def check_safe(path: str, *, allow_symlink: bool, allow_foreign_owner: bool) -> None:
    """Refuse a symlinked path or one owned by another user (unless allowed).

    An attacker who can plant a symlink or a file of their own at the cache
    path could otherwise redirect our writes or feed us records.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) and not allow_symlink:
        raise UnsafePathError(f"refusing to open a symlink as a cache file: {path!r}")
    if not allow_foreign_owner and hasattr(os, "geteuid"):
        # Root too: root opening files an unprivileged user planted is the
        # dangerous case, not an exception to the rule.
        st = os.stat(path)
        if st.st_uid != os.geteuid():
            raise UnsafePathError(
                f"cache file {path!r} is owned by uid {st.st_uid}, not by this user; "
                "pass allow_foreign_owner=True to use it anyway"
            )


def mount_type(path: str, mountinfo: str | None = None) -> str | None:
    """The filesystem type of the mount holding ``path``, else None (unknown);
    ``mountinfo``: a /proc/self/mountinfo text to read instead (see _platform)."""
    return _platform.mount_type(path, mountinfo)


def is_network_fs(fstype: str | None) -> bool:
    return fstype is not None and (fstype in NETWORK_FS_TYPES or fstype.startswith("nfs"))


def check_network_fs(path: str, allow: bool | None, mountinfo: str | None = None) -> None:
    """Warn (allow=None), raise (allow=False) or stay quiet (allow=True) on a network mount."""
    if allow is True:
        return
    fstype = mount_type(path, mountinfo)
    if not is_network_fs(fstype):
        return
    msg = (
        f"{path!r} is on a {fstype} filesystem: fcntl locks and shared memory maps are "
        "not coherent there, so processes on different hosts can lose entries or read "
        "wrong ones. Put the cache on a local disk or tmpfs (allow_network_fs=True to "
        "silence this warning)."
    )
    if allow is False:
        raise NetworkFilesystemError(msg)
    warnings.warn(msg, NetworkFilesystemWarning, stacklevel=4)


# ------------------------------------------------------------ checked opens
# Every file of a table is opened here (see DESIGN.md, "Every file is
# untrusted"): never through a symlink (O_NOFOLLOW), never blocking on a FIFO
# (O_NONBLOCK; a regular file ignores it), never leaked into a child
# (O_CLOEXEC), and then judged by fstat on the descriptor itself, so that
# what was checked is what gets mapped, extended or written.
_CHECKED = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_KINDS = (
    (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
)  # fmt: skip
# errno of a write open that fails because this process may only read
READ_ONLY_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)


def _kind(st_mode: int) -> str:
    for test, name in _KINDS:
        if test(st_mode):
            return name
    return "not a regular file"


def open_checked(path: str, flags: int, what: str, *, mode: int = 0o600, foreign_ok: bool = False) -> int:
    """Open one of a table's files and return the checked descriptor.

    ``flags`` are os.O_RDWR / os.O_RDONLY (with O_CREAT / O_EXCL to create);
    the no-follow, non-blocking and close-on-exec flags are added. Raises
    UnsafePathError for a symlink, a file of another user (unless
    ``foreign_ok``) or one writable by group or others beyond ``mode``;
    CorruptCacheError for a directory, FIFO, socket or device (damage, or a
    plant: either way not a cache file); ReadOnlyCacheError if a write open
    is refused by permissions or a read-only mount. Each names the path.
    """
    try:
        pre = os.lstat(path)
    except FileNotFoundError:
        if not flags & os.O_CREAT:
            raise
    else:
        # Refused before open(): opening a device or a FIFO may itself act.
        if stat.S_ISLNK(pre.st_mode):
            raise UnsafePathError(f"refusing to open {what} {path!r}: it is a symlink")
        if not stat.S_ISREG(pre.st_mode):
            raise CorruptCacheError(f"{what} {path!r} is {_kind(pre.st_mode)}, not a regular file")
    try:
        fd = os.open(path, flags | _CHECKED, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:  # became a symlink since the lstat
            raise UnsafePathError(f"refusing to open {what} {path!r}: it is a symlink") from e
        if e.errno in (errno.EISDIR, errno.ENXIO):
            raise CorruptCacheError(f"{what} {path!r} is not a regular file") from e
        if e.errno in READ_ONLY_ERRNOS and flags & (os.O_RDWR | os.O_WRONLY):
            raise ReadOnlyCacheError(
                e.errno, f"cannot write {what}: {os.strerror(e.errno)} (read-only cache?)", path
            ) from e
        raise
    try:
        check_fd(fd, path, what, mode=mode, foreign_ok=foreign_ok)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_fd(fd: int, path: str, what: str, *, mode: int = 0o600, foreign_ok: bool = False) -> os.stat_result:
    """fstat ``fd`` and apply open_checked's rules to what it is."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise CorruptCacheError(f"{what} {path!r} is {_kind(st.st_mode)}, not a regular file")
    if not foreign_ok and hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        raise UnsafePathError(
            f"{what} {path!r} is owned by uid {st.st_uid}, not by this user; "
            "pass allow_foreign_owner=True to use it anyway"
        )
    loose = st.st_mode & 0o022 & ~mode
    if loose:
        who = {0o022: "group and others", 0o020: "group", 0o002: "others"}[loose]
        raise UnsafePathError(
            f"{what} {path!r} is writable by {who} "
            f"(mode {st.st_mode & 0o777:o}; the table's mode is {mode:o})"
        )
    return st
