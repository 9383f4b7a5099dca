"""The integration kit (issue 20): Flask-Caching's backends, and async writes.

1. Flask-Caching's ``cache.get`` / ``cache.set`` (its own ``Cache`` object,
   as a Flask view calls it) over mmcache's cachelib backend, Flask-Caching's
   ``FileSystemCache`` and its ``RedisCache`` (the local Redis server); all
   three are shared between a Flask app's worker processes.
2. ``aset`` / ``aget`` on the Django backend as it runs them (inline when the
   writer lock is free; reads always inline) against the same call through
   ``sync_to_async`` (what Django's ``BaseCache`` does for every ``a*``
   method), awaited in a running event loop, and the same in an async view
   requested through Django's ASGI handler (``AsyncClient``).

Missing peers are "skipped: not available" rows with the reason.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from . import redis_server
from .harness import Case, Config, Timing, cycle, fmt_ns, fmt_ratio, measure_all, ratio, timing_fields
from .kv import get_set_cases, pool_keys
from .report import Report
from .values import DICT

FLASK_BACKENDS = ("mmcache", "filesystem", "redis")
WORKLOADS = ("get hit", "get miss", "set")
POOL = 500


def flask_caches(base: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """{name: flask_caching.Cache} for each backend that can run, {name: why not} for the rest."""
    try:
        from flask import Flask
        from flask_caching import Cache
    except ImportError as e:
        return {}, dict.fromkeys(FLASK_BACKENDS, f"Flask-Caching does not import ({e})")
    configs: dict[str, dict[str, Any]] = {
        "mmcache": {
            "CACHE_TYPE": "mmcache.contrib.cachelib.MmapCache",
            "CACHE_ARGS": [str(base / "mmcache")],
            "CACHE_OPTIONS": {"threshold": 0},
        },
        "filesystem": {"CACHE_TYPE": "FileSystemCache", "CACHE_DIR": str(base / "fs"), "CACHE_THRESHOLD": 0},
        "redis": {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": redis_server.server().url or ""},
    }
    caches, missing = {}, {}
    for name, conf in configs.items():
        if name == "redis" and redis_server.server().url is None:
            missing[name] = str(redis_server.server().reason)
            continue
        try:
            app = Flask(f"bench-{name}")
            app.config.update(CACHE_DEFAULT_TIMEOUT=0, **conf)
            caches[name] = Cache(app)
        except Exception as e:  # a peer that cannot start is a skipped row, not a failed suite
            missing[name] = f"{type(e).__name__}: {e}"
    return caches, missing


def flask_cases(cache: Any, keys: list[str]) -> dict[str, Case]:
    cache.clear()
    for k in keys:
        cache.set(k, DICT.value)
    if cache.get(keys[0]) != DICT.value or cache.get("miss:never") is not None:
        raise RuntimeError("round trip check failed; refusing to time it")
    return get_set_cases(cache.get, cache.set, DICT.value, keys, 5_000)


def async_cases(base: Path, keys: list[str]) -> dict[str, dict[str, Case]]:
    """{workload: {"inline": Case, "sync_to_async": Case}} on the Django backend."""
    import django
    from asgiref.sync import sync_to_async
    from django.conf import settings
    from django.http import HttpResponse
    from django.urls import path

    urls = ModuleType("bench_urls")  # ROOT_URLCONF may be a module object (hashable)
    urls.urlpatterns = []
    if not settings.configured:
        settings.configure(
            CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
            ROOT_URLCONF=urls, ALLOWED_HOSTS=["*"], SECRET_KEY="bench", MIDDLEWARE=[],
        )  # fmt: skip
        django.setup()
    from django.test import AsyncClient

    from mmcache.contrib.django import MmapCacheBackend

    cache = MmapCacheBackend(str(base / "django"), {"OPTIONS": {"MAX_ENTRIES": 100_000}})
    for k in keys:
        cache.set(k, DICT.value)
    loop = asyncio.new_event_loop()
    hop_set = sync_to_async(cache.set)  # Django's BaseCache.aset, as it is written
    hop_get = sync_to_async(cache.get)

    def run_async(step: Any) -> Any:
        async def batch(ks: list[str]) -> None:
            for k in ks:
                await step(k)

        return lambda ks: loop.run_until_complete(batch(ks))

    async def aset(k: str) -> None:
        await cache.aset(k, DICT.value)

    async def hset(k: str) -> None:
        await hop_set(k, DICT.value)

    def make(n: int) -> list[str]:
        return cycle(keys, n, random.randrange(len(keys)))

    # An async view that writes then reads one key, through Django's ASGI
    # handler (AsyncClient: the whole request cycle, no server or socket).
    async def view_inline(request: Any, key: str) -> Any:
        await cache.aset(key, DICT.value)
        return HttpResponse(b"ok" if await cache.aget(key) else b"miss")

    async def view_hop(request: Any, key: str) -> Any:
        await hop_set(key, DICT.value)
        return HttpResponse(b"ok" if await hop_get(key) else b"miss")

    urls.urlpatterns += [path("inline/<str:key>", view_inline), path("hop/<str:key>", view_hop)]
    client = AsyncClient()

    def view(prefix: str) -> Any:
        async def call(k: str) -> None:
            r = await client.get(f"/{prefix}/{k}")
            if r.content != b"ok":
                raise RuntimeError(f"the {prefix} view answered {r.status_code} {r.content[:80]!r}")

        return call

    return {
        "aset": {
            "inline": Case(run_async(aset), make, 5_000),
            "sync_to_async": Case(run_async(hset), make, 5_000),
        },
        "aget hit": {
            "inline": Case(run_async(cache.aget), make),
            "sync_to_async": Case(run_async(hop_get), make),
        },
        "ASGI view: aset + aget": {
            "inline": Case(run_async(view("inline")), make, 2_000),
            "sync_to_async": Case(run_async(view("hop")), make, 2_000),
        },
    }


def run(cfg: Config) -> Report:
    rep = Report(
        "integration", "Flask-Caching backends; Django async inline vs thread hop", cfg.mode, cfg.command
    )
    base = Path(tempfile.mkdtemp(prefix="mmcache-bench-kit-", dir=cfg.tmp))
    keys = pool_keys(POOL)
    try:
        caches, missing = flask_caches(base)
        for name, why in missing.items():
            rep.note(f"flask {name}: skipped: not available: {why}")
        per = {name: flask_cases(c, keys) for name, c in caches.items()}
        res: dict[str, dict[str, Timing]] = {
            w: measure_all({n: cs[w] for n, cs in per.items()}, cfg) if per else {} for w in WORKLOADS
        }
        for w in WORKLOADS:
            for name in FLASK_BACKENDS:
                t = res[w].get(name)
                row = {"suite_part": "flask", "value": DICT.name, "workload": w, "peer": name}
                rep.rows.append(row | timing_fields(t, missing.get(name)))
        med = {
            (w, n): (t.median_ns if (t := res[w].get(n)) else None) for w in WORKLOADS for n in FLASK_BACKENDS
        }
        rep.section(
            "Flask-Caching `cache.get` / `cache.set` per backend, small dict values",
            ["call", *FLASK_BACKENDS, "filesystem / mmcache", "redis / mmcache"],
            [
                [w, *(fmt_ns(med[(w, n)]) for n in FLASK_BACKENDS)]
                + [fmt_ratio(ratio(med[(w, p)], med[(w, "mmcache")])) for p in ("filesystem", "redis")]
                for w in WORKLOADS
            ],
        )
        print("  " + "  ".join(f"{n}: set={fmt_ns(med[('set', n)])}" for n in FLASK_BACKENDS), flush=True)

        acases = async_cases(base, keys)
        arows = []
        for w, cases in acases.items():
            t = measure_all(cases, cfg)
            for how, timing in t.items():
                rep.rows.append({"suite_part": "async", "value": DICT.name, "workload": w, "peer": how}
                                | timing_fields(timing))  # fmt: skip
            r = ratio(t["sync_to_async"].median_ns, t["inline"].median_ns)
            arows.append(
                [w, fmt_ns(t["inline"].median_ns), fmt_ns(t["sync_to_async"].median_ns), fmt_ratio(r)]
            )
            print(f"  {w}: inline={fmt_ns(t['inline'].median_ns)} hop={fmt_ns(t['sync_to_async'].median_ns)}")
        rep.section(
            "Django backend async, awaited in an event loop: as run (inline) vs through sync_to_async",
            ["call", "inline", "sync_to_async", "hop / inline"],
            arows,
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return rep
