"""Key/value stores behind one small interface, for the same workloads.

Each adapter exposes the cheapest callables that do the whole operation a
user would do: ``get(key)`` returns the decoded value (or None), ``put(key,
value)`` encodes and stores, ``delete(key)`` removes. Where the store takes
the call directly (``MmapCache.get``, ``diskcache.Cache.get``, ``dict.get``)
the bound method is used as is, so no peer pays for a wrapper it does not
need. Keys are ``str`` everywhere (lmdb encodes them, as its users must).

Durability is matched, not maximised: lmdb runs with ``sync=False`` (no
fsync per commit, like mmcache and like diskcache's SQLite in WAL mode with
``synchronous=NORMAL``); Redis runs with persistence off.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import redis_server
from .values import PROTOCOL, ValueKind

PEERS = ("mmcache", "dict", "lmdb", "diskcache", "redis")


class Unavailable(Exception):
    """This peer cannot run here; the message says why (printed as a skip note)."""


@dataclass
class Store:
    name: str
    get: Callable[[str], Any]
    put: Callable[[str, Any], object]
    delete: Callable[[str], object]
    close: Callable[[], None]
    handle: Any = None
    bulk: Callable[[Iterable[tuple[str, Any]]], None] | None = None  # many puts in one transaction

    def put_many(self, items: Iterable[tuple[str, Any]]) -> None:
        """Store ``items`` the fastest way this store has (for filling)."""
        if self.bulk is not None:
            self.bulk(items)
            return
        put = self.put
        for k, v in items:
            put(k, v)


def open_store(peer: str, directory: Path, kind: ValueKind, capacity: int) -> Store:
    """A fresh, empty store of ``peer`` in ``directory`` for about ``capacity`` keys."""
    directory.mkdir(parents=True, exist_ok=True)
    opener = _OPENERS[peer]
    return opener(directory, kind, capacity)


def mmcache_size(capacity: int) -> int:
    """Slots for ``capacity`` live keys plus tombstones: about twice the keys."""
    return max(4096, 2 * capacity + 64)


def _codec(kind: ValueKind) -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]] | None:
    if not kind.pickled:
        return None
    return (lambda v: pickle.dumps(v, PROTOCOL)), pickle.loads


def _wrap(
    get: Callable[[str], Any], put: Callable[..., object], kind: ValueKind
) -> tuple[Callable[[str], Any], Callable[[str, Any], object]]:
    """Add pickling around a bytes store's get / put for the dict value."""
    codec = _codec(kind)
    if codec is None:
        return get, put
    dumps, loads = codec

    def dget(key: str) -> Any:
        b = get(key)
        return None if b is None else loads(b)

    def dput(key: str, value: Any) -> object:
        return put(key, dumps(value))

    return dget, dput


def _open_mmcache(directory: Path, kind: ValueKind, capacity: int) -> Store:
    from mmcache import MmapCache

    c = MmapCache(directory / "table", size=mmcache_size(capacity))
    get, put = _wrap(c.get, c.put, kind)
    return Store("mmcache", get, put, c.delete, c.close, c)


def _open_dict(directory: Path, kind: ValueKind, capacity: int) -> Store:
    d: dict[str, Any] = {}
    return Store("dict", d.get, d.__setitem__, d.__delitem__, d.clear, d)


def _open_lmdb(directory: Path, kind: ValueKind, capacity: int) -> Store:
    try:
        import lmdb
    except ImportError as e:
        raise Unavailable("lmdb is not installed (pip install lmdb)") from e
    env = lmdb.open(
        str(directory / "lmdb"),
        map_size=1 << 36,
        sync=False,
        metasync=False,
        readahead=False,
        max_spare_txns=4,
    )
    begin = env.begin
    codec = _codec(kind)

    if codec is None:

        def get(key: str) -> Any:
            with begin() as t:
                return t.get(key.encode())

        def put(key: str, value: Any) -> object:
            with begin(write=True) as t:
                return t.put(key.encode(), value)

    else:
        dumps, loads = codec

        def get(key: str) -> Any:
            with begin() as t:
                b = t.get(key.encode())
            return None if b is None else loads(b)

        def put(key: str, value: Any) -> object:
            b = dumps(value)
            with begin(write=True) as t:
                return t.put(key.encode(), b)

    def delete(key: str) -> object:
        with begin(write=True) as t:
            return t.delete(key.encode())

    def bulk(items: Iterable[tuple[str, Any]]) -> None:
        enc = (lambda v: v) if codec is None else codec[0]
        it = iter(items)
        while batch := [(k.encode(), enc(v)) for _, (k, v) in zip(range(65536), it, strict=False)]:
            with begin(write=True) as t:
                for k, v in batch:
                    t.put(k, v)

    return Store("lmdb", get, put, delete, env.close, env, bulk)


def _open_diskcache(directory: Path, kind: ValueKind, capacity: int) -> Store:
    try:
        import diskcache
    except ImportError as e:
        raise Unavailable("diskcache is not installed (pip install diskcache)") from e
    c = diskcache.Cache(str(directory / "diskcache"))

    def bulk(items: Iterable[tuple[str, Any]]) -> None:
        with c.transact():  # one SQLite transaction: filling 200,000 keys in seconds, not minutes
            for k, v in items:
                c.set(k, v)

    return Store("diskcache", c.get, c.set, c.delete, c.close, c, bulk)


def _open_redis(directory: Path, kind: ValueKind, capacity: int) -> Store:
    srv = redis_server.server()
    if srv.port is None or srv.url is None:
        raise Unavailable(f"Redis rows skipped: {srv.reason}")
    import redis

    r = redis.Redis(host=redis_server.HOST, port=srv.port)
    r.flushdb()
    get, put = _wrap(r.get, r.set, kind)

    def close() -> None:
        r.flushdb()
        r.close()

    return Store("redis", get, put, r.delete, close, r)


_OPENERS: dict[str, Callable[[Path, ValueKind, int], Store]] = {
    "mmcache": _open_mmcache,
    "dict": _open_dict,
    "lmdb": _open_lmdb,
    "diskcache": _open_diskcache,
    "redis": _open_redis,
}
