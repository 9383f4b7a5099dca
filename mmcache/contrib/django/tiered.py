"""``TieredCacheBackend``: mmcache as each host's near cache (L1) in front of
Django's ``RedisCache`` (L2, the shared truth).

::

    CACHES = {
        "redis": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://cache.internal:6379/0",
            "OPTIONS": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5},
        },
        "default": {
            "BACKEND": "mmcache.contrib.django.TieredCacheBackend",
            "LOCATION": "/var/tmp/mysite-l1",     # this host's L1 table, shared by its workers
            "TIMEOUT": 300,                      # expiry in Redis, as for any Django cache
            "OPTIONS": {"L2": "redis", "L1_TIMEOUT": 10, "L2_ERRORS": "raise", "MAX_ENTRIES": 50_000},
        },
    }

- Reads: L1, then L2; a value found in L2 is copied into L1 for
  ``min(L1_TIMEOUT, its remaining L2 TTL)``.
- Writes and deletes go to L2 together with a pub/sub announcement of the key
  (one MULTI/EXEC), then remove the key from this host's L1; every host's
  subscriber removes it from its L1 when the announcement arrives. L1 is only
  ever filled by reads, through ``mmcache.l2.guard``, so a fill that raced an
  invalidation is refused.
- ``add``, ``incr``/``decr`` and ``touch`` are decided by Redis (a Lua script
  or a transaction), then the key leaves L1.
- Keys are made by this alias (its KEY_PREFIX, VERSION, KEY_FUNCTION) and used
  as they are in Redis; values cross Redis in the L2 alias's own serializer.
  A plain ``RedisCache`` with the same key settings reads and writes the same
  entries (its writes are not announced: they reach other hosts' L1 only
  after L1_TIMEOUT).
- Redis unreachable: reads answer from L1 (a miss returns the default); writes
  raise or log per ``L2_ERRORS`` (``incr``/``decr`` always raise: there is no
  value to return). A failed write still removes its key from this host's L1.

OPTIONS are described in ``_tiered_options``; the consistency it gives, in
``docs/TIERED.md``.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.core.cache import caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT, MEMCACHE_MAX_KEY_LENGTH, BaseCache
from django.core.cache.backends.redis import RedisCache
from django.core.exceptions import ImproperlyConfigured

from mmcache import CacheFullError, DiskFullError, MmapCache, ValueTooLargeError
from mmcache.l2 import UNREACHABLE, RedisL2, guard
from mmcache.serialization import PICKLE, RAW

from . import _tables
from ._async import AtomicAsyncMixin
from ._invalidation import Link, link_for
from ._tiered_options import TieredOptions
from .backend import _BAD_KEY_CHARS, _RECOVERABLE, MmapCacheBackend

R = TypeVar("R")
_MISS = object()
_ERROR = object()
_CANNOT_STORE = (ValueTooLargeError, DiskFullError, CacheFullError)
_pickle_loads = pickle.loads
_PROTO = pickle.PROTO


def _always(result: Any) -> bool:
    return True


class TieredCacheBackend(AtomicAsyncMixin, BaseCache):
    """A Django cache in Redis with a per-host mmcache table in front of it."""

    def __init__(self, location: str, params: Mapping[str, Any]) -> None:
        super().__init__(params)
        self._conf = TieredOptions.parse(params.get("OPTIONS") or {}, self.key_prefix)
        self._l1_params = {
            "OPTIONS": {
                **self._conf.l1_options,
                "MAX_ENTRIES": self._max_entries + guard.BUCKETS,  # the guard's epochs live in L1 too
                "CULL_FREQUENCY": self._cull_frequency,
            }
        }
        self._l1 = MmapCacheBackend(location, self._l1_params)
        self._link: Link | None = None
        self._loads: Callable[[bytes], Any] = _pickle_loads
        self._dumps: Callable[[Any], bytes | int] = pickle.dumps
        self._fast_pickle = False

    # ------------------------------------------------------------- plumbing
    def l2_cache(self) -> RedisCache:
        """The L2 alias's backend (a subclass may supply one another way)."""
        cache = caches[self._conf.l2_alias]
        if not isinstance(cache, RedisCache):
            raise ImproperlyConfigured(
                f"TieredCacheBackend: OPTIONS['L2'] = {self._conf.l2_alias!r} must name a "
                f"django.core.cache.backends.redis.RedisCache, not {type(cache).__name__}"
            )
        return cache

    def _linked(self) -> Link:
        """The process's link to L2 (made on first use; its subscriber kept running)."""
        link = self._link
        if link is None:
            location = self._l1.spec.location
            _tables.ensure_dir(location)
            c = self._conf
            link = link_for(self.l2_cache(), location, self._l1_params, c.channel, c.l2_retry)
            self._loads, self._dumps = link.serializer.loads, link.serializer.dumps
            self._fast_pickle = link.fast_pickle
            self._link = link
        else:
            link.subscriber.ensure_running()  # no-op unless a fork left it dead
        return link

    def _table(self) -> MmapCache:
        """First use in this thread: link to L2 first (the decoder comes from it)."""
        self._linked()
        return self._l1.table

    def _run(self, op: Callable[[MmapCache], R]) -> R:
        if self._l1._t is None:
            self._table()
        return self._l1._run(op)

    def _ttl(self, timeout: Any) -> float | None:
        """Django's timeout -> seconds from now (None: no expiry; <= 0: delete)."""
        exp = self.get_backend_timeout(timeout)
        return None if exp is None else exp - time.time()

    def validate_key(self, key: Any) -> None:
        """BaseCache's warnings, with MmapCacheBackend's fast path."""
        if len(key) > MEMCACHE_MAX_KEY_LENGTH or _BAD_KEY_CHARS.search(key):
            super().validate_key(key)

    def _decode(self, data: bytes, flags: int) -> Any:
        return _pickle_loads(data) if flags == PICKLE else self._loads(data)

    # -------------------------------------------------------------- L1 side
    def _l1_get(self, key: str) -> Any:
        """(data, flags) from L1, or _MISS."""
        try:
            t = self._l1._t  # (not `or`: a table's truthiness is its __len__)
            return (self._table() if t is None else t).get(key, _MISS, with_flags=True)
        except _RECOVERABLE:
            return self._l1._retry(lambda t: t.get(key, _MISS, with_flags=True))

    def _fill(
        self, found: Mapping[str, tuple[bytes, float | None]], tokens: Mapping[str, bytes | None]
    ) -> None:
        """Copy values just read from L2 into L1 (unless an invalidation raced)."""
        cap = self._conf.l1_timeout
        rows = []
        for key, (data, ttl) in found.items():
            flags = PICKLE if self._fast_pickle and data.startswith(_PROTO) else RAW
            rows.append((key, data, flags, cap if ttl is None else min(cap, ttl), tokens[key]))
        if rows:
            try:
                self._run(lambda t: guard.fill(t, rows, self._l1._cull))
            except _CANNOT_STORE:
                pass  # a read must not fail because L1 has no room: the next read asks Redis again

    def _invalidate(self, keys: list[str]) -> None:
        if keys:
            self._run(lambda t: guard.invalidate(t, keys))

    def _from_l2(self, keys: list[str]) -> dict[str, Any]:
        """{made key: value} read from L2 and copied into L1; {} if Redis is unreachable."""
        link = self._linked()
        tokens = self._run(lambda t: {k: guard.snapshot(t, k) for k in keys})
        try:
            found = link.l2.get_many_with_ttl(keys)
        except UNREACHABLE as e:
            link.warn("a read", e)
            return {}
        values = {k: self._loads(data) for k, (data, _) in found.items()}  # before storing: must decode
        self._fill(found, tokens)
        return values

    def _write(
        self,
        keys: list[str],
        op: Callable[[RedisL2], R],
        on_error: Any,
        changed: Callable[[Any], bool] = _always,
        always_raise: bool = False,
    ) -> Any:
        """``op`` on L2, then ``keys`` leave this host's L1 if ``changed(result)``,
        or anyway if Redis could not be reached (the write may have happened)."""
        link = self._linked()
        try:
            result = op(link.l2)
        except UNREACHABLE as e:
            self._invalidate(keys)
            if always_raise or self._conf.l2_errors == "raise":
                raise
            link.warn("a write", e)
            return on_error
        if changed(result):
            self._invalidate(keys)
        return result

    # ---------------------------------------------------------------- reads
    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        key = self.make_and_validate_key(key, version=version)
        r = self._l1_get(key)
        if r is not _MISS:
            return self._decode(*r)
        return self._from_l2([key]).get(key, default)

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        made = {self.make_and_validate_key(k, version=version): k for k in keys}
        found: dict[Any, Any] = {}
        missing = []
        for mk, k in made.items():
            r = self._l1_get(mk)
            if r is _MISS:
                missing.append(mk)
            else:
                found[k] = self._decode(*r)
        if missing:
            for mk, value in self._from_l2(missing).items():
                found[made[mk]] = value
        return found

    def has_key(self, key: Any, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        if self._run(lambda t: t.get_entry(key)) is not None:
            return True
        link = self._linked()
        try:
            return link.l2.exists(key)
        except UNREACHABLE as e:
            link.warn("a read", e)
            return False

    def l1_has_key(self, key: Any, version: int | None = None) -> bool:
        """Whether this host's L1 holds ``key`` now (for tests and debugging)."""
        key = self.make_and_validate_key(key, version=version)
        return self._run(lambda t: t.get_entry(key)) is not None

    # --------------------------------------------------------------- writes
    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        key = self.make_and_validate_key(key, version=version)
        data = self._encode(value)
        ttl = self._ttl(timeout)
        self._write([key], lambda l2: l2.set(key, data, ttl), None)

    def _encode(self, value: Any) -> bytes | int:
        if self._link is None:
            self._linked()  # the L2 alias's serializer
        return self._dumps(value)

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        data = self._encode(value)
        ttl = self._ttl(timeout)
        return bool(self._write([key], lambda l2: l2.add(key, data, ttl), False, changed=bool))

    def set_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        """Returns the keys not stored: all of them if Redis is unreachable and L2_ERRORS is "log"."""
        items = {self.make_and_validate_key(k, version=version): self._encode(v) for k, v in data.items()}
        if not items:
            return []
        ttl = self._ttl(timeout)
        failed = self._write(list(items), lambda l2: l2.set_many(items, ttl), _ERROR)
        return list(data) if failed is _ERROR else []

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        ttl = self._ttl(timeout)
        return bool(self._write([key], lambda l2: l2.touch(key, ttl), False, changed=bool))

    def delete(self, key: Any, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        return bool(self._write([key], lambda l2: l2.delete(key), False))

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        made = [self.make_and_validate_key(k, version=version) for k in keys]
        if made:
            self._write(made, lambda l2: l2.delete_many(made), None)

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        """Decided by Redis (INCRBY in a script that checks the key exists)."""
        made = self.make_and_validate_key(key, version=version)
        n = self._write(
            [made], lambda l2: l2.incr(made, delta), None, changed=lambda n: n is not None, always_raise=True
        )
        if n is None:
            raise ValueError(f"Key '{key}' not found")
        return n

    def clear(self) -> None:
        """FLUSHDB on Redis (as ``RedisCache.clear``), announced; this host's L1 is emptied."""
        link = self._linked()
        try:
            link.l2.flush()
        except UNREACHABLE as e:
            if self._conf.l2_errors == "raise":
                raise
            link.warn("clear", e)
        finally:
            self._run(guard.reset)

    def close(self, **kwargs: Any) -> None:
        """Nothing to do: the table and the Redis pool stay open between requests."""

    # ---------------------------------------------------------------- async
    # An L1 hit answers inline; anything that talks to Redis runs in a thread.
    # BaseCache's aincr / aset_many / ... compose aget and aset, which would
    # not be decided by Redis: they delegate to the sync methods instead.
    async def aget(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        made = self.make_and_validate_key(key, version=version)
        r = self._l1_get(made)
        if r is not _MISS:
            return self._decode(*r)
        found = await sync_to_async(self._from_l2, thread_sensitive=True)([made])
        return found.get(made, default)

    async def aget_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        return await sync_to_async(self.get_many, thread_sensitive=True)(keys, version=version)

    # ----------------------------------------------------------------- info
    def get_stats(self) -> dict[str, Any]:
        """L1's counters plus the state of this process's link to Redis."""
        stats = self._l1.get_stats()
        stats.pop("codec", None)  # values are in the L2 alias's serializer
        link = self._linked()
        sub = link.subscriber
        stats.update(
            l2=repr(link.l2.client),
            l2_available=link.l2.available,
            channel=link.l2.channel,
            l1_timeout=self._conf.l1_timeout,
            subscriber_leader=sub.leader,
            subscriber_connected=sub.connected,
            subscriptions=sub.subscriptions,
            invalidations_received=sub.invalidated,
        )
        return stats

    def __repr__(self) -> str:
        return f"<{type(self).__name__} L1={self._l1.spec.location!r} L2={self._conf.l2_alias!r}>"
