"""Options of the Django backend and the process-wide tables they open.

Django makes one backend instance per thread and per alias, and calls
``close()`` after every request. Opening an ``MmapCache`` costs a few system
calls, so the backend never does it per instance: it asks ``table_for`` for
the one handle this process keeps per (LOCATION, table parameters). Handles
are never closed per request; they are closed at interpreter exit (which also
flushes this process's hit/miss counters into the shared stats).

Everything here uses only the public ``mmcache`` API.
"""

from __future__ import annotations

import atexit
import hashlib
import math
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from mmcache import FormatVersionError, IncompatibleCacheError, MmapCache
from mmcache._core.args import MIN_SIZE
from mmcache._core.fs import make_private_dirs
from mmcache._core.upgrade import replace_or_raise
from mmcache.serialization import DEFAULT_PROTOCOL
from mmcache.table import LIVE_FRACTION

TABLE_NAME = "mmcache"  # LOCATION/mmcache (+ .heap.*, .roster.*, .lock)
DEFAULT_TABLE_SIZE = 4096  # slots: a 384 KiB index; grows by doubling when needed

HEADROOM = 64  # entries above MAX_ENTRIES that Django's cull rule may leave
MAX_SLOTS = 2**32 - 1  # the core's largest table
DIR_MODE = 0o700  # LOCATION is owner-only, like FileBasedCache's directory

# OPTIONS read by this backend besides Django's MAX_ENTRIES / CULL_FREQUENCY.
# The table's shape: every alias sharing a LOCATION must agree on these.
SHAPE_OPTIONS = ("TABLE_SIZE", "SLOT_SIZE", "KEY_SIZE", "MAX_SEGMENT_BYTES")
KNOWN_OPTIONS = frozenset(
    {
        "MAX_ENTRIES",
        "CULL_FREQUENCY",
        "CODEC",
        "PICKLE_PROTOCOL",
        "MAX_TABLE_SIZE",
        "ALLOW_NETWORK_FS",
        "SIGN",
    }
    | set(SHAPE_OPTIONS)
)


@dataclass(frozen=True)
class Settings:
    """The backend's own OPTIONS, validated (Django's are parsed by BaseCache)."""

    codec: str = "pickle"
    protocol: int = DEFAULT_PROTOCOL
    table_size: int = DEFAULT_TABLE_SIZE
    max_table_size: int | None = None  # None: derived from MAX_ENTRIES
    slot_size: int = 96
    key_size: int = 64
    max_segment_bytes: int | None = None  # None: the core's default
    allow_network_fs: bool | None = None  # None: warn, False: refuse, True: allow
    sign: bool = False  # sign records with settings.SECRET_KEY (see docs/RELIABILITY.md)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Settings:
        """Validate ``OPTIONS``; ImproperlyConfigured names the bad entry."""
        codec = options.get("CODEC", "pickle")
        if codec not in ("pickle", "cloudpickle"):
            raise ImproperlyConfigured(
                f"mmcache OPTIONS['CODEC'] must be 'pickle' or 'cloudpickle', not {codec!r}"
            )
        allow = options.get("ALLOW_NETWORK_FS")
        if allow not in (None, True, False):
            raise ImproperlyConfigured("mmcache OPTIONS['ALLOW_NETWORK_FS'] must be None, True or False")
        sign = options.get("SIGN", False)
        if sign not in (True, False):
            raise ImproperlyConfigured("mmcache OPTIONS['SIGN'] must be True or False")
        return cls(
            codec=codec,
            protocol=_int(options, "PICKLE_PROTOCOL", DEFAULT_PROTOCOL, 0, DEFAULT_PROTOCOL),
            table_size=_int(options, "TABLE_SIZE", DEFAULT_TABLE_SIZE, MIN_SIZE),
            max_table_size=_int(options, "MAX_TABLE_SIZE", None, MIN_SIZE),
            slot_size=_int(options, "SLOT_SIZE", 96, 1),
            key_size=_int(options, "KEY_SIZE", 64, 1),
            max_segment_bytes=_int(options, "MAX_SEGMENT_BYTES", None, 1),
            allow_network_fs=allow,
            sign=sign,
        )

    def shape(self) -> tuple[int, int, int, int | None]:
        """What fixes the files' layout (aliases sharing a LOCATION must agree)."""
        return (self.table_size, self.slot_size, self.key_size, self.max_segment_bytes)


def _int(
    options: Mapping[str, Any], name: str, default: int | None, minimum: int, maximum: int = MAX_SLOTS
) -> Any:
    value = options.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ImproperlyConfigured(
            f"mmcache OPTIONS[{name!r}] must be an int from {minimum} to {maximum}, not {value!r}"
        )
    return value


def slots_for(max_entries: int, cull_frequency: int) -> int:
    """Slots a table needs so that the core never evicts before Django's cull
    rule does: Django lets the count reach about max(MAX_ENTRIES,
    CULL_FREQUENCY) before a cull brings it down."""
    need = max(max_entries, cull_frequency, 0) + HEADROOM
    return min(MAX_SLOTS, math.ceil(need / LIVE_FRACTION) + 2)


@dataclass(frozen=True)
class TableSpec:
    """Everything that identifies one process-wide handle."""

    location: str  # absolute directory
    size: int
    max_size: int
    slot_size: int
    key_size: int
    max_segment_bytes: int | None
    allow_network_fs: bool | None
    secret: bytes | None = field(default=None, repr=False)

    @classmethod
    def build(cls, location: str, s: Settings, max_entries: int, cull_frequency: int) -> TableSpec:
        max_size = s.max_table_size or slots_for(max_entries, cull_frequency)
        return cls(
            location=os.path.abspath(location),
            size=s.table_size,
            max_size=max(max_size, s.table_size),
            slot_size=s.slot_size,
            key_size=s.key_size,
            max_segment_bytes=s.max_segment_bytes,
            allow_network_fs=s.allow_network_fs,
            secret=_signing_key() if s.sign else None,
        )

    @property
    def path(self) -> str:
        return os.path.join(self.location, TABLE_NAME)


_tables: dict[TableSpec, MmapCache] = {}
_lock = threading.Lock()


def table_for(spec: TableSpec) -> MmapCache:
    """This process's handle for ``spec``, opened (and created) on first use."""
    t = _tables.get(spec)
    if t is not None:
        return t
    with _lock:
        t = _tables.get(spec)
        if t is None:
            t = _tables[spec] = _open(spec)
        return t


def current(spec: TableSpec) -> MmapCache | None:
    """The handle open for ``spec``, if any (never opens one)."""
    return _tables.get(spec)


def reopen(spec: TableSpec, stale: MmapCache | None) -> MmapCache:
    """Replace a handle whose files were removed (LOCATION deleted while in
    use): the old maps and lock file are dropped, new files are created."""
    with _lock:
        current = _tables.get(spec)
        if current is not None and current is not stale:
            return current  # another thread got there first
        _tables.pop(spec, None)
        if stale is not None:
            stale.close()
        t = _tables[spec] = _open(spec)
        return t


def files_missing(spec: TableSpec) -> bool:
    """True if the table's index file is gone (its directory was deleted)."""
    return not os.path.exists(spec.path)


def ensure_dir(location: str) -> None:
    """Create LOCATION and any missing parents, owner-only (0o700); a
    LOCATION that is a file (or lies under one) is a configuration error."""
    try:
        make_private_dirs(location, DIR_MODE)
    except (FileExistsError, NotADirectoryError) as e:
        where = "is an existing file" if e.filename == location else f"lies under {e.filename!r}, a file"
        raise ImproperlyConfigured(
            f"mmcache's Django backend: LOCATION {location!r} {where}, not a directory "
            "(LOCATION names the directory that holds the table's files; it is created if missing)"
        ) from None


def _open(spec: TableSpec) -> MmapCache:
    """Open the table at ``spec.path``, creating the directory and files if
    needed. An existing table keeps the parameters stored in its header (it
    may have grown past ``spec.size``), so every process adopts the same. A
    table of another format version is replaced once no process has it open
    (``mmcache._core.upgrade``): it holds only a cache."""
    ensure_dir(spec.location)
    common: dict[str, Any] = {
        "eviction": "lru",
        "allow_network_fs": spec.allow_network_fs,
        "secret": spec.secret,
    }
    create = dict(common, max_size=spec.max_size)
    if spec.max_segment_bytes is not None:
        create["max_segment_bytes"] = spec.max_segment_bytes
    for _ in range(5):
        if os.path.exists(spec.path):
            try:
                return MmapCache.open(spec.path, max_size=spec.max_size, **common)
            except FileNotFoundError:
                continue  # removed between the check and the open
            except FormatVersionError as e:
                replace_or_raise(e, "the Django backend")
                continue
        try:
            return MmapCache(spec.path, spec.size, spec.slot_size, spec.key_size, **create)
        except FormatVersionError as e:
            replace_or_raise(e, "the Django backend")
        except IncompatibleCacheError:
            continue  # another process created it first, with other parameters: adopt them
    return MmapCache.open(spec.path, max_size=spec.max_size, **common)


def _signing_key() -> bytes:
    """A 32-byte key derived from SECRET_KEY (mmcache secrets are <= 64 bytes)."""
    from django.conf import settings

    if not settings.SECRET_KEY:
        raise ImproperlyConfigured("mmcache OPTIONS['SIGN'] needs settings.SECRET_KEY")
    key = str(settings.SECRET_KEY).encode()
    return hashlib.blake2b(key, digest_size=32, person=b"mmcache-django").digest()


def open_tables() -> dict[TableSpec, MmapCache]:
    """A snapshot of this process's handles (for stats and tests)."""
    with _lock:
        return dict(_tables)


@atexit.register
def close_all() -> None:
    """Close every handle (flushes this process's counters into the stats)."""
    with _lock:
        tables = list(_tables.values())
        _tables.clear()
    for t in tables:
        t.close()
