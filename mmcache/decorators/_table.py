"""The table behind one cached function: opened lazily, values through cloudpickle.

Opening an ``MmapCache`` costs a few system calls, so each process keeps one
handle per (file, max_entries) in a registry, opened on the first call (not
at import or decoration) and closed at exit, which also flushes the process's
counters into the table's shared stats.

A table starts at 1024 slots (a 56 KiB index) and doubles as it fills, up to
what ``max_entries`` needs (or 2**21 slots, about 1.5 million entries, without
it); past that the least recently used entries go. Values are stored with
cloudpickle under the ``CLOUDPICKLE`` codec flag of ``mmcache.serialization``.

Besides the 16-byte argument keys a table holds its *tag* (under the str key
``"mmcache:tag"``, which no bytes key can equal): the key scheme
(``_identity.KEYSPACE``), ``version=`` and code hash of the version that
created (or last emptied) it, which ``mmcache prune-decorator-tables``
reads; and the record of the versions using it (``_versions``: when a table
is emptied for another version, and why side-by-side versions share it).
(Under ``max_entries`` pressure either may be evicted like any entry; keys
carry the version, so that costs at most a clean-up.) Leases (``_stampede``)
are 17-byte keys. A result stored with tags (``_tagging``) is a tag envelope
(``mmcache.tags``) around the pickle, its tokens kept in the directory's tag
table.
"""

from __future__ import annotations

import atexit
import math
import os
import pickle
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import cloudpickle

from mmcache._upgrade import replace_or_raise
from mmcache.errors import (
    CacheFullError,
    DiskFullError,
    FormatVersionError,
    IncompatibleCacheError,
    ValueTooLargeError,
)
from mmcache.serialization import CLOUDPICKLE
from mmcache.table import MmapCache
from mmcache.tags import TAGGED, seal

from ..table import LIVE_FRACTION as _LIVE_FRACTION
from ._identity import Identity
from ._location import default_dir, ensure_dir, table_path
from ._stampede import MISS, Lease, drop
from ._versions import CONFIRM_EVERY, VERSIONS_KEY, dump, load, must_clear

__all__ = ["RECORDED", "TAG_KEY", "FunctionTable", "close_all", "handle"]

TAG_KEY = "mmcache:tag"
RECORDED = b"|versions"  # ends TAG_KEY's value in tables that keep a versions record
INITIAL_SLOTS = 1024
DEFAULT_MAX_SLOTS = 1 << 21
KEY_SIZE = 24  # argument keys are 16 bytes, leases 17
SLOT_SIZE = KEY_SIZE + 32  # the core's fixed slot fields take 32 bytes

_PROTOCOL = pickle.HIGHEST_PROTOCOL
_CANNOT_STORE = (ValueTooLargeError, DiskFullError, CacheFullError)

_handles: dict[tuple[str, int | None, bytes | None], MmapCache] = {}
_registry_lock = threading.Lock()


def _max_slots(max_entries: int | None) -> int:
    if max_entries is None:
        return DEFAULT_MAX_SLOTS
    return max(INITIAL_SLOTS, math.ceil((max_entries + 64) / _LIVE_FRACTION) + 2)


def _open(path: str, max_entries: int | None, secret: bytes | None) -> MmapCache:
    """Open (or create) the table at ``path``; an existing table keeps the
    parameters in its header (it may have grown), so every process agrees.
    A table of another format version is replaced once no process has it
    open (``mmcache._upgrade``): it holds only results to compute again."""
    opts: dict[str, Any] = {
        "max_size": _max_slots(max_entries),
        "max_entries": max_entries,  # the tag and leases count too: results never exceed it
        "eviction": "lru",
        "secret": secret,  # signed records; unsigned ones are misses (see MmapCache)
    }
    for _ in range(5):
        if os.path.exists(path):
            try:
                return MmapCache.open(path, **opts)
            except FileNotFoundError:
                continue  # removed between the check and the open
            except FormatVersionError as e:
                replace_or_raise(e, "@mmap_cached")
                continue
        try:
            return MmapCache(path, min(INITIAL_SLOTS, opts["max_size"]), SLOT_SIZE, KEY_SIZE, **opts)
        except FormatVersionError as e:
            replace_or_raise(e, "@mmap_cached")
        except IncompatibleCacheError:
            continue  # another process created it first: adopt its parameters
    return MmapCache.open(path, **opts)


def handle(path: str, max_entries: int | None = None, secret: bytes | None = None) -> MmapCache:
    """This process's handle on the decorator-shaped table at ``path`` (opened once)."""
    with _registry_lock:
        t = _handles.get((path, max_entries, secret))
        if t is None:
            t = _handles[(path, max_entries, secret)] = _open(path, max_entries, secret)
        return t


@atexit.register
def close_all() -> None:
    """Close every handle this process opened (flushes its hit/miss counters)."""
    with _registry_lock:
        tables = list(_handles.values())
        _handles.clear()
    for t in tables:
        t.close()


class FunctionTable:
    """One function's table: where it is, how values go in and come out."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None,
        identity: Identity,
        max_entries: int | None,
        expire: float | None,
        secret: bytes | None = None,
    ) -> None:
        self.secret = secret
        self.directory = None if directory is None else os.path.abspath(os.fspath(directory))
        self.identity = identity
        self.max_entries = max_entries
        self.expire = expire  # seconds a stored value lives (ttl + stale_ttl), None: forever
        self._table: MmapCache | None = None
        self._lock = threading.Lock()
        self._warned = False
        self.on_open: Callable[[MmapCache], None] | None = None  # run once the table is first opened
        self.tags: Any = None  # a _tagging.Tagger if results are tagged: reads unwrap envelopes
        self._confirm_due = 0.0  # time.monotonic() of the next confirmation of our version

    @property
    def path(self) -> str:
        """The index file (the directory is resolved now: ``$MMCACHE_DIR`` may change)."""
        return table_path(self.directory or default_dir(), self.identity.table_id)

    def table(self) -> MmapCache:
        """The open table; the first call creates the directory and files."""
        t = self._table
        if t is not None:
            return t
        with self._lock:
            if self._table is None:
                path = self.path
                ensure_dir(os.path.dirname(path))
                t = handle(path, self.max_entries, self.secret)
                self._check_tag(t)
                self._table = t
                if self.on_open is not None:
                    self.on_open(t)
            return self._table

    def _check_tag(self, t: MmapCache) -> None:
        """Record our version in the table, emptying it first if ``_versions`` says so."""
        mine = self.identity.tag
        with t.transaction():
            raw = t.get(VERSIONS_KEY)
            versions = load(raw)
            stored = t.get(TAG_KEY)
            if raw is None and isinstance(stored, bytes) and not stored.endswith(RECORDED):
                # A table of the earlier scheme (a tag, no record): one version of unknown age.
                old = stored.decode("utf-8", "replace")
                versions[old] = time.time() if old == mine else 0.0
            if must_clear(versions, mine, time.time()):
                t.clear()  # entries of versions no process runs any more: never read again
                versions, stored = {}, None
            if stored is None:
                t.put(TAG_KEY, self._tag)
            self._confirm(t, versions)

    def _confirm(self, t: MmapCache, versions: dict[str, float] | None = None) -> None:
        """Record that our version uses the table now (writer lock held)."""
        if versions is None:
            versions = load(t.get(VERSIONS_KEY))
        versions[self.identity.tag] = time.time()
        t.put(VERSIONS_KEY, dump(versions))
        self._confirm_due = time.monotonic() + CONFIRM_EVERY

    @property
    def _tag(self) -> bytes:
        """What TAG_KEY holds: the tag, and a mark that the table keeps a
        versions record (so a record lost to eviction is not taken for a
        table of the earlier scheme)."""
        return self.identity.tag.encode("utf-8", "surrogatepass") + RECORDED

    def put_tag(self, t: MmapCache) -> None:
        """Store the tag and a record of our version alone (after ``t.clear()``)."""
        t.put(TAG_KEY, self._tag)
        self._confirm(t, {})

    def lookup(self, key: bytes) -> Any:
        """The value under ``key``, or MISS (also for a value that no longer
        unpickles, or a tagged one whose tags were invalidated)."""
        found = self.table().get(key, with_flags=True)
        if found is None:
            return MISS
        data, flags = found
        if flags & TAGGED:
            data = None if self.tags is None else self.tags.unwrap(data, flags)
            if data is None:
                return MISS
        try:
            return pickle.loads(data)
        except Exception:
            return MISS

    def save(
        self, key: bytes, value: Any, lease: Lease | None = None, stamp: bytes | None = None
    ) -> bytes | None:
        """Store ``value`` and release ``lease`` under one hold of the writer
        lock (pickled before taking it). A value that cannot be pickled or
        stored is not cached, with one warning per function. ``stamp``: the
        tag envelope's head, taken before the value was computed. Returns the
        pickle (None if there is none)."""
        data = self.encode(value)
        self.store(key, data, lease, stamp)
        return data

    def encode(self, value: Any) -> bytes | None:
        """``value`` pickled, or None (with a warning) if it cannot be."""
        try:
            return cloudpickle.dumps(value, protocol=_PROTOCOL)  # type: ignore[no-any-return]
        except Exception as exc:  # PicklingError, TypeError, RecursionError, ...
            self._warn(f"the result could not be pickled, so it was not cached: {exc!r}")
            return None

    def store(
        self, key: bytes, data: bytes | None, lease: Lease | None = None, stamp: bytes | None = None
    ) -> None:
        """Put ``data`` (if any, in a tag envelope if ``stamp``) and release
        ``lease``, under one hold of the lock."""
        t = self.table()
        with t.transaction():
            try:
                if data is not None:
                    value, flags = seal(stamp, data, CLOUDPICKLE)
                    t.put(key, value, self.expire, flags=flags)
                if time.monotonic() >= self._confirm_due:
                    self._confirm(t)
            except _CANNOT_STORE as exc:
                self._warn(f"not cached: {exc}")
            finally:
                if lease is not None:
                    drop(lease)

    def _warn(self, what: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(f"mmap_cached {self.identity.table_id}: {what}", RuntimeWarning, stacklevel=4)

    def currsize(self) -> int:
        """Live entries, the tag and record not counted (leases being computed are)."""
        t = self.table()
        return max(0, len(t) - (t.get(TAG_KEY) is not None) - (t.get(VERSIONS_KEY) is not None))

    def clear(self) -> None:
        """Empty the table for every process; keep the tag."""
        t = self.table()
        with t.transaction():
            t.clear()
            self.put_tag(t)
