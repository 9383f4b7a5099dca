"""Exceptions raised by mmcache.

One base class, :class:`MmcacheError`, so callers can catch everything the
library raises on purpose; precise subclasses for the conditions a caller may
want to handle differently. Where a built-in type is what a Python user would
expect (a bad argument, a closed object), the subclass also derives from it.
"""

from __future__ import annotations

import errno


class MmcacheError(Exception):
    """Base class of every exception mmcache raises deliberately."""


class CacheFullError(MmcacheError):
    """A put found no room: live entries fill the table (or a limit) and the
    eviction policy is ``"none"``. Nothing already stored was changed."""


class ValueTooLargeError(MmcacheError, ValueError):
    """A single record would not fit in one heap segment (or in ``max_bytes``)."""


class CorruptCacheError(MmcacheError):
    """A cache file is damaged or is not an mmcache file at all."""


class IncompatibleCacheError(MmcacheError, ValueError):
    """The files are a valid mmcache table, but of another format version or
    created with other parameters (size, slot_size, key_size, ...)."""


class FormatVersionError(IncompatibleCacheError):
    """The files are an mmcache table of another format ``version``, written
    by an older or newer mmcache. The faces (Django backend, decorator), whose
    tables hold a cache, replace such a table by themselves once no process
    has it open; a direct ``MmapCache`` user decides (see the README)."""

    def __init__(self, message: str, path: str = "", version: int = 0) -> None:
        super().__init__(message)
        self.path = path
        self.version = version


class DiskFullError(MmcacheError, OSError):
    """The filesystem refused to grow a cache file (ENOSPC / EDQUOT / EFBIG).

    Raised before anything is published, so every entry stored earlier is
    still readable, here and in other processes.
    """

    def __init__(self, message: str, err: int = errno.ENOSPC) -> None:
        OSError.__init__(self, err, message)


class ClosedCacheError(MmcacheError, ValueError):
    """An operation on a cache handle after :meth:`MmapCache.close`."""


class NetworkFilesystemError(MmcacheError):
    """The path lies on a network filesystem and the caller asked to refuse it."""


class UnsafePathError(MmcacheError, PermissionError):
    """The path is a symlink or is owned by another user, and that was not allowed."""


class ReadOnlyCacheError(MmcacheError, PermissionError):
    """A write to a table this process can only read (a read-only mount, or
    files and directory it has no write permission on). Reads still work."""


class NetworkFilesystemWarning(UserWarning):
    """The path lies on a network filesystem (NFS, CIFS, ...): ``fcntl`` locks and
    shared maps are not coherent between hosts there, so entries may be lost
    or wrong when more than one host uses the files."""


__all__ = [
    "CacheFullError",
    "ClosedCacheError",
    "CorruptCacheError",
    "DiskFullError",
    "FormatVersionError",
    "IncompatibleCacheError",
    "MmcacheError",
    "NetworkFilesystemError",
    "NetworkFilesystemWarning",
    "ReadOnlyCacheError",
    "UnsafePathError",
    "ValueTooLargeError",
]
