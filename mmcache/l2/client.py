"""``RedisL2``: the shared tier as bytes in Redis, every write announced.

A write and its announcement (``PUBLISH channel key``) go to the server in
one Lua script (``set``, ``delete``, ``add``, ``incr``: a script runs
atomically, and costs one command) or one ``MULTI``/``EXEC`` transaction
(the rest): either both happen or neither, so no host can miss an
invalidation because the writer failed between the two.

Values are bytes (or ints, which redis-py sends as decimal text, as Django's
``RedisSerializer`` does so that ``INCRBY`` works on them). Keys are ``str``
or ``bytes``; the announcement's payload is the key itself, and an empty
payload (``FLUSH``: no cache key is empty) means "drop everything".

Connection failures raise redis-py's own ``ConnectionError`` /
``TimeoutError`` (see ``UNREACHABLE``). After one, the client does not try
the server again for ``retry_after`` seconds and raises ``L2Unavailable`` at
once instead, so that a host whose Redis is down (or black-holed) keeps
answering from L1 instead of waiting for a timeout on every call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import redis
from redis.client import PubSub

Key = str | bytes
K = TypeVar("K", str, bytes)
Value = bytes | int
R = TypeVar("R")

UNREACHABLE: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
FLUSH = b""  # the announcement payload that means "drop every key"

# KEYS[1] key; ARGV[1] value, ARGV[2] milliseconds ('' = no expiry), ARGV[3] channel.
_SET = """
if ARGV[2] == '' then redis.call('set', KEYS[1], ARGV[1])
else redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
redis.call('publish', ARGV[3], KEYS[1])
"""
# KEYS[1] key; ARGV[1] channel. How many keys were deleted.
_DEL = """
local n = redis.call('del', KEYS[1])
redis.call('publish', ARGV[1], KEYS[1])
return n
"""
# KEYS[1] key; ARGV[1] delta, ARGV[2] channel. nil when the key is missing.
_INCR = """
if redis.call('exists', KEYS[1]) == 0 then return false end
local n = redis.call('incrby', KEYS[1], ARGV[1])
redis.call('publish', ARGV[2], KEYS[1])
return n
"""
# KEYS[1] key; ARGV[1] value, ARGV[2] milliseconds ('' = no expiry), ARGV[3] channel.
_ADD = """
local ok
if ARGV[2] == '' then ok = redis.call('set', KEYS[1], ARGV[1], 'NX')
else ok = redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) end
if not ok then return 0 end
redis.call('publish', ARGV[3], KEYS[1])
return 1
"""


class L2Unavailable(redis.ConnectionError):
    """Raised without contacting the server while it is considered down."""


class NotAnInteger(TypeError, redis.ResponseError):
    """``incr`` on a value Redis does not hold as a decimal integer: a
    ``TypeError`` as Django's contract asks, and the ``ResponseError``
    that ``RedisCache`` raises in that case."""


def ms(ttl: float) -> int:
    """A positive TTL in seconds as Redis milliseconds (at least 1)."""
    return max(1, round(ttl * 1000))


class RedisL2:
    """The shared tier: one redis-py client and one invalidation channel.

    ``ttl`` arguments are seconds from now: ``None`` keeps the value until it
    is deleted, ``<= 0`` deletes it (as Django's ``RedisCache`` does).
    Thread-safe (redis-py's connection pool is); one instance per process is
    enough.
    """

    def __init__(self, client: redis.Redis, channel: str, *, retry_after: float = 1.0) -> None:
        if not channel:
            raise ValueError("RedisL2 needs a channel name")
        self.client = client
        self.channel = channel
        self.retry_after = retry_after
        self._down_until = 0.0
        self.last_error: BaseException | None = None
        self._set = client.register_script(_SET)
        self._del = client.register_script(_DEL)
        self._incr = client.register_script(_INCR)
        self._add = client.register_script(_ADD)

    @classmethod
    def from_url(cls, url: str, channel: str, *, retry_after: float = 1.0, **kwargs: Any) -> RedisL2:
        """A client for ``redis://host:port/db`` (kwargs go to ``redis.Redis.from_url``)."""
        return cls(redis.Redis.from_url(url, **kwargs), channel, retry_after=retry_after)

    # ------------------------------------------------------------- plumbing
    def _call(self, op: Callable[[], R]) -> R:
        if self._down_until and time.monotonic() < self._down_until:
            raise L2Unavailable(f"Redis is considered down for {self.retry_after} s after: {self.last_error}")
        try:
            result = op()
        except UNREACHABLE as e:
            self.last_error = e
            if self.retry_after > 0:
                self._down_until = time.monotonic() + self.retry_after
            raise
        self._down_until = 0.0
        return result

    @property
    def available(self) -> bool:
        """False while calls fail fast after a connection error."""
        return not self._down_until or time.monotonic() >= self._down_until

    def _multi(self, build: Callable[[Any], None]) -> list[Any]:
        """Run the commands ``build(pipe)`` queues in one MULTI/EXEC."""

        def op() -> list[Any]:
            pipe = self.client.pipeline(transaction=True)
            build(pipe)
            return list(pipe.execute())

        return self._call(op)

    def _store(self, pipe: Any, key: Key, value: Value, ttl: float | None) -> None:
        if ttl is None:
            pipe.set(key, value)
        elif ttl <= 0:
            pipe.delete(key)
        else:
            pipe.set(key, value, px=ms(ttl))
        pipe.publish(self.channel, key)

    # ---------------------------------------------------------------- reads
    def get(self, key: Key) -> bytes | None:
        """The value, or None."""
        value = self._call(lambda: self.client.get(key))
        return value if value is None or isinstance(value, bytes) else str(value).encode()

    def get_with_ttl(self, key: K) -> tuple[bytes, float | None] | None:
        """``(value, seconds left or None for no expiry)``, or None if missing."""
        return self.get_many_with_ttl([key]).get(key)

    def get_many_with_ttl(self, keys: Sequence[K]) -> dict[K, tuple[bytes, float | None]]:
        """``{key: (value, seconds left or None)}`` for the keys present, in one round trip."""

        def op() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for k in keys:
                pipe.get(k)
                pipe.pttl(k)
            return list(pipe.execute())

        if not keys:
            return {}
        res = self._call(op)
        found: dict[K, tuple[bytes, float | None]] = {}
        for i, k in enumerate(keys):
            value, pttl = res[2 * i], res[2 * i + 1]
            if value is not None:  # PTTL -1: no expiry; -2: gone since the GET
                found[k] = (value, None if pttl == -1 else max(pttl, 0) / 1000)
        return found

    def exists(self, key: Key) -> bool:
        return bool(self._call(lambda: self.client.exists(key)))

    # --------------------------------------------------------------- writes
    def set(self, key: Key, value: Value, ttl: float | None, *, announce: bool = True) -> None:
        """Store (or, with ``ttl <= 0``, delete) and announce, atomically.
        ``announce=False`` skips the announcement, for a value that cannot
        differ from what other hosts may hold (a pure function's result)."""
        if ttl is not None and ttl <= 0:
            self.delete(key)
            return
        if not announce:
            self._call(lambda: self.client.set(key, value, px=None if ttl is None else ms(ttl)))
            return
        px = "" if ttl is None else ms(ttl)
        self._call(lambda: self._set(keys=[key], args=[value, px, self.channel]))

    def set_many(self, items: Mapping[Key, Value], ttl: float | None) -> None:
        """Several ``set``s in one transaction."""

        def build(p: Any) -> None:
            for k, v in items.items():
                self._store(p, k, v, ttl)

        if items:
            self._multi(build)

    def add(self, key: Key, value: Value, ttl: float | None) -> bool:
        """Store only if absent (announced only if stored); True if it was absent.
        With ``ttl <= 0`` nothing is stored (Django's rule) and the answer is
        whether the key was absent."""
        if ttl is not None and ttl <= 0:
            return not self.exists(key)
        px = "" if ttl is None else ms(ttl)
        return bool(self._call(lambda: self._add(keys=[key], args=[value, px, self.channel])))

    def delete(self, key: Key) -> bool:
        """Delete and announce, atomically; True if the key existed."""
        return bool(self._call(lambda: self._del(keys=[key], args=[self.channel])))

    def delete_many(self, keys: Iterable[Key]) -> int:
        """Delete and announce several keys at once; how many existed."""
        keys = list(keys)

        def build(p: Any) -> None:
            p.delete(*keys)
            for k in keys:
                p.publish(self.channel, k)

        return int(self._multi(build)[0]) if keys else 0

    def touch(self, key: Key, ttl: float | None) -> bool:
        """Give an existing key a new expiry (``None``: never; ``<= 0``:
        delete it) and announce it; True if the key existed."""

        def build(p: Any) -> None:
            p.exists(key)
            if ttl is None:
                p.persist(key)
            elif ttl <= 0:
                p.delete(key)
            else:
                p.pexpire(key, ms(ttl))
            p.publish(self.channel, key)

        return bool(self._multi(build)[0])

    def incr(self, key: Key, delta: int) -> int | None:
        """``INCRBY`` and announce, atomically; None if the key is missing.
        A value that is not a decimal integer raises ``NotAnInteger``."""
        try:
            n = self._call(lambda: self._incr(keys=[key], args=[delta, self.channel]))
        except redis.ResponseError as e:
            if "not an integer" in str(e):
                raise NotAnInteger(f"the value of {key!r} is not an integer in Redis") from e
            raise
        return None if n is None else int(n)

    def flush(self) -> None:
        """``FLUSHDB`` (what Django's ``RedisCache.clear`` does) and announce ``FLUSH``."""

        def build(p: Any) -> None:
            p.flushdb()
            p.publish(self.channel, FLUSH)

        self._multi(build)

    def clear_prefix(self, prefix: bytes, batch: int = 500) -> int:
        """Delete every key starting with ``prefix`` (``SCAN`` + ``UNLINK``, in
        batches: not atomic) and announce ``FLUSH``; how many were deleted."""
        pattern = b"".join(b"\\" + bytes([c]) if c in b"*?[]\\" else bytes([c]) for c in prefix) + b"*"

        def op() -> int:
            n = 0
            keys: list[bytes] = []
            for k in self.client.scan_iter(match=pattern, count=batch):
                keys.append(k)
                if len(keys) >= batch:
                    n += int(self.client.unlink(*keys))
                    keys.clear()
            if keys:
                n += int(self.client.unlink(*keys))
            self.client.publish(self.channel, FLUSH)
            return n

        return self._call(op)

    def publish(self, *keys: Key) -> None:
        """Announce keys changed some other way (``FLUSH`` for everything)."""

        def build(p: Any) -> None:
            for k in keys:
                p.publish(self.channel, k)

        if keys:
            self._multi(build)

    # ------------------------------------------------------------ listening
    def pubsub(self) -> PubSub:
        """A new pub/sub connection (the subscriber subscribes it to ``channel``)."""
        # typed as Any: redis-py's annotation of pubsub() differs between releases
        client: Any = self.client
        ps: PubSub = client.pubsub(ignore_subscribe_messages=False)
        return ps

    def subscribers(self) -> int:
        """How many connections listen on ``channel`` (``PUBSUB NUMSUB``)."""
        res = self._call(lambda: self.client.pubsub_numsub(self.channel))
        return int(res[0][1]) if res else 0

    def __repr__(self) -> str:
        return f"<RedisL2 {self.client!r} channel={self.channel!r}>"
