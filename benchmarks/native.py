"""Issue 19's rows: the compiled get and put and the pure-Python ones, side by side,
against py-lmdb and diskcache, in one run (100-byte values, str keys).

``python -m benchmarks --only native [--quick]``. One mmcache table and one
lmdb environment hold ``WIDE`` keys; the mmcache rows read that one table
through two handles, one with the compiled get and put (``mmcache._native``)
and one with them taken off (the class's pure-Python ``get``: memo, then
probe; and ``put``); diskcache's ``Cache`` holds the same keys.
Workloads: get hit over the first 1,000 keys in random order (hot), get hit
over all ``WIDE`` keys in random order (wide: past the pure path's memo),
get miss, put overwrite (the native handle's put is the compiled one).

Then, in the same run: a get hit at 1,000 entries against one at
``LARGE`` entries (1,000,000; 100,000 with ``--quick``), native, pure and
py-lmdb, each over its whole table in random order (not diskcache: filling
it with 1,000,000 keys takes minutes); and the faces through the native
get: Django's ``cache.get`` hit (mmcache's backend against Django's
``LocMemCache``, ``FileBasedCache`` and ``RedisCache`` (the run's local
redis-server, where there is one) and diskcache's ``DjangoCache``, all made
directly, Django's settings left alone; not ``DatabaseCache``, which needs
them) and a ``@mmap_cached`` hit against ``functools.lru_cache`` (100-byte
results).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .harness import Case, Config, fmt_ns, fmt_ratio, measure_all, ratio
from .peers import Unavailable, mmcache_size, open_store
from .report import Report, Target
from .values import BYTES_100

HOT = 1_000
SMALL = 1_000
ROWS = ("mmcache native", "mmcache pure", "lmdb", "diskcache")
SCALE_ROWS = ROWS[:3]
# The table's ratio columns: (slower, faster) -> "lmdb / native" and so on
RATIOS = (("lmdb", "mmcache native"), ("lmdb", "mmcache pure"), ("diskcache", "mmcache native"),
          ("diskcache", "mmcache pure"), ("mmcache pure", "mmcache native"))  # fmt: skip

WORKLOADS = ("get hit, 1,000 hot keys", "get hit, {wide:,} keys", "get miss", "put overwrite")
GOALS = {"get hit, 1,000 hot keys": 3.0, "get hit, {wide:,} keys": 3.0, "get miss": 3.0, "put overwrite": 2.0}


def _short(row: str) -> str:
    return row.removeprefix("mmcache ")


def _keys(n: int) -> list[str]:
    return [f"key:{i:09d}" for i in range(n)]


def _gets(get: Any) -> Any:
    def run(batch: list[str]) -> None:
        for k in batch:
            get(k)

    return run


def _puts(put: Any, value: bytes) -> Any:
    def run(batch: list[str]) -> None:
        for k in batch:
            put(k, value)

    return run


def _peer(peer: str, where: Path, keys: list[str], value: bytes, rep: Report) -> Any:
    """``peer``'s store in ``where`` holding ``keys``, or None (and a note) where it cannot run."""
    try:
        st = open_store(peer, where, BYTES_100, len(keys))
    except Unavailable as e:
        rep.note(f"{peer}: skipped: {e}")
        return None
    st.put_many((k, value) for k in keys)
    return st


def _time_workloads(stores: dict[str, Any], batches: dict[str, Any], value: bytes, wide: int, cfg: Config,
                    rep: Report) -> dict[tuple[str, str], float | None]:  # fmt: skip
    """Each workload over ``stores``, their batches interleaved; rows added to ``rep``."""
    med: dict[tuple[str, str], float | None] = {}
    for w in WORKLOADS:
        put = w == "put overwrite"
        cases = {name: Case(_puts(s.put, value) if put else _gets(s.get), batches[w],
                            max_n=20_000 if put else None)
                 for name, s in stores.items()}  # fmt: skip
        for name, t in measure_all(cases, cfg).items():
            med[(w, name)] = t.median_ns
            rep.rows.append({"workload": w.format(wide=wide), "peer": name, "median_ns": t.median_ns,
                             "min_ns": t.min_ns, "max_ns": t.max_ns, "batch": t.batch})  # fmt: skip
    return med


def run(cfg: Config) -> Report:
    from mmcache import MmapCache, _native

    wide = 20_000 if cfg.quick else 200_000
    rep = Report("native", "Native and pure-Python get against py-lmdb (issue 19)", cfg.mode, cfg.command)
    if not _native.AVAILABLE:
        rep.note(f"the compiled get is not in use here ({_native.REASON}): the native rows are pure Python")
    base = Path(tempfile.mkdtemp(prefix="mmcache-bench-native-", dir=cfg.tmp))
    keys = _keys(wide)
    value = BYTES_100.value
    rng = random.Random(19)
    med: dict[tuple[str, str], float | None] = {}
    try:
        path = base / "table"
        native = MmapCache(path, size=mmcache_size(wide))
        pure = MmapCache(path, size=mmcache_size(wide))
        for attr in ("get", "_get_view", "put"):  # back to the class's pure-Python methods
            pure.__dict__.pop(attr, None)
        for k in keys:
            native.put(k, value)
        stores: dict[str, Any] = {"mmcache native": native, "mmcache pure": pure}
        batches = {
            WORKLOADS[0]: lambda n: rng.choices(keys[:HOT], k=n),
            WORKLOADS[1]: lambda n: rng.choices(keys, k=n),
            WORKLOADS[2]: lambda n: [f"absent:{rng.randrange(1 << 40)}" for _ in range(n)],
            WORKLOADS[3]: lambda n: rng.choices(keys[:HOT], k=n),
        }
        # diskcache (SQLite: ~10x our time per call) is filled and timed after
        # the others, on its own. Timed among them, its batches evicted their
        # lines (mmcache's and py-lmdb's hits 10-25 % slower); merely filled
        # first, it left the process slower for them (mmcache's miss 220 ->
        # 290 ns, with and without it: the process's heap, not the code).
        lm = _peer("lmdb", base / "lmdb", keys, value, rep)
        med.update(_time_workloads(stores | ({"lmdb": lm} if lm else {}), batches, value, wide, cfg, rep))
        if lm:
            lm.close()
        dc = _peer("diskcache", base / "diskcache", keys, value, rep)
        if dc:
            med.update(_time_workloads({"diskcache": dc}, batches, value, wide, cfg, rep))
            dc.close()
        native.close()
        pure.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    rep.section(
        "Median latency per operation",
        ["operation", *ROWS, *(f"{_short(a)} / {_short(b)}" for a, b in RATIOS)],
        [
            [
                w.format(wide=wide),
                *(fmt_ns(med.get((w, p))) for p in ROWS),
                *(fmt_ratio(ratio(med.get((w, a)), med.get((w, b)))) for a, b in RATIOS),
            ]
            for w in WORKLOADS
        ],
    )
    for w, goal in GOALS.items():
        r = ratio(med.get((w, "lmdb")), med.get((w, "mmcache native")))
        rep.targets.append(Target(f"{w.format(wide=wide)}: lmdb / native", fmt_ratio(r), f">= {goal:g}×",
                                  None if r is None else r >= goal))  # fmt: skip
    scale = _scale(cfg, rep)
    faces = _faces(cfg, rep)
    _scale_targets(rep, scale)
    _face_targets(rep, faces)
    rep.target_section("Targets (issue 19)")
    return rep


def _filled(path: Path, n: int, value: bytes) -> Any:
    from mmcache import MmapCache

    c = MmapCache(path, size=mmcache_size(n))
    for k in _keys(n):
        c.put(k, value)
    return c


def _scale(cfg: Config, rep: Report) -> dict[tuple[int, str], float | None]:
    """Get hits at SMALL and at LARGE entries, random keys over the whole table."""
    large = 100_000 if cfg.quick else 1_000_000
    base = Path(tempfile.mkdtemp(prefix="mmcache-bench-native-scale-", dir=cfg.tmp))
    value = BYTES_100.value
    rng = random.Random(23)
    med: dict[tuple[int, str], float | None] = {}
    try:
        for n in (SMALL, large):
            keys = _keys(n)
            native = _filled(base / f"t{n}", n, value)
            pure = type(native)(base / f"t{n}")
            pure.__dict__.pop("get", None)
            stores: dict[str, Any] = {"mmcache native": native, "mmcache pure": pure}
            if lm := _peer("lmdb", base / f"lmdb{n}", keys, value, rep):
                stores["lmdb"] = lm

            def batch(m: int, keys: list[str] = keys) -> list[str]:
                return rng.choices(keys, k=m)

            cases = {name: Case(_gets(s.get), batch) for name, s in stores.items()}
            for name, t in measure_all(cases, cfg).items():
                med[(n, name)] = t.median_ns
                rep.rows.append({"workload": f"get hit, {n:,} entries", "peer": name,
                                 "median_ns": t.median_ns, "min_ns": t.min_ns, "max_ns": t.max_ns,
                                 "batch": t.batch})  # fmt: skip
            for s in stores.values():
                s.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    rows = []
    for p in SCALE_ROWS:
        small_ns, large_ns = med.get((SMALL, p)), med.get((large, p))
        rows.append([p, fmt_ns(small_ns), fmt_ns(large_ns), fmt_ratio(ratio(large_ns, small_ns))])
    rep.section(
        "Get hit by table size (random keys over the whole table)",
        ["store", f"{SMALL:,} entries", f"{large:,} entries", f"{large:,} / {SMALL:,}"],
        rows,
    )
    return {(0 if n == SMALL else 1, p): v for (n, p), v in med.items()}


def _compute(x: int) -> bytes:
    """The decorated function of the faces rows: trivial, a 100-byte result."""
    return x.to_bytes(8, "little") + BYTES_100.value[8:]


@contextlib.contextmanager
def _pure_python() -> Iterator[None]:
    """Handles opened and functions decorated in the block use no compiled code
    (as where nothing compiled), for pure-Python rows beside the native ones."""
    from mmcache import _native

    names = ("Getter", "Putter", "KeyFn", "Hit")
    saved = {n: getattr(_native, n) for n in names}
    try:
        for n in names:
            setattr(_native, n, None)
        yield
    finally:
        for n, v in saved.items():
            setattr(_native, n, v)


def _faces(cfg: Config, rep: Report) -> dict[str, float | None]:
    """Django cache.get and a decorator hit, through the native get, against their in-process peers."""
    from mmcache import mmap_cached
    from mmcache.contrib.django import MmapCacheBackend

    base = Path(tempfile.mkdtemp(prefix="mmcache-bench-native-faces-", dir=cfg.tmp))
    value: bytes = BYTES_100.value
    keys = _keys(HOT)
    rng = random.Random(29)
    med: dict[str, float | None] = {}
    try:
        backends: dict[str, Any] = {
            "django mmcache": MmapCacheBackend(str(base / "django"), {}),
            **_django_peers(base, rep),
        }
        with _pure_python():  # its table is opened (pure) by the first set
            backends["django mmcache pure"] = MmapCacheBackend(str(base / "django-pure"), {})
            backends["django mmcache pure"].set(keys[0], value, None)
        for b in backends.values():
            for k in keys:
                b.set(k, value, None)
        cases = {name: Case(_gets(b.get), lambda n: rng.choices(keys, k=n)) for name, b in backends.items()}

        # A module-level function, as most memoised ones are (a closure's key is
        # re-derived from its cells on every call: the Python path, ~0.7 us here).
        funcs: dict[str, Any] = {"decorator mmcache": mmap_cached(path=str(base / "deco"))(_compute),
                 "decorator lru_cache": functools.lru_cache(maxsize=None)(_compute)}  # fmt: skip
        with _pure_python():  # decorated, and its table opened by a first call, without the extension
            funcs["decorator mmcache pure"] = mmap_cached(path=str(base / "deco-pure"))(_compute)
            funcs["decorator mmcache pure"](0)
        args = list(range(HOT))
        for f in funcs.values():
            for a in args:
                f(a)
        cases.update({name: Case(_gets(f), lambda n: rng.choices(args, k=n)) for name, f in funcs.items()})
        for name, t in measure_all(cases, cfg).items():
            med[name] = t.median_ns
            rep.rows.append({"workload": "face hit", "peer": name, "median_ns": t.median_ns,
                             "min_ns": t.min_ns, "max_ns": t.max_ns, "batch": t.batch})  # fmt: skip
        for b in backends.values():
            b.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)

    def row(label: str, ours: str, peer: str) -> list[str]:
        return [label, fmt_ns(med.get(ours)), fmt_ns(med.get(f"{ours} pure")), fmt_ns(med.get(peer)),
                fmt_ratio(ratio(med.get(peer), med.get(ours))),
                fmt_ratio(ratio(med.get(peer), med.get(f"{ours} pure")))]  # fmt: skip

    rep.section(
        "The faces through the native get (1,000 keys, 100-byte values, hits)",
        ["operation", "mmcache native", "mmcache pure", "peer", "peer / native", "peer / pure"],
        [
            row(f"Django cache.get vs {label}", "django mmcache", f"django {peer}")
            for peer, (label, _) in DJANGO_PEERS.items()
            if f"django {peer}" in med
        ]
        + [
            row("@mmap_cached vs functools.lru_cache", "decorator mmcache", "decorator lru_cache")
        ],  # fmt: skip
    )
    return med


# Django's backends beside mmcache's, made directly (no settings): alias -> (label, class path)
DJANGO_PEERS = {
    "locmem": ("LocMemCache", "django.core.cache.backends.locmem.LocMemCache"),
    "filebased": ("FileBasedCache", "django.core.cache.backends.filebased.FileBasedCache"),
    "diskcache": ("diskcache DjangoCache", "diskcache.DjangoCache"),
    "redis": ("RedisCache", "django.core.cache.backends.redis.RedisCache"),
}


def _django_peers(base: Path, rep: Report) -> dict[str, Any]:
    """The Django backends of the faces rows that can run here ("django <alias>")."""
    from . import redis_server

    # Django's own culling starts past MAX_ENTRIES: never in this run (RedisCache
    # hands its OPTIONS to the connection pool, and has no MAX_ENTRIES)
    culls = {"OPTIONS": {"MAX_ENTRIES": 10 * HOT}}
    where = {"locmem": "bench-native", "filebased": str(base / "filebased"),
             "diskcache": str(base / "diskcache"), "redis": redis_server.server().url}  # fmt: skip
    out: dict[str, Any] = {}
    for alias, (label, path) in DJANGO_PEERS.items():
        module, _, name = path.rpartition(".")
        try:
            if where[alias] is None:
                raise Unavailable(str(redis_server.server().reason))
            cls = getattr(importlib.import_module(module), name)
            out[f"django {alias}"] = cls(where[alias], {} if alias == "redis" else culls)
        except (ImportError, AttributeError, Unavailable) as e:
            rep.note(f"Django {label}: skipped: {e}")
    return out


def _scale_targets(rep: Report, med: dict[tuple[int, str], float | None]) -> None:
    r = ratio(med.get((1, "mmcache native")), med.get((0, "mmcache native")))
    rep.targets.append(Target("get hit, large / small table: native", fmt_ratio(r), "<= 1.5×",
                              None if r is None else r <= 1.5))  # fmt: skip


def _face_targets(rep: Report, med: dict[str, float | None]) -> None:
    r = ratio(med.get("django locmem"), med.get("django mmcache"))
    rep.targets.append(Target("Django cache.get hit: locmem / mmcache", fmt_ratio(r), ">= 2×",
                              None if r is None else r >= 2))  # fmt: skip
    r = ratio(med.get("decorator mmcache"), med.get("decorator lru_cache"))
    rep.targets.append(Target("decorator hit: mmcache / lru_cache", fmt_ratio(r), "<= 10×",
                              None if r is None else r <= 10))  # fmt: skip
