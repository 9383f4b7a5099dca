"""The process-wide link from tiered aliases to Redis.

Django makes one backend instance per thread and alias; the link is made once
per process for each (L1 directory, Redis server, channel): one ``RedisL2``
on the L2 alias's own connection pool and serializer, and one
``HostSubscriber`` whose lock file sits in the L1 directory, so that one
process per host listens (see ``mmcache.l2.subscriber``).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisSerializer

from mmcache import MmapCache
from mmcache.l2 import HostSubscriber, RedisL2, guard

from . import _tables
from .backend import _RECOVERABLE, MmapCacheBackend

log = logging.getLogger("mmcache.contrib.django.tiered")
WARN_EVERY = 10.0  # seconds between two warnings about an unreachable Redis


@dataclass(eq=False)
class Link:
    """One process's connection to the shared tier, for one L1 directory."""

    l2: RedisL2
    subscriber: HostSubscriber
    serializer: Any  # the L2 alias's: dumps(obj) -> bytes | int, loads(bytes) -> obj
    fast_pickle: bool  # the serializer is Django's own: bytes starting with pickle.PROTO are a pickle
    _warned_at: float = field(default=-WARN_EVERY)

    def warn(self, what: str, exc: BaseException) -> None:
        """Log an unreachable Redis, at most once per WARN_EVERY seconds."""
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning(
                "mmcache: Redis unreachable during %s (%s: %s); L1 only", what, type(exc).__name__, exc
            )


_links: dict[tuple[Any, ...], Link] = {}
_lock = threading.Lock()


def link_for(
    l2_cache: RedisCache, location: str, l1_params: Mapping[str, Any], channel: str, retry_after: float
) -> Link:
    """This process's link for ``location`` (made, and its subscriber
    started, on first use)."""
    key = (location, tuple(l2_cache._servers), repr(sorted(l2_cache._options.items())), channel)
    link = _links.get(key)
    if link is None:
        with _lock:
            link = _links.get(key)
            if link is None:
                link = _links[key] = _make(key, l2_cache, location, l1_params, channel, retry_after)
    link.subscriber.ensure_running()
    return link


def _make(
    key: tuple[Any, ...],
    l2_cache: RedisCache,
    location: str,
    l1_params: Mapping[str, Any],
    channel: str,
    retry_after: float,
) -> Link:
    client = l2_cache._cache  # Django's RedisCacheClient: its pools and serializer
    # Everything goes to the first (write) server, reads included: a lagging
    # replica could hand back a value an invalidation has already removed.
    l2 = RedisL2(client.get_client(None, write=True), channel, retry_after=retry_after)
    l1 = MmapCacheBackend(location, l1_params)  # the subscriber's own handle on the same table

    def apply(op: Callable[[MmapCache], None]) -> None:
        """``op`` on the L1 table, unless its files are gone: a table that is
        not there holds nothing stale, and must not be created from here."""
        if _tables.files_missing(l1.spec):
            return
        try:
            op(l1.table)
        except _RECOVERABLE:
            if not _tables.files_missing(l1.spec):
                l1._retry(op)

    def on_keys(keys: list[bytes]) -> None:
        made = [k.decode("utf-8", "surrogateescape") for k in keys]
        apply(lambda t: guard.invalidate(t, made))

    def on_clear() -> None:
        apply(guard.reset)

    tag = zlib.crc32(repr(key[1:]).encode())
    lock_path = os.path.join(location, f"l2-subscriber.{tag:08x}.lock")
    serializer = client._serializer
    fast = type(serializer) is RedisSerializer and serializer.protocol >= 2
    return Link(l2, HostSubscriber(l2, lock_path, on_keys, on_clear), serializer, fast)


def links() -> list[Link]:
    """This process's links (for stats and tests)."""
    with _lock:
        return list(_links.values())


def stop_all(timeout: float = 5.0) -> None:
    """Stop every subscriber of this process (another process takes over)."""
    for link in links():
        link.subscriber.stop(timeout)
    with _lock:
        _links.clear()


# Registered after ``_tables``' close_all, so it runs first: no subscriber
# is left working on a table that interpreter exit is closing.
atexit.register(stop_all, 1.0)
