"""``HostSubscriber``: one invalidation listener per host, elected by ``flock``.

Every process that uses a tiered table starts one ``HostSubscriber`` (a
daemon thread). The thread first takes an exclusive ``flock`` on a lock file
beside the table, polling every ``poll`` seconds; the one process that holds
it is the host's *leader* and subscribes to the channel; the others only
wait, since the table they would clean is the same shared file. When the
leader exits (or is killed) the kernel drops its lock and another process
takes over within ``poll`` seconds.

The leader's loop:

- Every ``subscribe`` confirmation (the first one and every one after a
  reconnection, whether redis-py reconnected by itself or this loop did)
  calls ``on_clear``: messages may have been missed while not subscribed,
  and the clear comes *after* the server confirmed the subscription, so
  nothing written after it can be missed.
- Messages are batched (whatever has arrived) and handed to ``on_keys``; an
  empty payload (``FLUSH``) calls ``on_clear`` instead.
- When the channel is quiet for ``heartbeat`` seconds it sends PING; with no
  reply at all for ``3 * heartbeat`` seconds the connection is considered
  dead (a black-holed server sends no FIN), dropped and reopened.
- A connection error closes the connection and retries with a backoff of up
  to 2 s. While it is down nothing is cleared: the L1 entries stay readable,
  and their L1 timeout bounds how stale they can get.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import redis

from .client import FLUSH, RedisL2

log = logging.getLogger("mmcache.l2")

MAX_BATCH = 1000
WAKE = 0.2  # seconds between checks for stop() while the channel is quiet
MAX_BACKOFF = 2.0


class HostSubscriber:
    """Apply the channel's invalidations to this host's table, once per host."""

    def __init__(
        self,
        l2: RedisL2,
        lock_path: str,
        on_keys: Callable[[list[bytes]], None],
        on_clear: Callable[[], None],
        *,
        poll: float = 0.5,
        heartbeat: float = 1.0,
    ) -> None:
        self.l2 = l2
        self.lock_path = lock_path
        self.on_keys = on_keys
        self.on_clear = on_clear
        self.poll = poll
        self.heartbeat = heartbeat
        self.leader = False  # this process holds the host's lock
        self.connected = False  # subscribed right now
        self.subscriptions = 0  # confirmed (re)subscriptions, each followed by a clear
        self.invalidated = 0  # keys received
        self._outage = False  # a loss was logged and no subscription has followed yet
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        _live.add(self)

    # ------------------------------------------------------------ lifetime
    @property
    def running(self) -> bool:
        t = self._thread
        return t is not None and t.is_alive() and self._pid == os.getpid()

    def start(self) -> None:
        """Start the thread (again after a fork or a ``stop()``); no-op if it runs."""
        self._after_fork()
        t = self._thread
        if t is not None and t.is_alive():
            if not self._stop.is_set():
                return
            t.join()  # a stop() still under way: let it end first
        self._stop.clear()
        t = threading.Thread(target=self._run, name=f"mmcache-l2-sub:{self.l2.channel}", daemon=True)
        self._thread = t
        t.start()

    def ensure_running(self) -> None:
        """Restart the thread if a fork (or a crash) left it dead, not after ``stop()``."""
        if not self.running and (self._pid != os.getpid() or not self._stop.is_set()):
            self.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening and give up the host's lock (another process takes over)."""
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread() and self._pid == os.getpid():
            t.join(timeout)

    def _after_fork(self) -> None:
        """In a forked child: the parent's thread is gone and its lock stays
        the parent's; close our copy of the descriptor, start afresh."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._thread = None
        self._stop = threading.Event()  # the parent's may have been locked mid-call
        self.leader = self.connected = False
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    # -------------------------------------------------------------- election
    def _take_lock(self) -> bool:
        if self._fd is None:
            self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _release_lock(self) -> None:
        fd, self._fd = self._fd, None
        self.leader = False
        if fd is not None:
            os.close(fd)  # drops the flock

    def _run(self) -> None:
        warned = False
        try:
            while not self._stop.is_set():
                try:
                    got = self._take_lock()
                except OSError as e:  # the directory is gone (a table removed while in use)
                    if not warned:
                        log.warning("mmcache: cannot open %s (%s); will retry", self.lock_path, e)
                        warned = True
                    got = False
                if got:
                    self.leader = True
                    self._serve()
                else:
                    self._stop.wait(self.poll)
        finally:
            self.connected = False
            self._release_lock()

    # ------------------------------------------------------------- listening
    def _serve(self) -> None:
        """Listen until stopped, reconnecting after errors with a backoff."""
        backoff = 0.05
        while not self._stop.is_set():
            before = self.subscriptions
            try:
                self._listen()
                return  # only when stopping
            except Exception as e:  # RedisError, OSError; anything else is logged with its traceback
                if self.subscriptions > before:
                    backoff = 0.05  # it had worked: the outage starts now
                if not self._outage:
                    self._outage = True
                    log.warning(
                        "mmcache: invalidation channel %r lost (%s: %s); retrying",
                        self.l2.channel,
                        type(e).__name__,
                        e,
                        exc_info=not isinstance(e, redis.RedisError | OSError),
                    )
            self._stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _listen(self) -> None:
        ps = self.l2.pubsub()
        try:
            ps.subscribe(self.l2.channel)
            last_rx = time.monotonic()
            while not self._stop.is_set():
                msg = ps.get_message(timeout=WAKE)
                now = time.monotonic()
                if msg is None:
                    quiet = now - last_rx
                    if quiet > 3 * self.heartbeat:
                        raise redis.ConnectionError(f"no reply from Redis for {quiet:.1f} s")
                    if quiet >= self.heartbeat:
                        ps.ping()
                    continue
                last_rx = now
                self._handle(ps, msg)
        finally:
            self.connected = False
            ps.close()

    def _handle(self, ps: Any, msg: dict[str, Any]) -> None:
        """One message, plus whatever else has already arrived."""
        keys: list[bytes] = []
        flush = False
        while msg is not None:
            kind = msg["type"]
            if kind == "subscribe":
                self._apply(keys, flush)
                keys, flush = [], False
                self._on_subscribed()
            elif kind == "message":
                data = msg["data"]
                if data == FLUSH:
                    flush = True
                else:
                    keys.append(data)
            if len(keys) >= MAX_BATCH:
                break
            msg = ps.get_message(timeout=0.0)
        self._apply(keys, flush)

    def _on_subscribed(self) -> None:
        self._apply([], flush=True)  # whatever was missed before now is gone from L1
        self.subscriptions += 1
        self.connected = True
        if self._outage:
            self._outage = False
            log.warning("mmcache: invalidation channel %r restored; L1 cleared", self.l2.channel)

    def _apply(self, keys: list[bytes], flush: bool) -> None:
        try:
            if flush:
                self.on_clear()
            elif keys:
                self.on_keys(keys)
        except Exception:  # an L1 failure must not end the listener; the L1 timeout still bounds staleness
            log.exception("mmcache: applying %d invalidations failed", len(keys))
        self.invalidated += len(keys)

    def __repr__(self) -> str:
        return f"<HostSubscriber {self.lock_path!r} leader={self.leader} connected={self.connected}>"


_live: weakref.WeakSet[HostSubscriber] = weakref.WeakSet()


def _close_inherited() -> None:
    for s in list(_live):
        s._after_fork()


os.register_at_fork(after_in_child=_close_inherited)
