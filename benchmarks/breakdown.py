"""Where the time goes on the paths whose targets are missed: the profile.

For each such path the whole operation is timed, then each of its parts
alone on the same inputs (the same keys, values and tables), and the peer
the target names, all in this run. "rest" is the whole minus its parts:
the interpreter's glue between them and the cache misses one part leaves to
the next. The last line says what the whole would have to cost to meet the
target. Best of several batches (not the median): parts are short, and the
best is the least disturbed by the rest of the machine.

Paths: get hit of a dict value (target: 6x diskcache; a 10 KB hit is a
copy of 10 KB out of a working set larger than the CPU caches, which only
the kv suite, where peers run in between, reproduces),
put overwrite of 100 B and 10 KB (10x diskcache, compaction included),
Django ``set`` (10x diskcache's DjangoCache) and the decorator hit with a
dict and a 10 KB result (50x ``joblib.Memory``).
"""

from __future__ import annotations

import fcntl
import gc
import os
import pickle
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import Config, fmt_ns
from .kv import pool_keys
from .report import Report
from .values import BYTES_10K, BYTES_100, PROTOCOL, SMALL_DICT, ValueKind


@dataclass
class Profile:
    """One path: the whole, its parts, the peer, and the ratio the target asks."""

    name: str
    whole_ns: float
    parts: list[tuple[str, float]]
    peer: str
    peer_ns: float | None
    goal: float
    rest: str = "rest (glue between the parts, cache misses)"

    def rows(self) -> list[list[str]]:
        out = [[p, fmt_ns(ns), f"{100 * ns / self.whole_ns:.0f} %"] for p, ns in self.parts]
        rest = self.whole_ns - sum(ns for _, ns in self.parts)
        share = f"{100 * rest / self.whole_ns:.0f} %"
        out.append([self.rest, fmt_ns(rest), share])
        out.append(["**whole**", fmt_ns(self.whole_ns), "100 %"])
        if self.peer_ns is not None:
            times = f"{self.peer_ns / self.whole_ns:.1f}× mmcache"
            out.append([f"{self.peer} (peer)", fmt_ns(self.peer_ns), times])
            out.append([f"target {self.goal:g}×: whole at most", fmt_ns(self.peer_ns / self.goal), ""])
        return out


def per_op(run: Callable[[list[Any]], object], items: list[Any], repeats: int) -> float:
    """Best ns per item of ``run(items)`` over ``repeats`` batches, collector off."""
    best = float("inf")
    for _ in range(repeats):
        gc.disable()
        try:
            t0 = time.perf_counter_ns()
            run(items)
            best = min(best, (time.perf_counter_ns() - t0) / len(items))
        finally:
            gc.enable()
    return best


def each(fn: Callable[[Any], object]) -> Callable[[Iterable[Any]], None]:
    def run(items: Iterable[Any]) -> None:
        for x in items:
            fn(x)

    return run


def _diskcache(d: Path, keys: list[str], value: Any) -> Any:
    try:
        import diskcache
    except ImportError:
        return None
    dc = diskcache.Cache(str(d / "diskcache"))
    for k in keys:
        dc.set(k, value)
    return dc


def get_paths(base: Path, cfg: Config) -> list[Profile]:
    from mmcache import MmapCache

    out = []
    reps = 5 if cfg.quick else 9
    keys = pool_keys(2_000 if cfg.quick else 10_000)
    sample = [random.Random(1).choice(keys) for _ in range(20_000)]
    # A dict value: lookup + unpickle.
    c = MmapCache(base / "dict", size=2 * len(keys) + 64)
    blob = pickle.dumps(SMALL_DICT, PROTOCOL)
    for k in keys:
        c.put(k, blob)
    get, loads = c.get, pickle.loads
    whole = per_op(each(lambda k: loads(get(k))), sample, reps)
    parts = [("table get (memo hit, bytes out)", per_op(each(get), sample, reps)),
             ("pickle.loads of the small dict", per_op(each(loads), [blob] * len(sample), reps))]  # fmt: skip
    dc = _diskcache(base / "dc-dict", keys, SMALL_DICT)
    peer = per_op(each(dc.get), sample, reps) if dc is not None else None
    out.append(Profile("get hit, small dict", whole, parts, "diskcache.Cache.get", peer, 6))
    c.close()
    return out


def put_paths(base: Path, cfg: Config) -> list[Profile]:
    small, large = (2_000, 800) if cfg.quick else (10_000, 3_200)
    return [put_path(base, cfg, BYTES_100, small), put_path(base, cfg, BYTES_10K, large)]


def putting(put: Callable[[str, Any], object], v: Any) -> Callable[[Iterable[str]], None]:
    return each(lambda k: put(k, v))


def put_path(base: Path, cfg: Config, kind: ValueKind, n: int) -> Profile:
    """Overwrites of ``n`` keys: compaction's share, the lock, the record, the rest."""
    from mmcache import MmapCache
    from mmcache._core import record

    reps = 5 if cfg.quick else 9
    keys = pool_keys(n)
    d = base / f"put-{kind.name}"
    d.mkdir()
    c = MmapCache(d / "t", size=2 * n + 64)
    lean = MmapCache(d / "t", size=2 * n + 64, compact_min_bytes=1 << 50)  # never asks for compaction
    v = kind.value
    for k in keys:
        c.put(k, v)
    rounds = keys * (3 if kind is BYTES_100 else 2)  # several compactions' worth of overwrites
    whole = per_op(putting(c.put, v), rounds, 3)
    # Dead bytes pile up under ``lean``: a bounded number of its puts.
    no_compaction = per_op(putting(lean.put, v), keys[:1_000], 3)
    fd = os.open(str(d / "t.lock"), os.O_RDWR)
    try:
        lock = per_op(
            each(lambda _: (fcntl.flock(fd, fcntl.LOCK_EX), fcntl.flock(fd, fcntl.LOCK_UN))), keys, reps
        )
    finally:
        os.close(fd)
    build = per_op(each(lambda k: record.build(None, k.encode(), 2, v, 0, 0)), keys, reps)
    parts = [
        ("compaction's share (whole − puts that never ask for one)", max(0.0, whole - no_compaction)),
        ("writer lock: flock + unlock", lock),
        ("record, checksum (before the lock)", build),
    ]
    dc = _diskcache(d, keys, v)
    peer = per_op(putting(dc.set, v), keys[:1_000], 3) if dc is not None else None
    lean.close()
    c.close()
    rest = "probe, append, slot, header under the lock (the rest)"
    return Profile(f"put overwrite, {kind.name}", whole, parts, "diskcache.Cache.set", peer, 10, rest)


def django_path(base: Path, cfg: Config) -> Profile | None:
    try:
        import django
        from django.conf import settings
    except ImportError:
        return None
    opts = {"MAX_ENTRIES": 1_000_000}
    backend = "mmcache.contrib.django.MmapCacheBackend"
    caches = {"default": {"BACKEND": backend, "LOCATION": str(base / "dj"), "OPTIONS": opts}}
    try:
        import diskcache  # noqa: F401

        caches["diskcache"] = {"BACKEND": "diskcache.DjangoCache", "LOCATION": str(base / "djdc")}
    except ImportError:
        pass
    settings.configure(CACHES=caches, INSTALLED_APPS=[], USE_TZ=True)
    django.setup()
    from django.core.cache import caches as cs

    cache = cs["default"]
    reps = 5 if cfg.quick else 9
    keys = pool_keys(1_000)
    v = BYTES_100.value
    for k in keys:
        cache.set(k, v)
    rounds = keys * 10
    whole = per_op(each(lambda k: cache.set(k, v)), rounds, 3)
    t = cache.table
    mk, enc, exp = cache.make_and_validate_key, cache._encode, cache._expire
    made = [mk(k) for k in keys]
    parts = [
        ("make_and_validate_key (Django's contract)", per_op(each(mk), keys, reps)),
        ("encode the value, expiry from the timeout", per_op(each(lambda _: (enc(v), exp(300))), keys, reps)),
        ("len(table) for MAX_ENTRIES", per_op(each(lambda _: len(t)), keys, reps)),
        ("table put (compaction included)", per_op(each(lambda k: t.put(k, v, 1e9)), made * 10, 3)),
    ]
    peer = None
    if "diskcache" in caches:
        dj = cs["diskcache"]
        for k in keys:
            dj.set(k, v)
        peer = per_op(each(lambda k: dj.set(k, v)), keys, 3)
    return Profile("Django cache.set, 100 B", whole, parts, "diskcache DjangoCache.set", peer, 10)


def decorator_paths(base: Path, cfg: Config) -> list[Profile]:
    from .decorator import FUNCTIONS

    return [
        decorator_path(base, cfg, kind, fn) for kind, fn in FUNCTIONS.items() if kind in ("dict", "10 KB")
    ]


def decorator_path(base: Path, cfg: Config, kind: str, fn: Callable[[int], Any]) -> Profile:
    """A hit of ``@mmap_cached`` on ``fn`` (results of shape ``kind``)."""
    from mmcache import MmapCache, mmap_cached

    d = base / f"deco-{kind.replace(' ', '')}"
    f = mmap_cached(path=str(d))(fn)
    reps = 5 if cfg.quick else 9
    args = list(range(1_000))
    for a in args:
        f(a)
    keyfn = f.__cache_key__
    keys = [keyfn(a) for a in args]
    table = MmapCache.open(f.cache_parameters()["path"])
    blobs = [table._get_view(k) for k in keys]  # as the decorator reads: a view from 4 KiB on
    parts = [
        ("argument key (bind, encode, xxh3_128)", per_op(each(keyfn), args, reps)),
        ("table read (memo hit; a view of the map from 4 KiB)", per_op(each(table._get_view), keys, reps)),
        ("pickle.loads of the result", per_op(each(pickle.loads), blobs, reps)),
    ]
    whole = per_op(each(f), args * 20, reps)
    peer = None
    try:
        import joblib

        jf = joblib.Memory(str(d / "joblib"), verbose=0).cache(fn)
        for a in args[:200]:
            jf(a)
        peer = per_op(each(jf), args[:200], 3)
    except ImportError:
        pass
    return Profile(f"decorator hit, {kind} result", whole, parts, "joblib.Memory", peer, 50)


def run(cfg: Config) -> Report:
    title = "Where the time goes on the paths of the targets missed or close"
    rep = Report("breakdown", title, cfg.mode, cfg.command)
    base = Path(tempfile.mkdtemp(prefix="mmcache-bench-breakdown-", dir=cfg.tmp))
    try:
        paths = get_paths(base, cfg) + put_paths(base, cfg)
        dj = django_path(base, cfg)
        paths += ([dj] if dj is not None else []) + decorator_paths(base, cfg)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    for p in paths:
        rep.rows.append({"path": p.name, "whole_ns": p.whole_ns, "parts": dict(p.parts), "rest": p.rest,
                         "peer": p.peer, "peer_ns": p.peer_ns, "goal": p.goal})  # fmt: skip
        rep.section(p.name, ["part", "ns per op", "share"], p.rows())
    return rep
