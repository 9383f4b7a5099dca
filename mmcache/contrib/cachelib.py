"""``MmapCache``: a ``cachelib`` backend over one shared mmcache table.

Flask-Caching and Flask-Session both sit on ``cachelib.BaseCache``; this
class gives them a cache that every worker process on the host shares (a
value one gunicorn worker stores is a hit in all the others), with no server.
It is constructed like cachelib's ``FileSystemCache``: the directory first,
then ``threshold``, ``default_timeout``, ``mode``::

    from mmcache.contrib.cachelib import MmapCache
    cache = MmapCache("/var/tmp/myapp-cache", threshold=10_000, default_timeout=300)

    # Flask-Caching (an import path containing "cachelib" is called with
    # CACHE_ARGS and CACHE_OPTIONS as they are)
    app.config.update(CACHE_TYPE="mmcache.contrib.cachelib.MmapCache",
                      CACHE_ARGS=["/var/tmp/myapp-cache"])
    # Flask-Session
    app.config.update(SESSION_TYPE="cachelib", SESSION_CACHELIB=MmapCache("/var/tmp/myapp-sessions"))

cachelib's rules are kept: ``timeout=None`` is ``default_timeout``, 0 is
forever, a ``timedelta`` counts in whole seconds; ``threshold`` (0: none)
caps the entries (expired ones go first, then the least recently used);
values go through ``self.serializer`` (pickle; assign another cachelib
serializer to change it). ``add``, ``inc`` and ``dec`` are atomic across
processes (``inc`` keeps the entry's expiry, as Redis's INCRBY does).

Beyond cachelib: ``set(..., tags=[...])`` and ``invalidate_tags(...)`` (see
``mmcache.tags``), and ``table`` for the core's statistics and tools.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Iterable
from typing import Any

from cachelib.base import BaseCache
from cachelib.serializers import BaseSerializer

from mmcache._core.fs import make_private_dirs
from mmcache.table import LIVE_FRACTION
from mmcache.table import MmapCache as Table
from mmcache.tags import TAGGED, Tags

TABLE_NAME = "mmcache"  # <cache_dir>/mmcache (+ .heap.*, .roster.*, .lock), as the Django backend
DEFAULT_TABLE_SIZE = 4096  # initial slots (a 384 KiB index); the table doubles as it fills
UNBOUNDED_MAX_SLOTS = 1 << 20  # threshold=0: grow up to this many slots (a 96 MiB index)
_MISS = object()


class MmapSerializer(BaseSerializer):
    """Default serializer for ``MmapCache`` (pickle, as cachelib's others)."""


def _slots_for(threshold: int) -> int:
    """Slots a table needs so that the core never evicts before the threshold does."""
    if threshold <= 0:
        return UNBOUNDED_MAX_SLOTS
    return max(DEFAULT_TABLE_SIZE, math.ceil((threshold + 64) / LIVE_FRACTION) + 2)


class MmapCache(BaseCache):
    """A cachelib cache shared by every process on the host, in mapped files."""

    serializer: Any = MmapSerializer()

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        threshold: int = 500,
        default_timeout: int | dt.timedelta = 300,
        mode: int | None = None,
        ignore_delete_many_errors: bool = True,
        *,
        key_prefix: str | None = None,
        table_size: int = DEFAULT_TABLE_SIZE,
        max_table_size: int | None = None,
        allow_network_fs: bool | None = None,
    ) -> None:
        super().__init__(default_timeout, ignore_delete_many_errors=ignore_delete_many_errors)
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
            raise ValueError(f"threshold must be an int >= 0 (0: no limit), not {threshold!r}")
        if key_prefix is not None and not isinstance(key_prefix, str):
            raise TypeError("key_prefix must be a str")
        self._path = os.path.abspath(os.fspath(cache_dir))
        self._threshold = threshold
        self.key_prefix = key_prefix or ""
        make_private_dirs(self._path)
        max_size = max(max_table_size or _slots_for(threshold), table_size)
        self.table = Table(
            os.path.join(self._path, TABLE_NAME),
            table_size,
            max_size=max_size,
            mode=0o600 if mode is None else mode,
            allow_network_fs=allow_network_fs,
        )
        self.tags = Tags(self.table)

    # ------------------------------------------------------------ helpers
    def _key(self, key: str) -> str:
        if not isinstance(key, str):
            raise TypeError(f"cachelib keys are str, not {type(key).__name__}")
        return self.key_prefix + key

    def _expire(self, timeout: int | dt.timedelta | None) -> float | None:
        """cachelib's timeout -> the core's (None: forever; <= 0: gone at once)."""
        seconds = self._normalize_timeout(timeout)
        if seconds == 0:
            return None
        return seconds if seconds > 0 else -1

    def _dumps(self, value: Any) -> bytes | None:
        data = self.serializer.dumps(value)
        return bytes(data) if data is not None else None

    def _decode(self, r: Any) -> Any:
        """A ``get(..., with_flags=True)`` result -> the value (None: miss)."""
        if r is _MISS:
            return None
        data, flags = r
        if flags & TAGGED:
            inner = self.tags.unwrap(data, flags)
            if inner is None:
                return None
            data = inner[0]
        return self.serializer.loads(bytes(data))

    def _make_room(self, t: Table) -> None:
        """With the writer lock held, before storing a new key: keep at most
        ``threshold`` entries (expired ones go first, then the least used)."""
        if self._threshold and len(t) >= self._threshold:
            t.purge_expired()
            over = len(t) - self._threshold + 1
            if over > 0:
                t.evict(over)

    def _store(self, key: str, data: bytes, timeout: Any, tags: Iterable[str] | None) -> None:
        flags = 0
        if tags:
            data, flags = self.tags.wrap(data, flags, tags)
        expire = self._expire(timeout)
        t = self.table
        if not self._threshold or len(t) < self._threshold - 1:
            t.put(key, data, expire, flags=flags)  # far from the threshold: one lock round trip
            return
        with t.transaction():
            if t.get_entry(key) is None:
                self._make_room(t)
            t.put(key, data, expire, flags=flags)

    # -------------------------------------------------------------- reads
    def get(self, key: str) -> Any:
        return self._decode(self.table.get(self._key(key), _MISS, with_flags=True))

    def get_many(self, *keys: str) -> list[Any]:
        return [self.get(k) for k in keys]

    def has(self, key: str) -> bool:
        e = self.table.get_entry(self._key(key))
        return e is not None and self.tags.live(e.value, e.flags)

    # ------------------------------------------------------------- writes
    def set(
        self,
        key: str,
        value: Any,
        timeout: int | dt.timedelta | None = None,
        *,
        tags: Iterable[str] | None = None,
    ) -> bool:
        """Store ``value``; False if the serializer could not encode it.
        ``tags`` makes the entry a miss after ``invalidate_tags`` of any of them."""
        data = self._dumps(value)
        if data is None:
            return False
        self._store(self._key(key), data, timeout, tags)
        return True

    def add(
        self,
        key: str,
        value: Any,
        timeout: int | dt.timedelta | None = None,
        *,
        tags: Iterable[str] | None = None,
    ) -> bool:
        """Store only if ``key`` holds no live value; True if stored. Atomic."""
        k = self._key(key)
        data = self._dumps(value)
        if data is None:
            return False
        flags = 0
        if tags:
            data, flags = self.tags.wrap(data, flags, tags)
        t = self.table
        with t.transaction():
            e = t.get_entry(k)
            if e is not None and self.tags.live(e.value, e.flags):
                return False
            self._make_room(t)
            t.put(k, data, self._expire(timeout), flags=flags)
            return True

    def set_many(self, mapping: dict[str, Any], timeout: int | dt.timedelta | None = None) -> list[Any]:
        done = []
        for key, value in mapping.items():
            if self.set(key, value, timeout):
                done.append(key)
        return done

    def delete(self, key: str) -> bool:
        return bool(self.table.delete(self._key(key)))

    def delete_many(self, *keys: str) -> list[Any]:
        """Delete every key (a missing key counts as deleted, as in cachelib)."""
        made = [self._key(k) for k in keys]
        with self.table.transaction():
            for k in made:
                self.table.delete(k)
        return list(keys)

    def clear(self) -> bool:
        """Remove every entry of the table (every instance sharing the directory)."""
        self.table.clear()
        return True

    def inc(self, key: str, delta: int = 1) -> int | None:
        """Add ``delta`` atomically across processes (a missing key counts as
        0 and gets ``default_timeout``; an existing one keeps its expiry)."""
        k = self._key(key)
        t = self.table
        with t.transaction():
            e = t.get_entry(k)
            old = None if e is None else self._decode((e.value, e.flags))
            value = (old or 0) + delta
            data = self._dumps(value)
            if data is None:
                return None
            if e is None:
                self._make_room(t)
                t.put(k, data, self._expire(None))
            else:  # keep the expiry, and the tags if their tokens still match
                flags = 0
                if old is not None and e.flags & TAGGED:
                    data, flags = self.tags.wrap(data, 0, self.tags.tags_of(e.value, e.flags))
                t.put(k, data, flags=flags, expire_at_ns=e.expire_ns)
            return value

    def dec(self, key: str, delta: int = 1) -> int | None:
        return self.inc(key, -delta)

    # ----------------------------------------------------------------- tags
    def invalidate_tags(self, *tags: str) -> int:
        """Make every entry stored with any of ``tags`` a miss, in every
        process, in O(1) per tag (no scan). Returns the number of tags."""
        return self.tags.invalidate(tags)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._path!r}>"


__all__ = ["MmapCache", "MmapSerializer"]
