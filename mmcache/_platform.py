"""What the core asks of the operating system, each question answered here.

Linux has fast, precise answers; macOS and other POSIX systems get portable
ones. Every question has a portable fallback that also runs on Linux:

=====================  ===========================  ====================================
question               Linux                        macOS / BSD / MMCACHE_PORTABLE=1
=====================  ===========================  ====================================
reserve file space     posix_fallocate              macOS: fcntl(F_PREALLOCATE) and
                                                    ftruncate; else zeros written
page size (alignment)  mmap.PAGESIZE                the same (16 KiB on Apple Silicon)
mount type of a path   /proc/self/mountinfo         statfs(2) through ctypes
mount type of an fd    fstatfs(2) through ctypes    the same
populate pages         madvise(MADV_POPULATE_WRITE) nothing: pages fault in when stored
=====================  ===========================  ====================================

``MMCACHE_PORTABLE=1`` (read at import) makes this process give the portable
answers on Linux, so the paths macOS takes run in the tests here;
``MMCACHE_ASSUME_PAGE_SIZE=16384`` makes every alignment use 16 KiB pages.
An unknown answer is the conservative one: a mount type of None (no
network-filesystem warning, no zero fill), no populating.

Windows (no ``fcntl``, no POSIX shared maps) fails here, at import, with one
clear ImportError.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
import sys
from collections.abc import Callable

SUPPORTED = "Linux, macOS and other POSIX systems"
_UNSUPPORTED = (
    f"mmcache runs on {SUPPORTED}: it needs fcntl file locks and shared memory maps of "
    f"files, which this system ({sys.platform}) does not provide. Windows is not supported "
    "(WSL is Linux: mmcache works there)."
)
if sys.platform == "win32":
    raise ImportError(_UNSUPPORTED)
try:
    import fcntl
except ImportError:
    raise ImportError(_UNSUPPORTED) from None

LINUX = sys.platform.startswith("linux")
DARWIN = sys.platform == "darwin"
FREEBSD = sys.platform.startswith("freebsd")

PORTABLE_ENV = "MMCACHE_PORTABLE"
PAGE_SIZE_ENV = "MMCACHE_ASSUME_PAGE_SIZE"
PORTABLE: bool = os.environ.get(PORTABLE_ENV, "") not in ("", "0")


_REAL_PAGE_SIZE = max(mmap.PAGESIZE, mmap.ALLOCATIONGRANULARITY)


def _page_size() -> int:
    real = _REAL_PAGE_SIZE
    assumed = os.environ.get(PAGE_SIZE_ENV, "")
    if not assumed:
        return real
    # An assumed size must still be a valid alignment here: a power of two
    # and a multiple of the real page (16 KiB on 4 KiB pages is; 1 KiB is not).
    n = int(assumed) if assumed.isdigit() else 0
    if n < real or n & (n - 1) or n % real:
        raise ValueError(
            f"{PAGE_SIZE_ENV}={assumed!r}: must be a power of two and a multiple of this "
            f"system's page size ({real})"
        )
    return n


# Every alignment uses this (never a literal 4096): Apple Silicon's pages are 16 KiB.
PAGE_SIZE: int = _page_size()


# ------------------------------------------------------------ reserving space
_NOT_SUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL})
_fallocate = None if PORTABLE else getattr(os, "posix_fallocate", None)
# macOS fcntl(2): F_PREALLOCATE with an fstore_t {u32 flags; int posmode;
# off_t offset, length, bytesalloc}; not in Python's fcntl module.
_F_PREALLOCATE, _F_ALLOCATECONTIG, _F_ALLOCATEALL, _F_PEOFPOSMODE = 42, 2, 4, 3
_FSTORE = struct.Struct("@Iiqqq")
_preallocate = DARWIN and not PORTABLE


def allocate(fd: int, offset: int, length: int) -> bool:
    """Give [offset, offset+length) of ``fd`` real blocks, extending the file.

    The range is new space past what the file holds. Returns True if blocks
    were allocated without being written (posix_fallocate, F_PREALLOCATE),
    False if zeros were written. A full disk raises OSError (ENOSPC,
    EDQUOT or EFBIG), never a later SIGBUS in a store through a map.
    """
    if _fallocate is not None:
        try:
            _fallocate(fd, offset, length)
            return True
        except OSError as e:
            if e.errno not in _NOT_SUPPORTED:  # e.g. a filesystem without fallocate
                raise
    elif _preallocate:
        try:
            _preallocate_darwin(fd, offset + length)
            return True
        except OSError as e:
            if e.errno not in _NOT_SUPPORTED:
                raise
    write_zeros(fd, offset, length)
    return False


def _preallocate_darwin(fd: int, end: int) -> None:
    """macOS: allocate blocks up to ``end`` (contiguous if it can), then set
    the size. F_PREALLOCATE allocates but does not change the file's size."""
    size = os.fstat(fd).st_size
    if end <= size:
        return
    try:
        store = _FSTORE.pack(_F_ALLOCATECONTIG | _F_ALLOCATEALL, _F_PEOFPOSMODE, 0, end - size, 0)
        fcntl.fcntl(fd, _F_PREALLOCATE, store)
    except OSError:  # no contiguous run that long: any blocks will do
        store = _FSTORE.pack(_F_ALLOCATEALL, _F_PEOFPOSMODE, 0, end - size, 0)
        fcntl.fcntl(fd, _F_PREALLOCATE, store)
    os.ftruncate(fd, end)


def write_zeros(fd: int, offset: int, length: int) -> None:
    """Write zeros over [offset, offset+length): allocates on every system,
    or fails cleanly with ENOSPC. Only ever for new space (it overwrites)."""
    chunk = b"\0" * min(length, 1 << 20)
    pos, end = offset, offset + length
    while pos < end:
        pos += os.pwrite(fd, chunk[: end - pos], pos)


# ---------------------------------------------------------- populating pages
# Linux 5.14+; Python 3.11's mmap module does not name it yet. None: skip.
MADV_POPULATE_WRITE: int | None = None if PORTABLE or not LINUX else getattr(mmap, "MADV_POPULATE_WRITE", 23)


def populate_write(mm: mmap.mmap, start: int, end: int) -> None:
    """Fault [start, end) of a shared file map in for writing, in one call,
    where the system can (see _core.fs.populate). Best effort: elsewhere, and on
    kernels before 5.14, the pages fault in as they are stored."""
    if MADV_POPULATE_WRITE is None:
        return
    start &= ~(PAGE_SIZE - 1)
    end = min(end, len(mm))
    if end > start:
        try:
            mm.madvise(MADV_POPULATE_WRITE, start, end - start)
        except (OSError, ValueError):
            pass


# ------------------------------------------------------------- mount types
def mount_type(path: str, mountinfo: str | None = None) -> str | None:
    """The filesystem type of the mount holding ``path`` (its directory, which
    exists; the file need not), or None if it cannot be told.

    Linux reads /proc/self/mountinfo (precise: "nfs4", "fuse.sshfs");
    elsewhere, or when /proc is missing or MMCACHE_PORTABLE is set, statfs(2)
    names it. ``mountinfo``: a mountinfo text to read instead (tests).
    """
    if mountinfo is None and LINUX and not PORTABLE:
        try:
            with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
                mountinfo = f.read()
        except OSError:
            pass
    if mountinfo is not None:
        return mountinfo_type(path, mountinfo)
    return _statfs_type(os.path.dirname(os.path.abspath(path)) or "/")


def mountinfo_type(path: str, mountinfo: str) -> str | None:
    """The type of the longest mount point in a mountinfo text holding ``path``."""
    target = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    best, best_type = "", None
    for line in mountinfo.splitlines():
        # "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw"
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5:
            continue
        mnt = fields[4].replace("\\040", " ")
        fstype = right.split()[0] if right.split() else ""
        inside = target == mnt or target.startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) >= len(best):
            best, best_type = mnt, fstype
    return best_type


def fd_mount_type(fd: int) -> str | None:
    """The filesystem type of the open file ``fd`` (fstatfs(2)), or None.

    Asked of the descriptor itself, not of a path: no /proc/self/fd, and no
    question of which file a path names by now."""
    return _statfs_type(fd)


# Linux statfs f_type magic numbers (linux/magic.h and the filesystems' own
# headers) for the types some decision depends on: the zero fill (ext4,
# tmpfs) and the network-filesystem warning. Others read as unknown (None).
LINUX_FS_MAGIC = {
    0xEF53: "ext4",  # ext2/3/4 share it; one driver (ext4) serves all three today
    0x01021994: "tmpfs", 0x858458F6: "ramfs", 0x58465342: "xfs", 0x9123683E: "btrfs",
    0x794C7630: "overlay", 0x2FC12FC1: "zfs", 0xF2F52010: "f2fs",
    0x6969: "nfs", 0x517B: "smb", 0xFF534D42: "cifs", 0xFE534D42: "smb2", 0x564C: "ncpfs",
    0x01021997: "9p", 0x5346414F: "afs", 0x6B414653: "afs", 0x00C36400: "ceph",
    0x0BD00BD0: "lustre", 0x47504653: "gpfs", 0x19830326: "beegfs", 0x786F4256: "vboxsf",
    0x65735546: "fuse",  # which FUSE filesystem is not told: not taken for a network one
}  # fmt: skip

# Where struct statfs keeps the type's name: (byte offset, length) of
# f_fstypename. macOS (64-bit inode layout, the only one on arm64): after
# u32 bsize, i32 iosize, 5 u64 counts, fsid (8), u32 owner, type, flags,
# fssubtype. FreeBSD 12+: after u32 version, type, 13 u64, 10 u64 spare,
# u32 namemax, owner, fsid (8), 80 spare chars.
_NAME_AT = {"darwin": (72, 16), "freebsd": (280, 16)}
_STATFS_BUF = 4096  # larger than any layout above (macOS 2168, FreeBSD 2344 bytes)


def _statfs_type(target: str | int) -> str | None:
    """statfs(2) on a path, or fstatfs(2) on a descriptor, through ctypes;
    None where the layout is not known here or the call fails."""
    fns = _statfs_functions()
    if fns is None:
        return None
    import ctypes

    buf = ctypes.create_string_buffer(_STATFS_BUF)
    rc = fns[1](target, buf) if isinstance(target, int) else fns[0](os.fsencode(target), buf)
    if rc != 0:
        return None
    if LINUX:
        magic = ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF
        return LINUX_FS_MAGIC.get(magic)
    at, n = _NAME_AT["darwin" if DARWIN else "freebsd"]
    name = buf.raw[at : at + n].split(b"\0", 1)[0]
    return name.decode("ascii", "replace") or None


_fns: tuple[Callable[..., int], Callable[..., int]] | None = None
_looked_up = False


def _statfs_functions() -> tuple[Callable[..., int], Callable[..., int]] | None:
    """libc's (statfs, fstatfs), looked up once; None if unavailable."""
    global _fns, _looked_up
    if not _looked_up and (LINUX or DARWIN or FREEBSD):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            # x86-64 macOS still exports the 32-bit-inode layout under the
            # plain names; the $INODE64 ones have the layout above.
            suffix = "$INODE64" if DARWIN and hasattr(libc, "statfs$INODE64") else ""
            statfs, fstatfs = libc["statfs" + suffix], libc["fstatfs" + suffix]
            statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
            fstatfs.argtypes = [ctypes.c_int, ctypes.c_void_p]
            _fns = (statfs, fstatfs)
        except (ImportError, OSError, AttributeError):
            pass
    _looked_up = True
    return _fns


def describe() -> dict[str, str]:
    """The answer each question gets in this process (``make test-portable``
    prints it, so a CI log says what ran)."""
    statfs = _statfs_functions() is not None
    if _fallocate is not None:
        reserve = "posix_fallocate"
    else:
        reserve = "fcntl F_PREALLOCATE + ftruncate" if _preallocate else "zeros written (pwrite)"
    return {
        "reserve space": reserve,
        "page size": f"{PAGE_SIZE}" + (" (assumed)" if PAGE_SIZE != _REAL_PAGE_SIZE else ""),
        "mount type of a path": "/proc/self/mountinfo"
        if LINUX and not PORTABLE
        else ("statfs(2)" if statfs else "unknown"),
        "mount type of an fd": "fstatfs(2)" if statfs else "unknown",
        "populate pages": "MADV_POPULATE_WRITE" if MADV_POPULATE_WRITE is not None else "no",
    }
