"""Issue 9: the tiered backend (mmcache L1 in front of Redis) against Django's
``RedisCache`` alone, same run, same local ``redis-server``.

``python -m benchmarks.tiered [--quick]`` times, through Django's cache API:

- **hot get**: a read of one of 100 hot keys. The tiered backend answers it
  from its L1 table; ``RedisCache`` makes a round trip to Redis.
- **cold get**: the first read of a key that is in Redis only (a fresh key
  per call): the tiered backend misses L1, reads Redis (GET + PTTL in one
  round trip) and fills L1; the cost of a miss.
- **set**: an overwrite. The tiered backend sends SET + PUBLISH in one Lua
  script and removes the key from its L1.

A third column, **redis-py**, is the floor of any cache kept in Redis: the
client's own ``GET`` plus ``pickle.loads``, without Django (whose
``RedisCache`` also builds a ``redis.Redis`` object on every call). It is
timed for the reads only.

The server is the suite's private one (``redis_server``: 127.0.0.1, no
persistence), so a round trip is a loopback one: across a real network
every Redis call costs more and the hot-get ratio grows. The tiered alias's
subscriber runs in this process (it is the host's only one), so handling
the announcement of each write is part of the measured set cost (without
the subscriber a tiered set costs about what a ``RedisCache`` set does).
Also usable as a suite of ``python -m benchmarks`` (``run(cfg)``).
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import redis_server
from .harness import Case, Config, Timing, cycle, fmt_ns, fmt_ratio, measure_all, ratio
from .kv import loop_get, loop_put
from .report import Report, Target, machine_info, machine_line
from .values import VALUES, ValueKind

PEERS = ("tiered", "redis", "redis-py")
WORKLOADS = ("hot get", "cold get", "set")
HOT_KEYS = 100
TIERED = "mmcache.contrib.django.TieredCacheBackend"
REDIS = "django.core.cache.backends.redis.RedisCache"


def configure(base: Path, url: str) -> None:
    import django
    from django.conf import settings

    if settings.configured:
        raise RuntimeError("Django settings are already configured in this process")
    settings.configure(
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "redis": {"BACKEND": REDIS, "LOCATION": url},
            "tiered": {
                "BACKEND": TIERED,
                "LOCATION": str(base / "l1"),
                "OPTIONS": {"L2": "redis", "L1_TIMEOUT": 300, "MAX_ENTRIES": 1_000_000},
            },
        },
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()


def wait_subscribed(cache: Any, timeout: float = 10.0) -> None:
    """The subscriber's first subscription empties L1: measure after it."""
    deadline = time.monotonic() + timeout
    while not cache.get_stats()["subscriber_connected"]:
        if time.monotonic() > deadline:
            raise RuntimeError("the tiered backend's subscriber did not connect")
        time.sleep(0.01)


def cases_for(alias: str, kind: ValueKind) -> dict[str, Case]:
    from django.core.cache import caches

    cache, plain = caches[alias], caches["redis"]
    hot = [f"hot:{i}" for i in range(HOT_KEYS)]
    for k in hot:
        cache.set(k, kind.value)
    time.sleep(0.05)  # let the writes' own announcements pass before L1 fills
    for k in hot:
        if cache.get(k) != kind.value:
            raise RuntimeError(f"{alias}: round trip check failed; refusing to time it")
    fresh = itertools.count()

    def cold_batch(n: int) -> list[str]:
        keys = [f"cold:{alias}:{kind.name}:{next(fresh)}" for _ in range(n)]
        plain.set_many(dict.fromkeys(keys, kind.value))  # in Redis only (untimed)
        return keys

    return {
        "hot get": Case(loop_get(cache.get), lambda n: cycle(hot, n)),
        "cold get": Case(loop_get(cache.get), cold_batch, max_n=5_000),
        "set": Case(loop_put(cache.set, kind.value), lambda n: cycle(hot, n), max_n=5_000),
    }


def _ns(ns: float | None) -> str:
    return "–" if ns is None else fmt_ns(ns)  # redis-py is timed for reads only


def raw_cases(url: str, kind: ValueKind) -> dict[str, Case]:
    """redis-py alone on the keys the ``redis`` alias wrote (Django's ``:1:`` prefix)."""
    import pickle

    import redis

    client = redis.Redis.from_url(url)
    hot = [f":1:hot:{i}" for i in range(HOT_KEYS)]
    loads, get = pickle.loads, client.get

    def read(key: str) -> Any:
        return loads(get(key))

    if read(hot[0]) != kind.value:
        raise RuntimeError("redis-py: round trip check failed; refusing to time it")
    fresh = itertools.count()

    def cold_batch(n: int) -> list[str]:
        keys = [f"cold:raw:{kind.name}:{next(fresh)}" for _ in range(n)]
        client.mset({k: pickle.dumps(kind.value) for k in keys})
        return keys

    return {
        "hot get": Case(loop_get(read), lambda n: cycle(hot, n)),
        "cold get": Case(loop_get(read), cold_batch, max_n=5_000),
    }


def run(cfg: Config) -> Report:
    rep = Report("tiered", "Tiered backend (mmcache L1 + Redis) vs RedisCache alone", cfg.mode, cfg.command)
    srv = redis_server.server()
    if srv.url is None:
        rep.note(f"tiered suite skipped: not available: {srv.reason}")
        return rep
    base = Path(tempfile.mkdtemp(prefix="mmcache-bench-tiered-", dir=cfg.tmp))
    med: dict[tuple[str, str, str], float | None] = {}
    try:
        configure(base, srv.url)
        from django.core.cache import caches

        wait_subscribed(caches["tiered"])
        rep.note(
            f"{HOT_KEYS} hot keys; Redis on loopback (127.0.0.1), so every Redis round trip is a short one"
        )
        for kind in VALUES:
            caches["tiered"].clear()  # FLUSHDB, announced: every L1 empties too
            per_peer = {
                "tiered": cases_for("tiered", kind),
                "redis": cases_for("redis", kind),
                "redis-py": raw_cases(srv.url, kind),
            }
            res: dict[str, dict[str, Timing]] = {
                w: measure_all({p: cs[w] for p, cs in per_peer.items() if w in cs}, cfg) for w in WORKLOADS
            }
            for w in WORKLOADS:
                for p in PEERS:
                    t = res[w].get(p)
                    med[(kind.name, w, p)] = None if t is None else t.median_ns
                    if t is None:
                        continue
                    rep.rows.append(
                        {
                            "value": kind.name,
                            "workload": w,
                            "peer": p,
                            "median_ns": t.median_ns,
                            "min_ns": t.min_ns,
                            "max_ns": t.max_ns,
                            "batch": t.batch,
                            "repeats": t.repeats,
                        }
                    )
                print(
                    f"  {kind.name:>6} {w:<9} "
                    + " ".join(f"{p}={_ns(med[(kind.name, w, p)])}" for p in PEERS),
                    flush=True,
                )
    finally:
        from mmcache.contrib.django import _invalidation

        _invalidation.stop_all()  # before the server goes away
        shutil.rmtree(base, ignore_errors=True)
    for kind in VALUES:
        rep.section(
            f"Median latency per call, {kind.name} values",
            ["call", "tiered", "RedisCache", "redis-py", "RedisCache / tiered", "redis-py / tiered"],
            [
                [
                    w,
                    *[_ns(med[(kind.name, w, p)]) for p in PEERS],
                    fmt_ratio(ratio(med[(kind.name, w, "redis")], med[(kind.name, w, "tiered")])),
                    fmt_ratio(ratio(med[(kind.name, w, "redis-py")], med[(kind.name, w, "tiered")])),
                ]
                for w in WORKLOADS
            ],
        )
    for kind in VALUES:
        for peer, label in (("redis", "RedisCache"), ("redis-py", "redis-py GET")):
            r = ratio(med[(kind.name, "hot get", peer)], med[(kind.name, "hot get", "tiered")])
            measured = "skipped" if r is None else fmt_ratio(r)
            rep.targets.append(Target(f"hot get vs {label}, {kind.name}", measured, "–", None))
    rep.target_section("Hot-key read: how many times faster the tiered backend is (issue 9)")
    return rep


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m benchmarks.tiered", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer, shorter batches")
    args = p.parse_args(argv)
    command = "python -m benchmarks.tiered" + "".join(" " + shlex.quote(a) for a in argv)
    tmp = Path(tempfile.mkdtemp(prefix="mmcache-bench-"))
    try:
        srv = redis_server.server()
        machine = machine_info(srv.version)
        print(f"machine: {machine_line(machine)}\ncommand: {command}")
        rep = run(Config.make(args.quick, tmp, command=command))
        jp, mp = rep.write(machine)
        print(f"-> {jp}, {mp}")
    finally:
        redis_server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
