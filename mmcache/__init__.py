"""mmcache: a shared, persistent, process-safe cache in memory-mapped files.

Any number of processes on one host open the same path and share entries,
with no server. The core is :class:`MmapCache`; the faces built on it are the
``@mmap_cached`` decorator and a Django cache backend
(``mmcache.contrib.django.MmapCacheBackend``).
"""

from __future__ import annotations

# First: on a system mmcache cannot run on (Windows), this import is the one
# clear ImportError that says which systems are supported.
from . import _platform  # noqa: F401
from ._table_lookup import Entry
from .decorators import CacheInfo, invalidate_tags, mmap_cached
from .errors import (
    CacheFullError,
    ClosedCacheError,
    CorruptCacheError,
    DiskFullError,
    FormatVersionError,
    IncompatibleCacheError,
    MmcacheError,
    NetworkFilesystemError,
    NetworkFilesystemWarning,
    ReadOnlyCacheError,
    UnsafePathError,
    ValueTooLargeError,
)
from .table import DEFAULT_MAX_SEGMENT_BYTES, MmapCache

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_SEGMENT_BYTES",
    "CacheFullError",
    "CacheInfo",
    "ClosedCacheError",
    "CorruptCacheError",
    "DiskFullError",
    "Entry",
    "FormatVersionError",
    "IncompatibleCacheError",
    "MmapCache",
    "MmcacheError",
    "NetworkFilesystemError",
    "NetworkFilesystemWarning",
    "ReadOnlyCacheError",
    "UnsafePathError",
    "ValueTooLargeError",
    "invalidate_tags",
    "mmap_cached",
]
