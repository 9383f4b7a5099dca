"""Processes: aggregate ops/s of 1, 2 and 4 processes on one shared store.

Each store is filled once by the parent and closed; then for every process
count, workers (forked, each opening the store itself) wait at a barrier and
run the 90/10 get/overwrite mix on the pool's keys for a fixed duration. A
worker reports its operations and its own elapsed time; the aggregate is
the sum of ops / elapsed. Stores: mmcache, diskcache, lmdb (Redis is a server
and the dict is not shared, so neither is in this race), and mmcache with
compaction put off (what the writer lock alone allows).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import statistics
import tempfile
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from .harness import Config, fmt_rate, fmt_ratio
from .kv import fill, mix_ops, pool_keys
from .peers import Store, Unavailable, mmcache_size, open_store
from .report import Report, Target
from .values import BYTES_100

STORES = ("mmcache", "diskcache", "lmdb")
# mmcache again with compaction out of the way (a 1 GB floor): what the writer
# lock alone lets processes do, apart from the cost of compacting in Python.
NOCOMPACT = "mmcache, no compaction"
# Not a store: a pure-Python loop in each process. Its speed-up is the most
# any Python workload can get from more processes on this machine (a VM's
# cores may share a physical core or be overcommitted).
CEILING = "python loop"
COUNTS = (1, 2, 4)
CHUNK = 256  # operations between two looks at the clock


def reopen(peer: str, directory: Path, capacity: int) -> Store:
    """The worker's own handle on the parent's store (same parameters)."""
    if peer == NOCOMPACT:
        from mmcache import MmapCache

        directory.mkdir(parents=True, exist_ok=True)
        c = MmapCache(directory / "table", size=mmcache_size(capacity), compact_min_bytes=1 << 30)
        return Store(NOCOMPACT, c.get, c.put, c.delete, c.close, c)
    return open_store(peer, directory, BYTES_100, capacity)


def worker(
    peer: str, directory: str, capacity: int, keys: list[str], duration: float, barrier: Barrier, out: Any
) -> None:
    store = reopen(peer, Path(directory), capacity)
    get, put, v = store.get, store.put, BYTES_100.value
    ops = mix_ops(keys, 4096, seed=os.getpid())
    chunks = [ops[i : i + CHUNK] for i in range(0, len(ops), CHUNK)]
    done = 0
    try:
        barrier.wait(timeout=60)
        t0 = time.perf_counter()
        deadline = t0 + duration
        now = t0
        while now < deadline:
            for k, is_put in chunks[(done // CHUNK) % len(chunks)]:
                if is_put:
                    put(k, v)
                else:
                    get(k)
            done += CHUNK
            now = time.perf_counter()
        out.put((done, now - t0))
    finally:
        store.close()


def spin_worker(duration: float, barrier: Barrier, out: Any) -> None:
    """No store at all: a pure-Python loop, for the machine's own scaling."""
    barrier.wait(timeout=60)
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < duration:
        for _ in range(CHUNK):
            pass
        n += CHUNK
    out.put((n, time.perf_counter() - t0))


def race(peer: str, directory: Path, capacity: int, keys: list[str], n: int, duration: float) -> float:
    """Aggregate ops/s of ``n`` workers."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(n)
    out = ctx.Queue()
    if peer == CEILING:
        procs = [ctx.Process(target=spin_worker, args=(duration, barrier, out)) for _ in range(n)]
    else:
        procs = [
            ctx.Process(target=worker, args=(peer, str(directory), capacity, keys, duration, barrier, out))
            for _ in range(n)
        ]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=duration + 120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError(f"{peer}: a worker failed (exit codes {[p.exitcode for p in procs]})")
    return sum(ops / el for ops, el in results)


def run(cfg: Config) -> Report:
    rep = Report("procs", "Processes: aggregate ops/s on the 90/10 mix", cfg.mode, cfg.command)
    duration = 0.6 if cfg.quick else 1.5
    repeats = 1 if cfg.quick else 5
    base = Path(tempfile.mkdtemp(prefix="mmcache-bench-procs-", dir=cfg.tmp))
    keys = pool_keys(cfg.pool)
    capacity = len(keys)
    rates: dict[tuple[str, int], float | None] = {}
    rep.note(
        f"{len(keys):,} keys of 100 B; each worker runs {duration} s, median of {repeats} race(s) "
        "taken in turn with the other process counts; "
        f"this machine has {mp.cpu_count()} cores, so 4 processes share them"
    )
    try:
        for peer in (CEILING, *STORES, NOCOMPACT):
            d = base / peer.replace(", ", "-").replace(" ", "-")
            try:
                store = None if peer == CEILING else reopen(peer, d, capacity)
            except Unavailable as e:
                rep.note(f"{peer}: skipped: not available: {e}")
                rates.update({(peer, n): None for n in COUNTS})
                continue
            if store is not None:
                try:
                    fill(store, keys, BYTES_100)
                finally:
                    store.close()
            # Repeats go round the process counts (1, 2, 4, 1, 2, 4, ...) rather
            # than one count at a time, so that a slow spell of the machine
            # (they last minutes on shared VMs) falls on every count alike
            # instead of skewing the ratios between them.
            runs: dict[int, list[float]] = {n: [] for n in COUNTS}
            for _ in range(repeats):
                for n in COUNTS:
                    runs[n].append(race(peer, d, capacity, keys, n, duration))
            for n in COUNTS:
                r = statistics.median(runs[n])
                rates[(peer, n)] = r
                rep.rows.append(
                    {"peer": peer, "processes": n, "ops_per_s": r, "duration_s": duration, "repeats": repeats}
                )
                print(f"  {peer:<10} {n} proc: {fmt_rate(r)}", flush=True)
            shutil.rmtree(d, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    _report(rep, rates)
    return rep


def _speedup(rates: dict[tuple[str, int], float | None], peer: str, n: int) -> float | None:
    a, b = rates.get((peer, n)), rates.get((peer, 1))
    return a / b if a and b else None


def _report(rep: Report, rates: dict[tuple[str, int], float | None]) -> None:
    rep.section(
        "Aggregate throughput (ops/s, higher is better)",
        ["store", *[f"{n} proc" for n in COUNTS], "2 proc / 1 proc", "4 proc / 1 proc"],
        [
            [
                p,
                *[fmt_rate(rates.get((p, n))) for n in COUNTS],
                fmt_ratio(_speedup(rates, p, 2)),
                fmt_ratio(_speedup(rates, p, 4)),
            ]
            for p in (*STORES, NOCOMPACT, CEILING)
        ],
    )
    others = [p for p in STORES if p != "mmcache"]

    def faster(p: str, n: int) -> float | None:
        a, b = rates.get(("mmcache", n)), rates.get((p, n))
        return a / b if a and b else None

    rep.section(
        "How many times more ops/s mmcache does (mmcache / peer)",
        ["processes", *others],
        [[str(n), *[fmt_ratio(faster(p, n)) for p in others]] for n in COUNTS],
    )
    s = _speedup(rates, "mmcache", 2)
    rep.targets.append(
        Target(
            "mmcache 2 processes / 1 process",
            "skipped" if s is None else fmt_ratio(s),
            ">= 1.7×",
            None if s is None else s >= 1.7,
        )
    )
    c = _speedup(rates, CEILING, 2)
    rep.targets.append(
        Target(
            "machine ceiling: a pure-Python loop, 2 processes / 1 (for information)",
            "skipped" if c is None else fmt_ratio(c),
            "–",
            None,
        )
    )
    f = faster("diskcache", 2)
    rep.targets.append(
        Target(
            "mmcache vs diskcache, 2 processes",
            "skipped" if f is None else fmt_ratio(f),
            ">= 5×",
            None if f is None else f >= 5,
        )
    )
    rep.target_section()
