"""No stampede: one caller computes a missing value, the others wait for it.

A *lease* is an entry ``key + b"L"`` put with ``add`` (atomic across
processes) and an expiry of ``lease_ttl`` seconds. Whoever adds it computes;
the user's function is never called while the table's writer lock is held.
While it computes, a daemon thread in its process renews the lease every
``lease_ttl / 3`` seconds, so a long computation keeps it, while a computer
killed with SIGKILL loses it within ``lease_ttl`` and one waiter takes over.

Waiters poll the value (a lock-free read, backing off from 1 ms to 50 ms);
when the lease is gone without a value (the computer raised or died) they
race for a new lease; after ``lock_timeout`` seconds they compute themselves.

A call made while the same thread (or task) is computing the same key (a
function calling itself with equal arguments, perhaps through ``ignore=``)
would wait on its own lease: ``computing`` holds the keys being computed in
this context, and such a call computes at once, without a lease.

The waiting logic is written once, as a generator (:func:`flight`) that
yields what to do next: a number of seconds to sleep, ``FETCH`` (ask the
second tier, Redis, with the lease held: one request per host and key) or
``COMPUTE``. The sync and async wrappers drive it with :func:`run_sync` and
:func:`run_async` (which fetches in a worker thread: a network call must not
block the event loop).
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import os
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any

from mmcache.table import MmapCache

__all__ = ["COMPUTE", "FETCH", "MISS", "Lease", "acquire", "drop", "flight", "held", "release"]
__all__ += ["computing", "no_fetch", "run_async", "run_sync"]

MISS: Any = object()  # "no value" (None is a value)
COMPUTE: Any = object()  # flight() asks its driver to call the function
FETCH: Any = object()  # flight() asks its driver for the second tier's value (or MISS)
_FIRST_DELAY, _MAX_DELAY = 0.001, 0.05
Flight = Generator[Any, Any, tuple[Any, bool]]

#: Keys whose function this thread (or asyncio task) is running now; a
#: context variable, so each thread and each task has its own.
computing: contextvars.ContextVar[frozenset[bytes]] = contextvars.ContextVar(
    "mmcache_computing", default=frozenset()
)


class Lease:
    """A claim on computing one key, held by this process until released."""

    __slots__ = ("due", "key", "table", "token", "ttl")

    def __init__(self, table: MmapCache, key: bytes, token: bytes, ttl: float) -> None:
        self.table, self.key, self.token, self.ttl = table, key, token, ttl
        self.due = time.monotonic() + ttl / 3


def lease_key(key: bytes) -> bytes:
    return key + b"L"


_tokens = itertools.count()
_token_prefix = os.urandom(8)  # tells this process's tokens from a dead one's with a reused pid


def acquire(table: MmapCache, key: bytes, ttl: float) -> Lease | None:
    """Claim ``key`` for computing: a Lease if no one holds it, else None."""
    token = b"%s%d:%d" % (_token_prefix, os.getpid(), next(_tokens))
    if not table.add(lease_key(key), token, ttl):
        return None
    lease = Lease(table, lease_key(key), token, ttl)
    _keeper.track(lease)
    return lease


def drop(lease: Lease) -> None:
    """Release with the table's writer lock already held (see ``release``)."""
    _keeper.untrack(lease)
    t = lease.table
    if t.get(lease.key) == lease.token:
        t.delete(lease.key)


def release(lease: Lease) -> None:
    """Drop the claim (only if it is still ours: it may have lapsed and moved on)."""
    try:
        with lease.table.transaction():
            drop(lease)
    except Exception:  # a closed table: nothing left to release
        _keeper.untrack(lease)


def held(table: MmapCache, key: bytes) -> bool:
    """True if some caller, in any process, holds a live lease on ``key``."""
    return table.get(lease_key(key)) is not None


def _renew(lease: Lease) -> bool:
    t = lease.table
    try:
        with t.transaction():
            if t.get(lease.key) != lease.token:
                return False
            t.put(lease.key, lease.token, lease.ttl)
            return True
    except Exception:
        return False


class _Keeper:
    """The per-process daemon thread that renews the leases being computed.

    It is started by the first lease, sleeps until the next renewal is due
    (at most ``_IDLE_TICK`` when it has nothing to do) and ends after
    ``_IDLE_EXIT`` idle seconds. ``track`` wakes it only when a new lease is
    due before it would wake anyway: waking a thread on every miss would cost
    the caller a GIL hand-off.
    """

    def __init__(self) -> None:
        self.leases: set[Lease] = set()
        self.cond = threading.Condition(threading.Lock())
        self.thread: threading.Thread | None = None
        self.wake_at = 0.0

    def track(self, lease: Lease) -> None:
        with self.cond:
            self.leases.add(lease)
            if self.thread is None:
                self.wake_at = lease.due
                self.thread = threading.Thread(target=self._run, name="mmcache-lease-keeper", daemon=True)
                self.thread.start()
            elif lease.due < self.wake_at:
                self.wake_at = lease.due
                self.cond.notify()

    def untrack(self, lease: Lease) -> None:
        with self.cond:
            self.leases.discard(lease)

    def _run(self) -> None:
        idle_since = time.monotonic()
        while True:
            with self.cond:
                now = time.monotonic()
                if self.leases:
                    idle_since = now
                elif now - idle_since > _IDLE_EXIT:
                    self.thread = None
                    return
                due = [lease for lease in self.leases if lease.due <= now]
                if not due:
                    self.wake_at = min([lease.due for lease in self.leases], default=now + _IDLE_TICK)
                    self.cond.wait(self.wake_at - now)
                    continue
            for lease in due:
                lease.due = time.monotonic() + lease.ttl / 3
                if not _renew(lease):
                    self.untrack(lease)


_IDLE_TICK, _IDLE_EXIT = 1.0, 30.0
_keeper = _Keeper()


def _reset_after_fork() -> None:
    global _keeper
    _keeper = _Keeper()  # the parent's leases and thread are not the child's


os.register_at_fork(after_in_child=_reset_after_fork)


def flight(
    table: MmapCache,
    key: bytes,
    lookup: Callable[[bytes], Any],
    save: Callable[[bytes, Any, Lease | None], object],
    lease_ttl: float,
    timeout: float | None,
    tiered: bool = False,
) -> Flight:
    """Get the value of a missing ``key``, computing it at most once at a time.

    Yields ``COMPUTE`` (send back the function's result, or throw its
    exception in), a float (sleep that long, send nothing) or, if ``tiered``,
    ``FETCH`` before any computation (send back the value from the second
    tier, or MISS). Returns ``(value, computed)``.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = _FIRST_DELAY
    while timeout is None or timeout > 0:  # lock_timeout=0: no guard at all
        if not held(table, key):
            lease = acquire(table, key, lease_ttl)
            if lease is not None:
                return (yield from _leased(lease, key, lookup, save, tiered))
        value = lookup(key)
        if value is not MISS:
            return value, False
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        yield delay if deadline is None else min(delay, deadline - now)
        delay = min(delay * 1.5, _MAX_DELAY)
    return (yield from _unguarded(key, save, tiered))


def _leased(
    lease: Lease,
    key: bytes,
    lookup: Callable[[bytes], Any],
    save: Callable[[bytes, Any, Lease | None], object],
    tiered: bool,
) -> Flight:
    """``flight`` once it holds the lease: the value if it landed meanwhile,
    else the second tier's, else computed and saved. The lease is released
    on every way out (``save`` releases it under the hold of the lock it stores in)."""
    saving = False
    try:
        value = lookup(key)  # it may have landed just before we got the lease
        if value is MISS and tiered:
            value = yield FETCH
        if value is not MISS:
            return value, False
        value = yield COMPUTE
        saving = True
        save(key, value, lease)  # stores and releases under one hold of the lock
        return value, True
    finally:
        if not saving:
            release(lease)


def _unguarded(key: bytes, save: Callable[[bytes, Any, Lease | None], object], tiered: bool) -> Flight:
    """``flight`` after waiting long enough (or with lock_timeout=0): the
    second tier's value, else computed without a lease."""
    if tiered:
        value = yield FETCH
        if value is not MISS:
            return value, False
    value = yield COMPUTE
    save(key, value, None)
    return value, True


def no_fetch() -> Any:
    """No second tier: always MISS."""
    return MISS


def run_sync(
    fl: Flight, key: bytes, call: Callable[[], Any], fetch: Callable[[], Any] = no_fetch
) -> tuple[Any, bool]:
    """Drive a flight in this thread: sleep with ``time.sleep``, compute with
    ``call()`` (``key`` marked in ``computing``), ask the second tier with ``fetch()``.
    (The decorator's plain sync wrapper inlines this loop: see ``cached``.)"""
    try:
        cmd = next(fl)
        while True:
            if cmd is COMPUTE or cmd is FETCH:
                mark = computing.set(computing.get() | {key}) if cmd is COMPUTE else None
                try:
                    result = call() if cmd is COMPUTE else fetch()
                except BaseException as exc:
                    cmd = fl.throw(exc)
                else:
                    cmd = fl.send(result)
                finally:
                    if mark is not None:
                        computing.reset(mark)
            else:
                time.sleep(cmd)
                cmd = next(fl)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def run_async(
    fl: Flight, key: bytes, call: Callable[[], Awaitable[Any]], fetch: Callable[[], Any] = no_fetch
) -> tuple[Any, bool]:
    """Drive a flight in an event loop: ``asyncio.sleep``, ``await call()``
    (``key`` marked in ``computing`` for this task), ``fetch()`` in a worker
    thread (it may wait on the network)."""
    try:
        cmd = next(fl)
        while True:
            if cmd is COMPUTE or cmd is FETCH:
                mark = computing.set(computing.get() | {key}) if cmd is COMPUTE else None
                try:
                    result = await (call() if cmd is COMPUTE else asyncio.to_thread(fetch))
                except BaseException as exc:
                    cmd = fl.throw(exc)
                else:
                    cmd = fl.send(result)
                finally:
                    if mark is not None:
                        computing.reset(mark)
            else:
                await asyncio.sleep(cmd)
                cmd = next(fl)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
