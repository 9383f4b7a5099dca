"""Fill L1 from L2 without undoing an invalidation that raced the read.

The race: a process reads ``k`` from Redis (old value), another host then
writes ``k`` and its invalidation removes ``k`` from this host's table, and
only then the first process stores the old value it read. Without a guard
that stale copy would live until the L1 timeout.

The guard: every key hashes to one of ``BUCKETS`` buckets, and each bucket
has an *epoch*, a random 8-byte token kept in the table itself (under a
``bytes`` key; the faces use ``str`` keys or digests of another length, so
the two never meet). An invalidation replaces the epoch of the key's bucket
and deletes the key in one table transaction. A fill reads the epoch before
asking L2 (``snapshot``) and stores, in one table transaction, only if the
epoch is still the same (``fill``). Both transactions hold the table's
writer lock, so either the invalidation comes first (the fill sees a new
epoch and stores nothing) or the fill does (the invalidation deletes it).

An epoch evicted from the table reads as None, which differs from any
token; ``reset`` (a clear) writes fresh epochs for every bucket, so a
snapshot of None cannot match again after a clear either. A refused fill
costs nothing but a later L2 read.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterable, Sequence

from mmcache import MmapCache

Key = str | bytes
BUCKETS = 128
_EPOCH_KEYS = [b"\x00mmcache.l2.epoch." + b.to_bytes(2, "big") for b in range(BUCKETS)]


def bucket(key: Key) -> int:
    """The bucket of ``key``, the same in every process."""
    kb = key.encode("utf-8", "surrogatepass") if isinstance(key, str) else key
    return zlib.crc32(kb) % BUCKETS


def _new_token() -> bytes:
    return os.urandom(8)


def snapshot(t: MmapCache, key: Key) -> bytes | None:
    """The epoch of ``key``'s bucket: take it before reading L2 (lock-free)."""
    token: bytes | None = t.get(_EPOCH_KEYS[bucket(key)])
    return token


def fill(
    t: MmapCache,
    items: Sequence[tuple[Key, bytes, int, float, bytes | None]],
    before_put: Callable[[MmapCache], None] | None = None,
) -> int:
    """Store ``(key, value, flags, expire_seconds, token)`` items whose
    bucket's epoch still equals ``token``, in one transaction; ``before_put``
    (e.g. a cull) runs under the lock before each store. Returns how many
    were stored."""
    stored = 0
    with t.transaction():
        for key, value, flags, expire, token in items:
            if expire <= 0 or t.get(_EPOCH_KEYS[bucket(key)]) != token:
                continue
            if before_put is not None:
                before_put(t)
            t.put(key, value, expire, flags=flags)
            stored += 1
    return stored


def invalidate(t: MmapCache, keys: Iterable[Key]) -> None:
    """Delete ``keys`` and renew their buckets' epochs, in one transaction."""
    keys = list(keys)
    with t.transaction():
        for key in keys:  # first: a delete needs no new heap space, an epoch does
            t.delete(key)
        for b in {bucket(key) for key in keys}:
            t.put(_EPOCH_KEYS[b], _new_token())


def reset(t: MmapCache) -> None:
    """Remove every entry and renew every epoch, in one transaction."""
    with t.transaction():
        t.clear()
        for k in _EPOCH_KEYS:
            t.put(k, _new_token())


def is_epoch_key(key: Key) -> bool:
    """True for the guard's own entries (to hide them from listings)."""
    return isinstance(key, bytes) and key.startswith(b"\x00mmcache.l2.epoch.")
