"""``MmapCacheBackend``: Django's cache API over one shared mmcache table.

::

    CACHES = {
        "default": {
            "BACKEND": "mmcache.contrib.django.MmapCacheBackend",
            "LOCATION": "/var/tmp/mysite-cache",   # a directory, created if missing
            "TIMEOUT": 300,
            "OPTIONS": {"MAX_ENTRIES": 100_000, "CULL_FREQUENCY": 3, "CODEC": "pickle"},
        }
    }

Every worker process on the host opens the same files, so a value one worker
stores is a hit in all the others. This class only adapts Django's contract:
keys are made and validated by ``BaseCache``, values go through
``mmcache.serialization`` (codec in the record flags), and the table handle
comes from ``_tables`` (one per process, shared by every instance).

Culling follows Django's rule exactly: before ``set``/``add`` stores, if the
table holds ``>= MAX_ENTRIES`` entries, ``count // CULL_FREQUENCY`` of them are
evicted (expired first, then least recently used), or all of them when
``CULL_FREQUENCY`` is 0. The count is the table's, shared by every alias on
that LOCATION (as with ``FileBasedCache``); the limits are the alias's own.
The check, the cull and the store happen under the table's writer lock, so
they are atomic across processes; so are ``add``, ``incr``/``decr``, ``touch``
and ``incr_version``.

OPTIONS (besides Django's MAX_ENTRIES and CULL_FREQUENCY):

- ``CODEC``: ``"pickle"`` (default, Django's convention) or ``"cloudpickle"``
  (lambdas, local classes). Exact ``bytes`` values are always stored raw.
- ``PICKLE_PROTOCOL``: default ``pickle.HIGHEST_PROTOCOL``.
- ``TABLE_SIZE``: initial slots (default 4096, a 384 KiB index). The table
  doubles as it fills, up to ``MAX_TABLE_SIZE`` (default: enough slots for
  MAX_ENTRIES, so the core never evicts before Django's cull does).
- ``SLOT_SIZE``, ``KEY_SIZE``, ``MAX_SEGMENT_BYTES``: the core's file layout
  (keys longer than KEY_SIZE bytes are hashed; the full key is still checked).
- ``ALLOW_NETWORK_FS``: None (warn), False (refuse) or True (allow) a
  LOCATION on NFS/CIFS/..., where locks and maps are not coherent across hosts.

An existing table keeps the layout it was created with. Deleting LOCATION
while the site runs is survived: the next write that notices recreates it
(writes in the core's 0.25 s staleness window may land in the deleted files).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from django.core.cache.backends.base import (
    DEFAULT_TIMEOUT,
    MEMCACHE_MAX_KEY_LENGTH,
    BaseCache,
    default_key_func,
)
from django.core.exceptions import ImproperlyConfigured

from mmcache import ClosedCacheError, CorruptCacheError, MmapCache
from mmcache.serialization import dumps, loads
from mmcache.tags import TAGGED

from . import _groups, _tables
from ._async import InlineAsyncMixin
from ._tables import Settings, TableSpec

R = TypeVar("R")
_RECOVERABLE = (FileNotFoundError, ClosedCacheError, CorruptCacheError)
_BAD_KEY_CHARS = re.compile(r"[\x00-\x20\x7f]")  # as django.core.cache.backends.base
_time_ns = time.time_ns


_MISS = object()


class MmapCacheBackend(InlineAsyncMixin, BaseCache):
    """A Django cache shared by every process on the host, in mapped files."""

    def __init__(self, location: str, params: Mapping[str, Any]) -> None:
        super().__init__(params)
        if not location:
            raise ImproperlyConfigured("mmcache's Django backend needs a LOCATION (a directory)")
        self._location = os.path.abspath(os.fspath(location))
        self._settings = Settings.from_options(params.get("OPTIONS") or {})
        self._codec = self._settings.codec
        self._protocol = self._settings.protocol
        self._spec: TableSpec | None = None
        self._t: MmapCache | None = None  # resolved on first use
        # Keys made by Django's default rule and checked by our validate_key
        # can be made inline (make_and_validate_key); a KEY_FUNCTION or a
        # subclass overriding either method gets the general path.
        cls = type(self)
        self._plain_keys = (
            cls.make_key is BaseCache.make_key and cls.validate_key is MmapCacheBackend.validate_key
        )

    # ------------------------------------------------------------- the table
    @property
    def spec(self) -> TableSpec:
        """Which table this alias uses (fixed at first use)."""
        spec = self._spec
        if spec is None:
            spec = self._spec = TableSpec.build(
                self._location, self._settings, self._max_entries, self._cull_frequency
            )
        return spec

    @property
    def table(self) -> MmapCache:
        """The process-wide ``MmapCache`` handle behind this alias."""
        t = self._t
        if t is None:
            t = self._t = _tables.table_for(self.spec)
        return t

    def _run(self, op: Callable[[MmapCache], R]) -> R:
        """``op(table)``, retried once if the table's files were deleted under
        us (someone removed LOCATION while the site runs: the table is
        recreated first) or another thread's recovery replaced the handle."""
        try:
            return op(self.table if (t := self._t) is None else t)
        except _RECOVERABLE:
            return self._retry(op)

    def _retry(self, op: Callable[[MmapCache], R]) -> R:
        """Called in an ``except _RECOVERABLE`` block: recover and run ``op``
        again, or re-raise the error being handled."""
        if not self._recover():
            raise  # the exception the caller is handling
        return op(self.table)

    def _recover(self) -> bool:
        """After an error that a deleted LOCATION or a replaced handle causes:
        switch to a working handle if a retry can succeed; False if not."""
        spec = self.spec
        stale = self._t
        current = _tables.current(spec)
        if current is not None and current is not stale:
            self._t = current  # another thread already reopened the table
        elif _tables.files_missing(spec):
            self._t = _tables.reopen(spec, stale)
        elif current is None:
            self._t = _tables.table_for(spec)  # handles were closed at exit
        else:
            return False
        return True

    # ---------------------------------------------------------- conversions
    def validate_key(self, key: Any) -> None:
        """BaseCache's memcached-portability warnings, with a fast path: the
        precompiled test below passes exactly the keys Django would not warn
        about; anything else goes to Django's own validate_key."""
        if len(key) > MEMCACHE_MAX_KEY_LENGTH or _BAD_KEY_CHARS.search(key):
            super().validate_key(key)

    def make_and_validate_key(self, key: Any, version: int | None = None) -> str:
        """BaseCache's, with Django's default key rule written out (every
        call starts here: it is a third of a hit)."""
        if self._plain_keys and self.key_func is default_key_func:
            # "%s" as in default_key_func (an f-string would call __format__)
            key = "%s:%s:%s" % (self.key_prefix, self.version if version is None else version, key)  # noqa: UP031
            if len(key) > MEMCACHE_MAX_KEY_LENGTH or _BAD_KEY_CHARS.search(key):
                BaseCache.validate_key(self, key)
            return key  # type: ignore[no-any-return]
        return super().make_and_validate_key(key, version=version)  # type: ignore[no-any-return]

    def _expire(self, timeout: Any) -> float | None:
        """Django's timeout -> the core's seconds from now (None = forever):
        ``get_backend_timeout`` without its clock read (the core reads it)."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return None
        return -1 if timeout == 0 else timeout

    def _encode(self, value: Any) -> tuple[bytes, int]:
        return dumps(value, self._codec, self._protocol)

    def _cull(self, t: MmapCache) -> None:
        """Django's rule, with the writer lock held, before a store."""
        n = len(t)
        if n >= self._max_entries:
            if self._cull_frequency == 0:
                t.clear()
            else:
                t.evict(n // self._cull_frequency)

    # ---------------------------------------------------------------- reads
    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        key = self.make_and_validate_key(key, version=version)
        try:  # _run() written out: this is the hot path
            # `self._t or ...` would call the table's __len__ (its truthiness)
            r = (self.table if (t := self._t) is None else t).get(key, _MISS, with_flags=True)
        except _RECOVERABLE:
            r = self._retry(lambda t: t.get(key, _MISS, with_flags=True))
        if r is _MISS:
            return default
        if r[1] & TAGGED:  # a tagged entry: a miss if one of its tags was invalidated
            return _groups.decode(self.table, r[0], r[1], default)
        return loads(*r)

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        made = [(k, self.make_and_validate_key(k, version=version)) for k in keys]  # one pass

        def op(t: MmapCache) -> dict[Any, Any]:
            found = {}
            for k, mk in made:
                r = t.get(mk, _MISS, with_flags=True)
                if r is not _MISS and (v := _groups.decode(t, r[0], r[1], _MISS)) is not _MISS:
                    found[k] = v
            return found

        return self._run(op)

    def has_key(self, key: Any, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)

        def op(t: MmapCache) -> bool:
            e = t.get_entry(key)
            return e is not None and _groups.live(t, e.value, e.flags)

        return self._run(op)

    # --------------------------------------------------------------- writes
    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None, *,
        tags: Iterable[str] | None = None,
    ) -> None:  # fmt: skip
        """Django's ``set``; ``tags`` makes the entry a miss after ``invalidate_tags`` of any."""
        key = self.make_and_validate_key(key, version=version)
        data, flags = self._encode(value)
        if tags:
            data, flags = self._run(lambda t: _groups.wrap(t, (data, flags), tags))
        expire = self._expire(timeout)
        t = self.table if (t := self._t) is None else t  # (not `or`: see get)
        try:
            # Far from MAX_ENTRIES (the common case) a set is one put, one
            # lock round trip. Near it, the count is checked again and the
            # cull done with the store, under the lock; a set racing another
            # process's set across the line can leave the table one entry
            # over until the next set culls (Django's own file and database
            # backends are looser still).
            if len(t) < self._max_entries:
                t.put(key, data, expire, flags=flags)
                return
        except _RECOVERABLE:
            pass

        def op(t: MmapCache) -> None:
            with t.transaction():
                self._cull(t)
                t.put(key, data, expire, flags=flags)

        self._run(op)

    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None, *,
        tags: Iterable[str] | None = None,
    ) -> bool:  # fmt: skip
        key = self.make_and_validate_key(key, version=version)
        encoded = self._encode(value)

        def op(t: MmapCache) -> bool:
            data, flags = _groups.wrap(t, encoded, tags)
            with t.transaction():
                e = t.get_entry(key)
                if e is not None and _groups.live(t, e.value, e.flags):
                    return False
                self._cull(t)  # only when the add will store, as Django's backends do
                if e is None:
                    return bool(t.add(key, data, self._expire(timeout), flags=flags))
                t.put(key, data, self._expire(timeout), flags=flags)  # over a stale tagged entry
                return True

        return self._run(op)

    def set_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        # Encode everything first: an unpicklable value stores nothing.
        items = [(self.make_and_validate_key(k, version=version), *self._encode(v)) for k, v in data.items()]

        def op(t: MmapCache) -> None:
            with t.transaction():
                expire = self._expire(timeout)
                for key, value, flags in items:
                    self._cull(t)
                    t.put(key, value, expire, flags=flags)

        if items:
            self._run(op)
        return []

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        return bool(self._run(lambda t: t.touch(key, self._expire(timeout))))

    def delete(self, key: Any, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        return bool(self._run(lambda t: t.delete(key)))

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        made = [self.make_and_validate_key(k, version=version) for k in keys]

        def op(t: MmapCache) -> None:
            with t.transaction():
                for key in made:
                    t.delete(key)

        if made:
            self._run(op)

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Add ``delta`` atomically (across processes); the expiry is kept."""
        made = self.make_and_validate_key(key, version=version)

        def op(t: MmapCache) -> Any:
            with t.transaction():
                e = t.get_entry(made)
                old: Any = _MISS if e is None else _groups.decode(t, e.value, e.flags, _MISS)
                if e is None or old is _MISS:
                    raise ValueError(f"Key '{key}' not found")
                new_value = old + delta
                data, flags = _groups.rewrap(t, e.value, e.flags, self._encode(new_value))
                t.put(made, data, flags=flags, expire_at_ns=e.expire_ns)
                return new_value

        return self._run(op)

    def incr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        """Move a value to ``version + delta`` atomically, keeping its expiry."""
        if version is None:
            version = self.version
        old = self.make_and_validate_key(key, version=version)
        new = self.make_and_validate_key(key, version=version + delta)

        def op(t: MmapCache) -> None:
            with t.transaction():
                e = t.get_entry(old)
                if e is None:
                    raise ValueError(f"Key '{key}' not found")
                self._cull(t)
                t.put(new, e.value, flags=e.flags, expire_at_ns=e.expire_ns)
                t.delete(old)

        self._run(op)
        return version + delta

    # -------------------------------------------------- group invalidation
    def delete_pattern(
        self, pattern: str, version: int | None = None, prefix: str | None = None, itersize: int | None = None
    ) -> int:
        """Delete every key matching the Redis glob ``pattern`` (django-redis's
        ``delete_pattern``: the key prefix and version are put in front, glob-
        escaped); returns how many were deleted. Scans every key: O(entries).
        ``itersize`` is accepted for django-redis compatibility and unused."""
        full = _groups.make_pattern(
            self.key_func,
            pattern,
            self.key_prefix if prefix is None else prefix,
            self.version if version is None else version,
        )
        regex = _groups.glob_to_regex(full)
        return self._run(lambda t: _groups.delete_matching(t, regex))

    def invalidate_tags(self, *tags: str) -> int:
        """Make every entry stored with any of ``tags`` a miss, in every
        process, at O(1) per tag (``mmcache.tags``); returns the number of tags."""
        return self._run(lambda t: _groups.invalidate(t, tags))

    def clear(self) -> None:
        """Remove every entry of the table (all aliases sharing LOCATION)."""
        self._run(lambda t: t.clear())

    def close(self, **kwargs: Any) -> None:
        """Nothing to do: the process-wide table stays open between requests."""

    # ----------------------------------------------------------------- info
    def get_stats(self) -> dict[str, Any]:
        """The table's counters (shared by all processes) and this alias's limits."""
        stats = self.table.get_stats()
        stats.update(
            location=self.spec.location,
            max_entries=self._max_entries,
            cull_frequency=self._cull_frequency,
            codec=self._codec,
        )
        return stats

    def verify(self) -> list[str]:
        """Check the table's invariants; returns the problems found."""
        return self.table.verify()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._location!r}>"
