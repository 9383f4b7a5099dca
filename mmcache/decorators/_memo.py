"""The slow paths of one cached function: misses, refreshes, revalidation.

The wrappers in ``cached`` keep only the hit path inline; everything that
happens when the table has no fresh value is here, once for sync and once
for async functions, on top of ``_stampede``.

With ``l2=`` (a ``Tier``, see ``_l2``) the caller that holds a missing key's
lease asks Redis before computing, a computed result is also written to
Redis, and ``refresh`` / ``cache_clear`` are announced to the other hosts.
In ``async def`` functions every Redis call runs in a worker thread.

Counters (per process, like ``functools.lru_cache``'s): a call answered from
the table is a *hit*, whether found at once, after waiting for another
caller's computation, from Redis, or stale under ``stale_ttl``; a call that
ran the function is a *miss*, and so is a background revalidation.
``refresh`` and ``uncached`` are not counted.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from ._stampede import MISS, Lease, acquire, computing, flight, held, no_fetch, release, run_async, run_sync
from ._table import FunctionTable

if TYPE_CHECKING:
    from ._l2 import Tier
    from ._tagging import Tagger

__all__ = ["Memo"]

log = logging.getLogger("mmcache.decorators")


def _save_stamped(ft: FunctionTable, stamp: bytes | None, key: bytes, value: Any, lease: Lease | None) -> Any:
    """``flight``'s save for a tagged result: the tokens taken before computing."""
    return ft.save(key, value, lease, stamp)


class Memo:
    """State shared by a cached function's wrapper and its controls."""

    def __init__(
        self,
        func: Callable[..., Any],
        keyfn: Callable[[tuple[Any, ...], dict[str, Any]], bytes],
        ft: FunctionTable,
        *,
        ttl: float | None,
        lock_timeout: float | None,
        lease_ttl: float,
        tier: Tier | None = None,
        tagger: Tagger | None = None,
    ) -> None:
        self.func, self.keyfn, self.ft, self.tier, self.tagger = func, keyfn, ft, tier, tagger
        # hits, misses: counted without a lock (as functools' pure-Python lru_cache
        # does), so under heavy thread contention an increment could be lost.
        self.stats = [0, 0]
        self.fresh_ns = None if ttl is None else int(ttl * 1e9)
        self.lock_timeout, self.lease_ttl = lock_timeout, lease_ttl
        self._tasks: set[asyncio.Task[Any]] = set()

    def begin(
        self, key: bytes, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, Callable[[], Any], list[bytes] | None]:
        """A miss of ``key`` starts: its flight (``_stampede``), the second
        tier's fetch and the list ``_saver`` fills for it (None without l2).
        A key this thread or task is already computing is computed at once
        (lock_timeout 0): waiting would be for our own lease. With ``tags=``
        the tags' tokens are taken now, before anything is computed."""
        ft, tier = self.ft, self.tier
        timeout = 0.0 if key in computing.get() else self.lock_timeout
        if tier is None:
            save: Callable[..., Any] = ft.save
            if self.tagger is not None:
                stamp = self.tagger.stamp(args, kwargs)
                save = partial(_save_stamped, ft, stamp)
            return flight(ft.table(), key, ft.lookup, save, self.lease_ttl, timeout), no_fetch, None
        tier.ensure_listening()
        saved, save = self._saver()
        fl = flight(ft.table(), key, ft.lookup, save, self.lease_ttl, timeout, True)
        return fl, partial(tier.fetch, key), saved

    def end(self, key: bytes, outcome: tuple[Any, bool], saved: list[bytes] | None) -> Any:
        """A miss is over: count it, send a computed result to Redis (after the
        lease is released: waiters need not wait for the network)."""
        value, computed = outcome
        self.stats[1 if computed else 0] += 1
        if saved and self.tier is not None:
            self.tier.store(key, saved[0])
        return value

    # ------------------------------------------------------------ misses
    def miss(self, key: bytes, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The sync miss path of the stale_ttl wrapper (the plain one inlines it)."""
        func = self.func
        fl, fetch, saved = self.begin(key, args, kwargs)
        return self.end(key, run_sync(fl, key, lambda: func(*args, **kwargs), fetch), saved)

    async def amiss(self, key: bytes, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        func, tier = self.func, self.tier
        fl, fetch, saved = self.begin(key, args, kwargs)
        outcome = await run_async(fl, key, lambda: func(*args, **kwargs), fetch)
        value, computed = outcome
        self.stats[1 if computed else 0] += 1
        if saved and tier is not None:
            await asyncio.to_thread(tier.store, key, saved[0])
        return value

    def _saver(self) -> tuple[list[bytes], Callable[[bytes, Any, Lease | None], None]]:
        """A save for ``flight`` that also keeps the pickle, for Redis (written
        after the lease is released: waiters need not wait for the network)."""
        saved: list[bytes] = []

        def save(key: bytes, value: Any, lease: Lease | None) -> None:
            data = self.ft.save(key, value, lease)
            if data is not None:
                saved.append(data)

        return saved, save

    # ---------------------------------------------------------- controls
    def stamp(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes | None:
        """The tags' tokens for a result about to be computed (None: untagged)."""
        return None if self.tagger is None else self.tagger.stamp(args, kwargs)

    def refresh(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        key = self.keyfn(args, kwargs)
        stamp = self.stamp(args, kwargs)
        value = self.func(*args, **kwargs)
        if self.tier is None:
            self.ft.save(key, value, stamp=stamp)
        else:
            self.tier.ensure_listening()
            self.tier.refresh(key, value)
        return value

    async def arefresh(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        key = self.keyfn(args, kwargs)
        stamp = self.stamp(args, kwargs)
        value = await self.func(*args, **kwargs)
        if self.tier is None:
            self.ft.save(key, value, stamp=stamp)
        else:
            self.tier.ensure_listening()
            await asyncio.to_thread(self.tier.refresh, key, value)
        return value

    def clear(self) -> None:
        self.stats[:] = [0, 0]
        if self.tier is None:
            self.ft.clear()
        else:
            self.tier.ensure_listening()
            self.tier.clear()

    # ---------------------------------------------- stale-while-revalidate
    def _claim_stale(self, key: bytes) -> Any:
        """A lease to recompute a stale ``key``, or None if someone (in any
        process) is at it or already has (the value is fresh again)."""
        t = self.ft.table()
        if held(t, key):
            return None
        lease = acquire(t, key, self.lease_ttl)
        if lease is None:
            return None
        e = t.get_entry(key)
        if e is not None and time.time_ns() - e.mtime_ns < self.fresh_ns:  # type: ignore[operator]
            release(lease)  # refreshed between our read and our lease
            return None
        return lease

    def revalidate(self, key: bytes, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Recompute a stale value in a daemon thread, unless someone else is."""
        lease = self._claim_stale(key)
        if lease is not None:
            work = (lease, key, args, kwargs)
            threading.Thread(target=self._recompute, args=work, name="mmcache-swr", daemon=True).start()

    def _fetched(self, lease: Any, key: bytes) -> bool:
        """Another host's fresh result, found in Redis and now in L1 (lease released)."""
        if self.tier is None or self.tier.fetch(key) is MISS:
            return False
        release(lease)
        return True

    def _recompute(self, lease: Any, key: bytes, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            if self._fetched(lease, key):
                return
            stamp = self.stamp(args, kwargs)
            value = self.func(*args, **kwargs)
        except BaseException as exc:
            self._revalidation_failed(lease, exc)
            return
        self.stats[1] += 1
        self._save_all(key, value, lease, stamp)

    def _revalidation_failed(self, lease: Any, exc: BaseException) -> None:
        """A background recompute raised: give the lease back; log an error,
        let anything else (KeyboardInterrupt, cancellation) propagate."""
        release(lease)
        if not isinstance(exc, Exception):
            raise exc
        log.error("mmap_cached %s: background revalidation failed", self.ft.identity.table_id, exc_info=exc)

    def _save_all(self, key: bytes, value: Any, lease: Any, stamp: bytes | None = None) -> None:
        data = self.ft.save(key, value, lease, stamp)
        if self.tier is not None and data is not None:
            self.tier.store(key, data, quiet=True)  # in the background: a failure is logged, never raised

    def arevalidate(self, key: bytes, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Recompute a stale value in a task of the running loop, unless someone else is."""
        lease = self._claim_stale(key)
        if lease is not None:
            task = asyncio.get_running_loop().create_task(self._arecompute(lease, key, args, kwargs))
            self._tasks.add(task)  # a strong reference until it is done
            task.add_done_callback(self._tasks.discard)

    async def _arecompute(self, lease: Any, key: bytes, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            if self.tier is not None and await asyncio.to_thread(self._fetched, lease, key):
                return
            stamp = self.stamp(args, kwargs)
            value = await self.func(*args, **kwargs)
        except BaseException as exc:
            self._revalidation_failed(lease, exc)
            return
        self.stats[1] += 1
        if self.tier is None:
            self.ft.save(key, value, lease, stamp)
        else:
            await asyncio.to_thread(self._save_all, key, value, lease)
