"""Real async for the Django backend: inline when it cannot block, a thread when it would wait.

Django's ``BaseCache`` runs every ``a*`` method through ``sync_to_async``: a
hop to a thread and back (tens of microseconds) for operations that take a
few. On our table a read never waits (no lock, no system call), and a write
waits only if another thread or process holds the writer lock. So:

- ``aget``, ``aget_many``, ``ahas_key`` run inline, always.
- A write first tries the writer lock without blocking. If it gets it, the
  sync method runs inline while it is held (the lock is re-entrant, so the
  method's own locking nests): no thread, no wait. If the lock is busy, the
  sync method runs in a thread (``sync_to_async``, not thread-sensitive:
  waiting for a lock must not queue behind the main thread's other work),
  and the event loop stays free while it waits.
- Work the table defers until the lock is released (a compaction or a
  growth rebuild, which may take milliseconds) runs in a thread too.
- ``adelete_pattern`` (a scan of every key) and ``aclear`` (a rebuild)
  always run in a thread.

The sync methods are atomic (one writer-lock hold), so every ``a*`` method
is too; Django's own ``aincr``, ``aset_many``... compose ``aget`` and
``aset`` and would not be. ``AtomicAsyncMixin`` (for the tiered backend,
whose writes go to Redis) always sends those to a thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.core.cache.backends.base import DEFAULT_TIMEOUT

from mmcache import MmapCache
from mmcache.errors import ClosedCacheError

R = TypeVar("R")


def _hop(fn: Callable[..., R]) -> Callable[..., Any]:
    return sync_to_async(fn, thread_sensitive=False)


class InlineAsyncMixin:
    """``a*`` methods that run the backend's sync methods inline when the
    writer lock is free at once, and in a thread only when they would wait."""

    async def _write(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """``fn(*args, **kwargs)`` inline under the writer lock if it is free
        now; else in a thread that waits for it."""
        t: MmapCache = self.table  # type: ignore[attr-defined]
        try:
            s = t._shared()  # the handle's shared state: its writer lock
        except ClosedCacheError:
            s = None  # the sync method recovers (reopens); let it, in a thread
        if s is not None and s.lock.try_acquire():
            try:
                result = fn(*args, **kwargs)
            finally:
                s.lock.release()
            if s.compact_wanted and not s.lock.held:
                # deferred slow work (compaction / growth) goes to a thread
                await _hop(t._compact)(s)
            return result
        result_: R = await _hop(fn)(*args, **kwargs)
        return result_

    # ---------------------------------------------------------------- reads
    async def aget(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        return self.get(key, default, version=version)  # type: ignore[attr-defined]

    async def aget_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        found: dict[Any, Any] = self.get_many(keys, version=version)  # type: ignore[attr-defined]
        return found

    async def ahas_key(self, key: Any, version: int | None = None) -> bool:
        return bool(self.has_key(key, version=version))  # type: ignore[attr-defined]

    # --------------------------------------------------------------- writes
    async def aset(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None, **kw: Any
    ) -> None:
        await self._write(self.set, key, value, timeout, version=version, **kw)  # type: ignore[attr-defined]

    async def aadd(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None, **kw: Any
    ) -> bool:
        return bool(await self._write(self.add, key, value, timeout, version=version, **kw))  # type: ignore[attr-defined]

    async def aset_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        failed: list[Any] = await self._write(self.set_many, data, timeout, version=version)  # type: ignore[attr-defined]
        return failed

    async def atouch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        return bool(await self._write(self.touch, key, timeout, version=version))  # type: ignore[attr-defined]

    async def adelete(self, key: Any, version: int | None = None) -> bool:
        return bool(await self._write(self.delete, key, version=version))  # type: ignore[attr-defined]

    async def adelete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        await self._write(self.delete_many, keys, version=version)  # type: ignore[attr-defined]

    async def aincr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        return await self._write(self.incr, key, delta, version=version)  # type: ignore[attr-defined]

    async def adecr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        return await self._write(self.decr, key, delta, version=version)  # type: ignore[attr-defined]

    async def aincr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return int(await self._write(self.incr_version, key, delta, version))  # type: ignore[attr-defined]

    async def adecr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return int(await self._write(self.decr_version, key, delta, version))  # type: ignore[attr-defined]

    async def aclear(self) -> None:
        """Always in a thread: clearing rebuilds the table's files."""
        await _hop(self.clear)()  # type: ignore[attr-defined]

    async def ainvalidate_tags(self, *tags: str) -> int:
        return int(await self._write(self.invalidate_tags, *tags))  # type: ignore[attr-defined]

    async def adelete_pattern(
        self, pattern: str, version: int | None = None, prefix: str | None = None
    ) -> int:
        """Always in a thread: it scans every key."""
        return int(await _hop(self.delete_pattern)(pattern, version=version, prefix=prefix))  # type: ignore[attr-defined]


class AtomicAsyncMixin:
    """``a*`` methods delegating to the atomic sync methods of the backend."""

    async def aincr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        return await sync_to_async(self.incr, thread_sensitive=True)(key, delta, version=version)  # type: ignore[attr-defined]

    async def adecr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        return await sync_to_async(self.decr, thread_sensitive=True)(key, delta, version=version)  # type: ignore[attr-defined]

    async def aset_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        run = sync_to_async(self.set_many, thread_sensitive=True)  # type: ignore[attr-defined]
        failed: list[Any] = await run(data, timeout, version=version)
        return failed

    async def adelete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        await sync_to_async(self.delete_many, thread_sensitive=True)(keys, version=version)  # type: ignore[attr-defined]

    async def aincr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        run = sync_to_async(self.incr_version, thread_sensitive=True)  # type: ignore[attr-defined]
        new_version: int = await run(key, delta, version)
        return new_version

    async def adecr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        run = sync_to_async(self.decr_version, thread_sensitive=True)  # type: ignore[attr-defined]
        new_version: int = await run(key, delta, version)
        return new_version
