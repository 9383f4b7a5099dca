"""``l2=``: one function's results shared by every host through Redis.

Each host keeps the function's table as its near cache (L1, the ordinary
``@mmap_cached`` table, hit path unchanged); Redis (L2) holds every result
computed on any host, under ``mmcache:fn:<table name>:<16-byte key>`` (the
L1 file's name, from the function's identity: hosts share when they run it
from the same real path or give it ``namespace=``/``name=``; ``version=``
and the code hash are in the argument keys).

- L1 miss: the caller that holds the key's lease (one per host and key, see
  ``_stampede``) asks Redis before computing; a value found there is copied
  into L1 through ``mmcache.l2.guard`` (for its remaining Redis TTL) and
  counts as a hit.
- A computed result goes into L1, then into Redis with the function's
  expiry, *not announced*: a result depends only on the arguments, so no
  host's copy can be out of date because another host computed it.
- ``refresh`` and ``cache_clear`` do change what other hosts should hold: they
  are announced on the channel ``mmcache:fn:<table name>``, and every host's
  listener (one ``HostSubscriber`` per host and function, elected by an
  ``flock`` beside the table) removes the key, or empties its L1.
- Missed announcements (no process of a host was listening, or the
  subscription broke): each announcement carries a fresh random token that
  the same script stores in Redis under ``mmcache:fn:<table name>``; the
  listener records in L1 the last token it applied. On every (re)subscription
  it compares the two: equal, nothing was missed and L1 is kept (restarting a
  host costs nothing); different, L1 is emptied. Unlike the Django tier, the
  decorator does not empty L1 on every subscription: memoised results are
  costly and, unless refreshed, never out of date.
- Redis unreachable: reads miss (computed here), writes log or raise per
  ``l2_errors``, L1 is kept. ``secret=`` signs the values in Redis too.
  (``docs/TIERED.md`` says all this for users.)
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import pickle
import threading
import time
from typing import Any

import redis

from mmcache.errors import CacheFullError, ClosedCacheError, DiskFullError, ValueTooLargeError
from mmcache.l2 import HostSubscriber, RedisL2, guard
from mmcache.l2.client import ms
from mmcache.serialization import CLOUDPICKLE
from mmcache.table import MmapCache

from ._location import table_path
from ._stampede import MISS
from ._table import TAG_KEY, FunctionTable
from ._versions import VERSIONS_KEY

__all__ = ["SEEN_KEY", "Tier", "check_l2", "client_for"]

log = logging.getLogger("mmcache.decorators")

SEEN_KEY = "mmcache:l2seen"  # in L1: the last announcement token this host applied
EXTRA_L1_ENTRIES = guard.BUCKETS + 1  # the guard's epochs and SEEN_KEY live in L1 beside the results
URL_DEFAULTS = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}  # a URL's query string wins
WARN_EVERY = 10.0  # seconds between two warnings about an unreachable Redis
_TOKEN = 16  # hex digits
_CANNOT_STORE = (ValueTooLargeError, DiskFullError, CacheFullError)

# KEYS[1] value key, KEYS[2] token key; ARGV[1] value, ARGV[2] ms ('' = no expiry), ARGV[3] channel,
# ARGV[4] token, ARGV[5] table key ('' = no value: a clear). One script: the write, the token and
# the announcement happen together or not at all.
_ANNOUNCED = """
if ARGV[5] ~= '' then
  if ARGV[2] == '' then redis.call('set', KEYS[1], ARGV[1])
  else redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
end
redis.call('set', KEYS[2], ARGV[4])
redis.call('publish', ARGV[3], ARGV[4] .. ':' .. ARGV[5])
"""

_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()


def check_l2(l2: Any) -> None:
    """Fail at decoration time for anything but a URL, a ``redis.Redis`` or a ``RedisL2``."""
    if isinstance(l2, str):
        if not l2.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"mmap_cached: l2= URL must start with redis://, rediss:// or unix://, not {l2!r}"
            )
        return
    client = l2.client if isinstance(l2, RedisL2) else l2
    if not isinstance(client, redis.Redis):
        raise TypeError(
            f"mmap_cached: l2= takes a redis://... URL, a redis.Redis or a mmcache.l2.RedisL2, not {l2!r}"
        )
    if client.connection_pool.connection_kwargs.get("decode_responses"):
        raise ValueError("mmap_cached: l2= needs a client that returns bytes (decode_responses=False)")


def client_for(l2: str | redis.Redis | RedisL2) -> tuple[redis.Redis, float]:
    """The client and the fail-fast pause (``RedisL2.retry_after``) for ``l2=``;
    one client (one connection pool) per URL and process."""
    if isinstance(l2, RedisL2):
        return l2.client, l2.retry_after
    if isinstance(l2, redis.Redis):
        return l2, 1.0
    with _clients_lock:
        client = _clients.get(l2)
        if client is None:
            client = _clients[l2] = redis.Redis.from_url(l2, **URL_DEFAULTS)
        return client, 1.0


class Tier:
    """One cached function's link to Redis (one per function and process)."""

    def __init__(
        self, l2: Any, ft: FunctionTable, *, errors: str, stale_ttl: float | None, secret: bytes | None
    ) -> None:
        client, retry_after = client_for(l2)
        name = os.path.basename(table_path("", ft.identity.table_id))
        self.ft, self.errors, self.stale_ttl, self.secret = ft, errors, stale_ttl, secret
        self.prefix = f"mmcache:fn:{name}:".encode()
        self.token_key = f"mmcache:fn:{name}".encode()  # a key; the channel has the same name
        self.l2 = RedisL2(client, f"mmcache:fn:{name}", retry_after=retry_after)
        self._announced = client.register_script(_ANNOUNCED)
        self.subscriber: HostSubscriber | None = None
        self._warned_at = -WARN_EVERY
        ft.on_open = self._opened

    # -------------------------------------------------------------- listener
    def _opened(self, t: MmapCache) -> None:
        """The table was opened in this process: start listening for this host."""
        sub = HostSubscriber(self.l2, t.path + ".l2.lock", self._on_keys, self._on_subscribed)
        self.subscriber = sub
        sub.start()

    def ensure_listening(self) -> None:
        """Restart the listener thread after a fork (called on the slow paths)."""
        if self.subscriber is not None:
            self.subscriber.ensure_running()

    def _reset(self, t: MmapCache, seen: bytes | None) -> None:
        """Empty L1 (fresh guard epochs, the tag put back) and record ``seen``."""
        with t.transaction():
            guard.reset(t)
            self.ft.put_tag(t)
            if seen is not None:
                t.put(SEEN_KEY, seen)

    def _on_keys(self, payloads: list[bytes]) -> None:
        """Announcements ``token:key`` (a refresh) and ``token:`` (a clear), in order."""
        keys: list[bytes] = []
        clear, last = False, None
        for p in payloads:
            if len(p) <= _TOKEN or p[_TOKEN] != 0x3A:  # not ours: ignore
                continue
            last = p[:_TOKEN]
            if len(p) == _TOKEN + 1:
                clear, keys = True, []  # covers the keys announced before it
            else:
                keys.append(p[_TOKEN + 1 :])
        if last is None:
            return
        try:
            t = self.ft.table()
            with t.transaction():
                if clear:
                    self._reset(t, None)
                if keys:
                    guard.invalidate(t, keys)
                t.put(SEEN_KEY, last)
        except ClosedCacheError:  # the process is exiting
            pass

    def _on_subscribed(self) -> None:
        """(Re)subscribed, or a FLUSH arrived: empty L1 only if an announcement was missed."""
        current: bytes | None = b"?"  # if Redis cannot tell: assume something was missed
        for attempt in range(3):
            try:
                current = self.l2.client.get(self.token_key)  # type: ignore[assignment]  # bytes (check_l2)
                break
            except redis.RedisError:
                time.sleep(0.05 * (attempt + 1))
        try:
            t = self.ft.table()
            if t.get(SEEN_KEY) != current:  # missed while not listening, or a clear's FLUSH
                self._reset(t, current)
                log.debug("mmap_cached %s: L1 emptied (new announcement token)", self.ft.identity.table_id)
        except ClosedCacheError:
            pass

    # ----------------------------------------------------------------- reads
    def fetch(self, key: bytes) -> Any:
        """The value in Redis (copied into L1), or MISS (also when Redis is unreachable)."""
        t = self.ft.table()
        token = guard.snapshot(t, key)
        rkey = self.prefix + key
        try:
            found = self.l2.get_with_ttl(rkey)
        except redis.RedisError as e:
            self._warn("a read", e)
            return MISS
        if found is None:
            return MISS
        raw, ttl = found
        data = self._unsign(rkey, raw)
        if data is None or (self.stale_ttl is not None and ttl is not None and ttl <= self.stale_ttl):
            return MISS  # forged, or stale (older than ttl=): recompute rather than serve it as fresh
        try:
            value = pickle.loads(data)
        except Exception:
            return MISS
        expire = math.inf if ttl is None else ttl
        if self.ft.expire is not None:
            expire = min(expire, self.ft.expire)
        try:
            guard.fill(t, [(key, data, CLOUDPICKLE, expire, token)])
        except _CANNOT_STORE:
            pass  # a read must not fail because L1 has no room
        return value

    # ---------------------------------------------------------------- writes
    def store(self, key: bytes, data: bytes, *, quiet: bool = False) -> None:
        """A result just computed here: into Redis, not announced (``quiet``:
        a failure is logged whatever ``l2_errors`` says)."""
        rkey = self.prefix + key
        try:
            self.l2.set(rkey, self._sign(rkey, data), self.ft.expire, announce=False)
        except redis.RedisError as e:
            if quiet:
                self._warn("a write", e)
            else:
                self._failed("a write", e)

    def refresh(self, key: bytes, value: Any) -> None:
        """A recomputed result: into Redis and announced, then into L1 (also
        when Redis is unreachable: nothing stored locally is lost)."""
        data = self.ft.encode(value)
        if data is None:
            return
        rkey = self.prefix + key
        error = None
        try:
            self._announce(key, self._sign(rkey, data))
        except redis.RedisError as e:
            error = e
        t = self.ft.table()
        with t.transaction():
            guard.invalidate(t, [key])  # a fill of the old value racing this refresh is refused
            self.ft.store(key, data)
        if error is not None:
            self._failed("refresh", error)

    def clear(self) -> None:
        """Delete this function's results in Redis, announce it, empty L1."""
        error = None
        try:
            self.l2.clear_prefix(self.prefix)  # its FLUSH makes listeners compare tokens
            self._announce(b"", b"")  # deleted first: a host that empties its L1 cannot refill old values
        except redis.RedisError as e:
            error = e
        self._reset(self.ft.table(), None)
        if error is not None:
            self._failed("cache_clear", error)

    def _announce(self, key: bytes, data: bytes) -> None:
        expire = self.ft.expire
        px = "" if expire is None else ms(expire)
        token = os.urandom(_TOKEN // 2).hex().encode()
        args = [data, px, self.l2.channel, token, key]
        self._announced(keys=[self.prefix + key, self.token_key], args=args)

    # --------------------------------------------------------------- helpers
    def _sign(self, rkey: bytes, data: bytes) -> bytes:
        if self.secret is None:
            return data
        return hashlib.blake2b(rkey + b"\0" + data, key=self.secret, digest_size=16).digest() + data

    def _unsign(self, rkey: bytes, raw: bytes) -> bytes | None:
        if self.secret is None:
            return raw
        sig, data = raw[:16], raw[16:]
        want = hashlib.blake2b(rkey + b"\0" + data, key=self.secret, digest_size=16).digest()
        return data if hmac.compare_digest(sig, want) else None

    def _failed(self, what: str, e: redis.RedisError) -> None:
        if self.errors == "raise":
            raise e
        self._warn(what, e)

    def _warn(self, what: str, e: BaseException) -> None:
        """Log a Redis failure, at most once per WARN_EVERY seconds per function."""
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning(
                "mmap_cached %s: Redis failed during %s (%s: %s); L1 only",
                self.ft.identity.table_id,
                what,
                type(e).__name__,
                e,
            )

    def currsize(self) -> int:
        """Results in L1: the tag, the versions, the guard's epochs and the token not counted."""
        t = self.ft.table()
        own: list[str | bytes] = [TAG_KEY, VERSIONS_KEY, SEEN_KEY, *guard._EPOCH_KEYS]
        return max(0, len(t) - sum(t.get(k) is not None for k in own))
