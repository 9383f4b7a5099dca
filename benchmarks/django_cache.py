"""Django's cache API (``caches[alias].get`` / ``.set``) on every backend.

Django is configured in this process, in code: a temporary SQLite database
(with ``createcachetable``) for ``DatabaseCache``, temporary directories for
the file-backed caches, the local Redis server for ``RedisCache``. Every
backend gets ``MAX_ENTRIES`` above the pool size where Django reads it, so
no backend culls during the run. mmcache's backend is used when
``mmcache.contrib.django.MmapCacheBackend`` imports; otherwise its rows say
"skipped: not available".
"""

from __future__ import annotations

import importlib
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from . import redis_server
from .harness import Case, Config, Timing, cycle, fmt_ns, fmt_ratio, measure_all, ratio, timing_fields
from .kv import get_set_cases, loop_put, pool_keys, sizes
from .report import Report, Target
from .values import VALUES, ValueKind

BACKENDS = {
    "mmcache": "mmcache.contrib.django.MmapCacheBackend",
    "locmem": "django.core.cache.backends.locmem.LocMemCache",
    "filebased": "django.core.cache.backends.filebased.FileBasedCache",
    "database": "django.core.cache.backends.db.DatabaseCache",
    "diskcache": "diskcache.DjangoCache",
    "redis": "django.core.cache.backends.redis.RedisCache",
}
SHARED = ("filebased", "database", "diskcache", "redis")  # shared between processes, like mmcache
WORKLOADS = ("get hit", "get miss", "set")
TABLE = "bench_cache_table"
# Backends that apply Django's MAX_ENTRIES / CULL_FREQUENCY (diskcache and
# Redis bound themselves otherwise), timed once more at Django's default of
# 300 entries with more keys than that written in turn: every set of a key
# not in the cache may cull a third of it.
CULLING = ("mmcache", "locmem", "filebased", "database")
CULL_SUFFIX = "@300"
CULL_KEYS = 1000
# Smaller pools than the kv suite: FileBasedCache lists its directory and
# DatabaseCache counts its rows on every set, so filling costs O(n) per key.
POOL_QUICK, POOL_FULL = 150, 1000


def available(alias: str) -> str | None:
    """None if the backend can be imported, else why not."""
    module, _, cls = BACKENDS[alias].rpartition(".")
    if alias == "redis" and redis_server.server().url is None:
        return str(redis_server.server().reason)
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        return f"{module} does not import ({e})"
    if not hasattr(mod, cls):
        return f"{module} has no {cls} yet"
    return None


def configure(base: Path, max_entries: int) -> dict[str, str]:
    """Set up Django settings once; returns {alias: reason} for backends that cannot run."""
    import django
    from django.conf import settings
    from django.core.management import call_command

    if settings.configured:
        raise RuntimeError("Django settings are already configured in this process")
    missing = {a: r for a in BACKENDS if (r := available(a)) is not None}
    opts = {"MAX_ENTRIES": max_entries}
    conf: dict[str, dict[str, Any]] = {
        "mmcache": {"LOCATION": str(base / "mmcache"), "OPTIONS": opts},
        "locmem": {"LOCATION": "bench", "OPTIONS": opts},
        "filebased": {"LOCATION": str(base / "filebased"), "OPTIONS": opts},
        "database": {"LOCATION": TABLE, "OPTIONS": opts},
        "diskcache": {"LOCATION": str(base / "diskcache")},
        "redis": {"LOCATION": redis_server.server().url or ""},
    }
    caches = {a: {"BACKEND": BACKENDS[a], **conf[a]} for a in BACKENDS if a not in missing}
    for a in CULLING:  # the same backends with Django's default MAX_ENTRIES (300)
        if a not in missing:
            loc = conf[a]["LOCATION"]
            caches[a + CULL_SUFFIX] = {
                "BACKEND": BACKENDS[a],
                "LOCATION": loc + ("_cull" if a != "locmem" else ""),
            }
    caches["default"] = {"BACKEND": BACKENDS["locmem"], "LOCATION": "default"}
    settings.configure(
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(base / "db.sqlite3")}},
        CACHES=caches,
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()
    call_command("createcachetable", verbosity=0)  # every DatabaseCache alias's table
    return missing


def fill_backend(alias: str, kind: ValueKind, keys: list[str]) -> None:
    """Empty the cache, put the pool, and check that a hit hits and a miss misses."""
    from django.core.cache import caches

    cache = caches[alias]
    cache.clear()
    v = kind.value
    for k in keys:
        cache.set(k, v)
    if cache.get(keys[0]) != v or cache.get("miss:never") is not None:
        raise RuntimeError(f"{alias}: round trip check failed; refusing to time it")


def cases_for(alias: str, kind: ValueKind, keys: list[str], write_cap: int) -> dict[str, Case]:
    """{workload: Case} on a filled backend: get hit, get miss, set (overwrite)."""
    from django.core.cache import caches

    cache = caches[alias]
    return get_set_cases(cache.get, cache.set, kind.value, keys, write_cap)


def time_kind(
    kind: ValueKind, cfg: Config, missing: dict[str, str], rep: Report
) -> dict[str, dict[str, Timing]]:
    """{workload: {alias: Timing}} for one value shape, backends interleaved."""
    pool, write_cap = sizes(cfg, kind)
    keys = pool_keys(min(pool, POOL_QUICK if cfg.quick else POOL_FULL))
    per_alias: dict[str, dict[str, Case]] = {}
    for alias in BACKENDS:
        if alias in missing:
            continue
        try:
            fill_backend(alias, kind, keys)
        except Exception as e:
            if alias != "mmcache":  # mmcache's own backend is being written now: report, go on
                raise
            missing[alias] = f"failed: {type(e).__name__}: {e}"
            rep.note(f"{alias}: skipped: {missing[alias]}")
            continue
        per_alias[alias] = cases_for(alias, kind, keys, write_cap)
    return {w: measure_all({a: cs[w] for a, cs in per_alias.items()}, cfg) for w in WORKLOADS}


def run(cfg: Config) -> Report:
    rep = Report("django", "Django cache API: get / set on every backend", cfg.mode, cfg.command)
    base = Path(tempfile.mkdtemp(prefix="mmcache-bench-django-", dir=cfg.tmp))
    med: dict[tuple[str, str, str], float | None] = {}
    cull: dict[str, Timing] = {}
    try:
        try:
            missing = configure(base, max_entries=4 * POOL_FULL + 1000)
        except ImportError as e:
            rep.note(f"Django suite skipped: not available: {e}")
            return rep
        rep.note(
            f"each backend holds {POOL_QUICK if cfg.quick else POOL_FULL} keys (fewer for 10 KB values); "
            "FileBasedCache lists its directory and DatabaseCache counts its rows on every set, "
            "so their set cost grows with the number of entries"
        )
        for alias, why in missing.items():
            rep.note(f"{alias}: skipped: not available: {why}")
        for kind in VALUES:
            res = time_kind(kind, cfg, missing, rep)
            for alias in BACKENDS:
                for w in WORKLOADS:
                    t = res[w].get(alias)
                    med[(kind.name, w, alias)] = t.median_ns if t else None
                    row = {"value": kind.name, "workload": w, "peer": alias}
                    rep.rows.append(row | timing_fields(t, missing.get(alias)))
                print(
                    f"  {kind.name:>6} {alias:<10} "
                    + "  ".join(f"{w}={fmt_ns(med[(kind.name, w, alias)])}" for w in WORKLOADS),
                    flush=True,
                )
        cull = time_culling(cfg, missing)
    finally:
        from django.db import connections

        connections.close_all()
        shutil.rmtree(base, ignore_errors=True)
    names = list(BACKENDS)
    for kind in VALUES:
        rep.section(
            f"Median latency per call, {kind.name} values",
            ["call", *names],
            [[w, *[fmt_ns(med[(kind.name, w, a)]) for a in names]] for w in WORKLOADS],
        )
        rep.section(
            f"How many times faster the mmcache backend is (backend / mmcache), {kind.name} values",
            ["call", *names[1:]],
            [
                [
                    w,
                    *[
                        fmt_ratio(ratio(med[(kind.name, w, a)], med[(kind.name, w, "mmcache")]))
                        for a in names[1:]
                    ],
                ]
                for w in WORKLOADS
            ],
        )
    if cull:
        for alias, t in cull.items():
            rep.rows.append({"value": "100 B", "workload": "set (culling)", "peer": alias,
                             "median_ns": t.median_ns, "min_ns": t.min_ns, "max_ns": t.max_ns})  # fmt: skip
        rep.section(
            f"set at Django's default MAX_ENTRIES (300), {CULL_KEYS:,} keys in turn (culling), 100 B values",
            ["", *cull, *(f"{a} / mmcache" for a in cull if a != "mmcache")],
            [
                ["set"]
                + [fmt_ns(t.median_ns) for t in cull.values()]
                + [
                    fmt_ratio(ratio(t.median_ns, cull["mmcache"].median_ns))
                    for a, t in cull.items()
                    if a != "mmcache"
                ]
            ],
        )
    rep.targets += targets(med)
    rep.target_section()
    return rep


def time_culling(cfg: Config, missing: dict[str, str]) -> dict[str, Timing]:
    """{backend: set timing} at MAX_ENTRIES=300 with CULL_KEYS keys set in turn."""
    from django.core.cache import caches

    if "mmcache" in missing:
        return {}
    keys = pool_keys(CULL_KEYS, seed=3)
    kind = VALUES[0]
    cases = {}
    for alias in CULLING:
        if alias in missing:
            continue
        cache = caches[alias + CULL_SUFFIX]
        cache.clear()
        for k in keys:
            cache.set(k, kind.value)
        calls = [0]

        def batch(n: int, calls: list[int] = calls) -> list[str]:
            calls[0] += 1
            return cycle(keys, n, random.Random(calls[0]).randrange(len(keys)))

        cases[alias] = Case(loop_put(cache.set, kind.value), batch, 2_000)
    out = measure_all(cases, cfg)
    for alias, t in out.items():
        print(f"  culling {alias:<10} set={fmt_ns(t.median_ns)}", flush=True)
    return out


def _worst(med: dict[tuple[str, str, str], float | None], w: str, peer: str) -> tuple[float, str] | None:
    rs = [
        (r, k.name)
        for k in VALUES
        if (r := ratio(med.get((k.name, w, peer)), med.get((k.name, w, "mmcache")))) is not None
    ]
    return min(rs) if rs else None


def targets(med: dict[tuple[str, str, str], float | None]) -> list[Target]:
    out = []
    for w, goal_name in (("get hit", "get"), ("set", "set")):
        for peer in SHARED:
            r = _worst(med, w, peer)
            goal = 10.0 if (w, peer) == ("set", "diskcache") else 1.0
            text = ">= 10×" if goal == 10.0 else "> 1× (faster)"
            measured = "skipped" if r is None else f"{fmt_ratio(r[0])} (worst: {r[1]})"
            met = None if r is None else (r[0] >= goal if goal > 1 else r[0] > 1)
            out.append(Target(f"Django {goal_name} vs {peer}", measured, text, met))
    r = _worst(med, "get hit", "locmem")
    out.append(
        Target(
            "Django get vs LocMemCache (stretch)",
            "skipped" if r is None else f"{fmt_ratio(r[0])} (worst: {r[1]})",
            "> 1× (stretch)",
            None if r is None else r[0] > 1,
        )
    )
    return out
