"""Memoisation decorators: the hit and the miss path of one cached call.

The function is trivial (it returns 100 bytes, builds a small dict, or
returns 10 KB: one function per value shape), so the numbers are the
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

from .harness import Case, Config, Run, Timing, cycle, fmt_ns, fmt_ratio, measure_all, ratio, timing_fields
from .report import Report, Target
from .values import BYTES_10K, BYTES_100

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


def compute_100b(x: int) -> bytes:
    """The same, returning 100 bytes (the argument first: results differ)."""
    return x.to_bytes(8, "little") + BYTES_100.value[8:]


def compute_10k(x: int) -> bytes:
    """The same, returning 10 KB."""
    return x.to_bytes(8, "little") + BYTES_10K.value[8:]


# One cached function per value shape (names differ: the peers key by name).
FUNCTIONS = {"100 B": compute_100b, "dict": compute, "10 KB": compute_10k}


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


def decorate(
    peer: str, directory: Path, fn: Callable[[int], Any] = compute
) -> tuple[Callable[[int], Any], Callable[[], None]]:
    """(cached ``fn``, close) for ``peer``, storing under ``directory``."""
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


def prepare(
    peer: str, cfg: Config, base: Path, fn: Callable[[int], Any] = compute
) -> tuple[dict[str, Case], Callable[[], None]]:
    """Decorate, warm the pool of arguments, check a hit; ({workload: Case}, close)."""
    f, close = decorate(peer, Path(tempfile.mkdtemp(prefix=f"deco-{peer}-", dir=base)), fn)
    pool = list(range(200 if cfg.quick else 1000))
    try:
        for a in pool:
            f(a)
        if f(pool[0]) != fn(pool[0]):
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
    med: dict[tuple[str, str, str], float | None] = {}
    reasons: dict[str, str] = {}
    try:
        for kind, fn in FUNCTIONS.items():
            res = time_shape(fn, cfg, base, reasons, rep)
            for peer in PEERS:
                for w in WORKLOADS:
                    t = res[w].get(peer)
                    med[(kind, w, peer)] = t.median_ns if t else None
                    row = {"value": kind, "workload": w, "peer": peer, "label": LABELS[peer]}
                    rep.rows.append(row | timing_fields(t, reasons.get(peer)))
                print(
                    f"  {kind:>6} {LABELS[peer]:<20} "
                    + "  ".join(f"{w}={fmt_ns(med[(kind, w, peer)])}" for w in WORKLOADS),
                    flush=True,
                )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    labels = [LABELS[p] for p in PEERS]
    for kind in FUNCTIONS:
        rep.section(
            f"Median latency per call, {kind} results",
            ["path", *labels],
            [[w, *[fmt_ns(med[(kind, w, p)]) for p in PEERS]] for w in WORKLOADS],
        )
        rep.section(
            f"How many times faster mmap_cached is (peer / mmap_cached), {kind} results",
            ["path", *labels[1:]],
            [
                [w, *[fmt_ratio(ratio(med[(kind, w, p)], med[(kind, w, "mmcache")])) for p in PEERS[1:]]]
                for w in WORKLOADS
            ],
        )
    for peer, goal in (("diskcache", 5.0), ("joblib", 50.0)):
        rs = [(r, k) for k in FUNCTIONS if (r := ratio(med[(k, "hit", peer)], med[(k, "hit", "mmcache")]))]
        worst = min(rs) if rs else None
        rep.targets.append(
            Target(
                f"decorator hit vs {LABELS[peer]}",
                "skipped" if worst is None else f"{fmt_ratio(worst[0])} (worst: {worst[1]})",
                f">= {goal:.0f}×",
                None if worst is None else worst[0] >= goal,
            )
        )
    rep.target_section()
    return rep


def time_shape(
    fn: Callable[[int], Any], cfg: Config, base: Path, reasons: dict[str, str], rep: Report
) -> dict[str, dict[str, Timing]]:
    """{workload: {peer: Timing}} for the decorators of ``fn``, peers interleaved."""
    closers: list[Callable[[], None]] = []
    try:
        cases: dict[str, dict[str, Case]] = {}
        for peer in PEERS:
            if peer in reasons:
                continue
            try:
                cases[peer], close = prepare(peer, cfg, base, fn)
                closers.append(close)
            except Unavailable as e:
                reasons[peer] = f"not available: {e}"
            except Exception as e:
                if peer != "mmcache":  # mmcache's decorator is being written now: report, go on
                    raise
                reasons[peer] = f"failed: {type(e).__name__}: {e}"
            if peer in reasons:
                rep.note(f"{LABELS[peer]}: skipped: {reasons[peer]}")
        return {w: measure_all({p: cs[w] for p, cs in cases.items()}, cfg) for w in WORKLOADS}
    finally:
        for close in closers:
            close()
