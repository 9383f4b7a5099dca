"""Key/value workloads: mmcache against dict, lmdb, diskcache and Redis.

For each value shape and each workload every peer gets a fresh store in its
own directory, filled with the same shuffled pool of keys, so no workload
inherits another's tombstones or dead bytes; the peers' batches are then
timed interleaved (``harness.measure_all``):

- ``get hit``: keys of the pool, round-robin in shuffled order;
- ``get miss``: keys never stored;
- ``put new``: keys never stored before (the store grows);
- ``put overwrite``: keys of the pool, same value;
- ``delete``: keys put just before the batch (untimed) and removed in it;
- ``mix 90/10``: 90 % get hits, 10 % overwrites, in a fixed random order.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .harness import Case, Config, Run, Timing, cycle, fmt_ns, fmt_ratio, measure_all, ratio, timing_fields
from .peers import PEERS, Store, Unavailable, open_store
from .report import Report, Target
from .values import VALUES, ValueKind

WORKLOADS = ("get hit", "get miss", "put new", "put overwrite", "delete", "mix 90/10")
GROWING = ("put new", "delete")


def pool_keys(n: int, seed: int = 1) -> list[str]:
    keys = [f"key:{i:08d}" for i in range(n)]
    random.Random(seed).shuffle(keys)
    return keys


def mix_ops(keys: list[str], n: int, put_share: float = 0.1, seed: int = 2) -> list[tuple[str, bool]]:
    """``n`` (key, is_put) pairs over ``keys``: ``put_share`` overwrites, the rest gets."""
    rng = random.Random(seed)
    return [(rng.choice(keys), rng.random() < put_share) for _ in range(n)]


def loop_get(get: Callable[[str], Any]) -> Run:
    def run(keys: list[str]) -> None:
        for k in keys:
            get(k)

    return run


def loop_put(put: Callable[[str, Any], object], value: Any) -> Run:
    def run(keys: list[str]) -> None:
        for k in keys:
            put(k, value)

    return run


def loop_delete(delete: Callable[[str], object]) -> Run:
    def run(keys: list[str]) -> None:
        for k in keys:
            delete(k)

    return run


def loop_mix(get: Callable[[str], Any], put: Callable[[str, Any], object], value: Any) -> Run:
    def run(ops: list[tuple[str, bool]]) -> None:
        for k, is_put in ops:
            if is_put:
                put(k, value)
            else:
                get(k)

    return run


class Batches:
    """Inputs for one workload's batches; a counter keeps new keys unique."""

    def __init__(self, store: Store, workload: str, kind: ValueKind, keys: list[str]) -> None:
        self.store, self.workload, self.kind, self.keys = store, workload, kind, keys
        self.calls = 0
        self.mix = mix_ops(keys, 4096)

    def __call__(self, n: int) -> list[Any]:
        b, self.calls = self.calls, self.calls + 1
        w = self.workload
        if w in ("get hit", "put overwrite"):
            return cycle(self.keys, n, b * 7919)
        if w == "get miss":
            return [f"miss:{b}:{i}" for i in range(n)]
        if w == "put new":
            return [f"new:{b}:{i}" for i in range(n)]
        if w == "delete":
            keys = [f"del:{b}:{i}" for i in range(n)]
            put, v = self.store.put, self.kind.value
            for k in keys:
                put(k, v)
            return keys
        return cycle(self.mix, n, b * 7919)


def get_set_cases(
    get: Callable[[str], Any], put: Callable[[str, Any], object], value: Any, keys: list[str], write_cap: int
) -> dict[str, Case]:
    """{workload: Case} for a filled cache-like object: get hit (random keys of
    ``keys``), get miss (keys never stored) and set (overwrites)."""
    calls = [0]

    def batch_of(source: str) -> Callable[[int], list[str]]:
        def make(n: int) -> list[str]:
            calls[0] += 1
            if source == "miss":
                return [f"miss:{calls[0]}:{i}" for i in range(n)]
            return cycle(keys, n, random.Random(calls[0]).randrange(len(keys)))

        return make

    return {
        "get hit": Case(loop_get(get), batch_of("hit")),
        "get miss": Case(loop_get(get), batch_of("miss")),
        "set": Case(loop_put(put, value), batch_of("hit"), write_cap),
    }


def runner(store: Store, workload: str, value: Any) -> Run:
    if workload in ("get hit", "get miss"):
        return loop_get(store.get)
    if workload in ("put new", "put overwrite"):
        return loop_put(store.put, value)
    if workload == "delete":
        return loop_delete(store.delete)
    return loop_mix(store.get, store.put, value)


def sizes(cfg: Config, kind: ValueKind) -> tuple[int, int]:
    """(pool keys, largest write batch) for this value shape, bounded in bytes."""
    budget = (16 if cfg.quick else 32) << 20
    pool = max(256, min(cfg.pool, budget // kind.stored_bytes))
    # Writes are never faster than ~2 µs in a file-backed store: a cap near one
    # batch's worth keeps growing stores (and mmcache's preallocated index) small.
    write_cap = max(200, min(20_000, budget // kind.stored_bytes, int(cfg.batch_ms * 1e6 / 2_000)))
    return pool, write_cap


def fill(store: Store, keys: list[str], kind: ValueKind) -> None:
    """Put the pool, then check that a hit hits and a miss misses."""
    put, v = store.put, kind.value
    for k in keys:
        put(k, v)
    if store.get(keys[0]) != v or store.get("miss:never") is not None:
        raise RuntimeError(f"{store.name}: round trip check failed; refusing to time it")


def time_workload(
    peers: Sequence[str], workload: str, kind: ValueKind, cfg: Config, base: Path
) -> dict[str, Timing | str]:
    """Give each peer a fresh, filled store and time ``workload`` on all of them,
    batches interleaved; a peer that cannot run maps to the reason."""
    pool, write_cap = sizes(cfg, kind)
    keys = pool_keys(pool)
    grows = workload in GROWING
    capacity = pool + ((cfg.repeats + 2) * write_cap + 64 if grows else 0)
    out: dict[str, Timing | str] = {}
    cases: dict[str, Case] = {}
    opened: list[tuple[Store, Path]] = []
    try:
        for peer in peers:
            d = Path(tempfile.mkdtemp(prefix=f"{peer}-", dir=base))
            try:
                store = open_store(peer, d, kind, capacity)
            except Unavailable as e:
                out[peer] = str(e)
                shutil.rmtree(d, ignore_errors=True)
                continue
            opened.append((store, d))
            fill(store, keys, kind)
            cap = write_cap if grows or workload == "put overwrite" else None
            cases[peer] = Case(runner(store, workload, kind.value), Batches(store, workload, kind, keys), cap)
        out.update(measure_all(cases, cfg))
    finally:
        for store, d in opened:
            store.close()
            shutil.rmtree(d, ignore_errors=True)
    return out


def run(cfg: Config) -> Report:
    rep = Report("kv", "Key/value operations: mmcache vs dict, lmdb, diskcache, Redis", cfg.mode, cfg.command)
    base = Path(tempfile.mkdtemp(prefix="mmcache-bench-kv-", dir=cfg.tmp))
    skipped: dict[str, str] = {}
    med: dict[tuple[str, str, str], float | None] = {}
    try:
        for kind in VALUES:
            for workload in WORKLOADS:
                res = time_workload([p for p in PEERS if p not in skipped], workload, kind, cfg, base)
                for peer in PEERS:
                    r = res.get(peer)
                    if isinstance(r, str):
                        skipped[peer] = r
                        rep.note(f"{peer}: skipped: not available: {r}")
                    t = r if isinstance(r, Timing) else None
                    med[(kind.name, workload, peer)] = t.median_ns if t else None
                    rep.rows.append(_row(kind, workload, peer, t, skipped.get(peer)))
                print(
                    f"  {kind.name:>6} {workload:<14} "
                    + "  ".join(f"{p}={fmt_ns(med[(kind.name, workload, p)])}" for p in PEERS),
                    flush=True,
                )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    for kind in VALUES:
        rep.section(
            f"Median latency per operation, {kind.name} values",
            ["workload", *PEERS],
            [[w, *[fmt_ns(med[(kind.name, w, p)]) for p in PEERS]] for w in WORKLOADS],
        )
        others = [p for p in PEERS if p != "mmcache"]
        rep.section(
            f"How many times faster mmcache is (peer / mmcache), {kind.name} values",
            ["workload", *others],
            [
                [
                    w,
                    *[
                        fmt_ratio(ratio(med[(kind.name, w, p)], med[(kind.name, w, "mmcache")]))
                        for p in others
                    ],
                ]
                for w in WORKLOADS
            ],
        )
    rep.targets += targets(med)
    rep.target_section()
    return rep


def _row(kind: ValueKind, workload: str, peer: str, t: Timing | None, skip: str | None) -> dict[str, Any]:
    return {"value": kind.name, "workload": workload, "peer": peer} | timing_fields(t, skip)


def worst(
    med: dict[tuple[str, str, str], float | None], workload: str, peer: str
) -> tuple[float, str] | None:
    """The smallest peer / mmcache ratio over the value shapes, and its shape."""
    rs = [
        (r, k.name)
        for k in VALUES
        if (r := ratio(med[(k.name, workload, peer)], med[(k.name, workload, "mmcache")])) is not None
    ]
    return min(rs) if rs else None


def target(name: str, w: tuple[float, str] | None, goal: float, goal_text: str) -> Target:
    if w is None:
        return Target(name, "skipped", goal_text, None)
    return Target(name, f"{fmt_ratio(w[0])} (worst: {w[1]})", goal_text, w[0] >= goal)


def targets(med: dict[tuple[str, str, str], float | None]) -> list[Target]:
    return [
        target("get hit vs diskcache.Cache.get", worst(med, "get hit", "diskcache"), 6, ">= 6×"),
        target(
            "get hit vs lmdb (txn + get + decode)",
            worst(med, "get hit", "lmdb"),
            1 / 1.5,
            ">= 0.67× (within 1.5×); stretch > 1×",
        ),
        target("put new vs diskcache.Cache.set", worst(med, "put new", "diskcache"), 10, ">= 10×"),
        target(
            "put overwrite vs diskcache.Cache.set", worst(med, "put overwrite", "diskcache"), 10, ">= 10×"
        ),
    ]
