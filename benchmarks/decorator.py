"""Memoisation decorators: the hit and the miss path of one cached call.

The function is trivial (it builds a small dict), so the numbers are the
decorator's own cost: building the key from the arguments, looking it up,
decoding the value; on a miss also storing it. Peers: ``functools.lru_cache``
(the in-process floor), ``diskcache.Cache.memoize``, ``joblib.Memory.cache``
and mmcache's ``@mmap_cached`` when it imports.
"""

from __future__ import annotations

import functools
import importlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .harness import Case, Config, Run, cycle, fmt_ns, fmt_ratio, measure_all, ratio
from .report import Report, Target

PEERS = ("mmcache", "lru_cache", "diskcache", "joblib")
LABELS = {
    "mmcache": "mmap_cached",
    "lru_cache": "functools.lru_cache",
    "diskcache": "diskcache memoize",
    "joblib": "joblib.Memory",
}
WORKLOADS = ("hit", "miss")


class Unavailable(Exception):
    pass


def compute(x: int) -> dict[str, Any]:
    """The cached function: cheap, so the decorator's cost is what shows."""
    return {"x": x, "square": x * x, "label": "item"}


def mmap_cached_factory() -> Callable[..., Any]:
    for module in ("mmcache", "mmcache.decorators"):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        deco = getattr(mod, "mmap_cached", None)
        if deco is not None:
            return deco  # type: ignore[no-any-return]
    raise Unavailable("mmcache.mmap_cached does not import yet")


def decorate(peer: str, directory: Path) -> tuple[Callable[[int], Any], Callable[[], None]]:
    """(cached function, close) for ``peer``, storing under ``directory``."""
    fn = compute
    if peer == "lru_cache":
        return functools.lru_cache(maxsize=None)(fn), lambda: None
    if peer == "mmcache":
        return mmap_cached_factory()(path=str(directory))(fn), lambda: None
    if peer == "diskcache":
        try:
            import diskcache
        except ImportError as e:
            raise Unavailable("diskcache is not installed") from e
        c = diskcache.Cache(str(directory))
        return c.memoize()(fn), c.close
    try:
        import joblib
    except ImportError as e:
        raise Unavailable("joblib is not installed") from e
    mem = joblib.Memory(str(directory), verbose=0)
    return mem.cache(fn), lambda: None


def calls(f: Callable[[int], Any]) -> Run:
    def run(args: list[int]) -> None:
        for a in args:
            f(a)

    return run


def prepare(peer: str, cfg: Config, base: Path) -> tuple[dict[str, Case], Callable[[], None]]:
    """Decorate, warm the pool of arguments, check a hit; ({workload: Case}, close)."""
    f, close = decorate(peer, Path(tempfile.mkdtemp(prefix=f"deco-{peer}-", dir=base)))
    pool = list(range(200 if cfg.quick else 1000))
    try:
        for a in pool:
            f(a)
        if f(pool[0]) != compute(pool[0]):
            raise RuntimeError(f"{peer}: cached result differs; refusing to time it")
    except BaseException:
        close()
        raise
    counter = [0]

    def fresh(n: int) -> list[int]:
        counter[0] += 1
        return [10**9 + counter[0] * 10**6 + i for i in range(n)]

    def hits(n: int) -> list[int]:
        counter[0] += 1
        return cycle(pool, n, counter[0] * 37)

    return {"hit": Case(calls(f), hits), "miss": Case(calls(f), fresh, 20_000)}, close


def run(cfg: Config) -> Report:
    rep = Report("decorator", "Memoisation decorators: hit and miss", cfg.mode, cfg.command)
    base = Path(tempfile.mkdtemp(prefix="mmcache-bench-deco-", dir=cfg.tmp))
    med: dict[tuple[str, str], float | None] = {}
    reasons: dict[str, str] = {}
    closers: list[Callable[[], None]] = []
    try:
        cases: dict[str, dict[str, Case]] = {}
        for peer in PEERS:
            try:
                cases[peer], close = prepare(peer, cfg, base)
                closers.append(close)
            except Unavailable as e:
                reasons[peer] = f"not available: {e}"
            except Exception as e:
                if peer != "mmcache":  # mmcache's decorator is being written now: report, go on
                    raise
                reasons[peer] = f"failed: {type(e).__name__}: {e}"
            if peer in reasons:
                rep.note(f"{LABELS[peer]}: skipped: {reasons[peer]}")
        res = {w: measure_all({p: cs[w] for p, cs in cases.items()}, cfg) for w in WORKLOADS}
    finally:
        for close in closers:
            close()
        shutil.rmtree(base, ignore_errors=True)
    for peer in PEERS:
        for w in WORKLOADS:
            t = res[w].get(peer)
            med[(w, peer)] = t.median_ns if t else None
            row: dict[str, Any] = {"workload": w, "peer": peer, "label": LABELS[peer]}
            if t is None:
                row |= {"median_ns": None, "skipped": reasons.get(peer)}
            else:
                row |= {"median_ns": t.median_ns, "min_ns": t.min_ns, "max_ns": t.max_ns, "batch": t.batch}
            rep.rows.append(row)
        print(f"  {LABELS[peer]:<20} " + "  ".join(f"{w}={fmt_ns(med[(w, peer)])}" for w in WORKLOADS))
    labels = [LABELS[p] for p in PEERS]
    rep.section(
        "Median latency per call",
        ["path", *labels],
        [[w, *[fmt_ns(med[(w, p)]) for p in PEERS]] for w in WORKLOADS],
    )
    rep.section(
        "How many times faster mmap_cached is (peer / mmap_cached)",
        ["path", *labels[1:]],
        [[w, *[fmt_ratio(ratio(med[(w, p)], med[(w, "mmcache")])) for p in PEERS[1:]]] for w in WORKLOADS],
    )
    for peer, goal in (("diskcache", 5.0), ("joblib", 50.0)):
        r = ratio(med[("hit", peer)], med[("hit", "mmcache")])
        rep.targets.append(
            Target(
                f"decorator hit vs {LABELS[peer]}",
                "skipped" if r is None else fmt_ratio(r),
                f">= {goal:.0f}×",
                None if r is None else r >= goal,
            )
        )
    rep.target_section()
    return rep
