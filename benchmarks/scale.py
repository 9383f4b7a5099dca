"""Scale: mmcache latency against the number of entries, and listing cost.

- Latency: tables of ``2 n`` slots (the sizing rule: about half full) hold
  ``n`` entries of 100 bytes, for n = 1e3, 1e5, 1e6 (and 1e7 in full mode).
  Get hit, get miss and put overwrite on uniformly random keys should cost
  the same at every n (O(1)); what grows is only the memory the random
  probes touch (CPU caches, TLB). "get hit (first read)" goes through a
  ``memo=False`` handle: the probe and record check every first read of a
  key in a process pays; the default handle also has the per-process memo,
  which answers repeat reads of up to 32,768 keys per table much faster
  (so at 1e3 entries nearly every hit is a memo hit, at 1e6 nearly none),
  timed in its steady state (after ``STEADY_READS`` random reads).
  The same random hits on py-lmdb and on a plain dict, at the same counts
  and in the same run, show what the memory hierarchy alone does to a
  lookup as the data outgrows the CPU caches.
- Listing: one table of ``LIST_SIZE`` slots filled step by step; at each
  step ``list_items()`` is timed. It walks the roster, so its time follows
  the occupied count, not the table size: compare with the same count in a
  table just twice as big ("tight").
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from .harness import Config, Timing, fmt_ns, fmt_ratio, measure
from .kv import loop_get, loop_put
from .peers import Unavailable, open_store
from .report import Report, Target
from .values import BYTES_100

LIST_SIZE = 2_000_000
PEERS = ("lmdb", "dict")  # timed at every latency count up to PEER_MAX
PEER_MAX = 1_000_000
STEADY_READS = 1 << 17  # random reads before the default handle's hits are timed
SLOT_BYTES = 96
RECORD_BYTES = 160  # 32-byte record header + key + 100-byte value, rounded up


def latency_sizes(cfg: Config) -> list[int]:
    return [1_000, 100_000, 1_000_000] + ([] if cfg.quick else [10_000_000])


def list_counts(cfg: Config) -> list[int]:
    return [100, 1_000, 10_000, 100_000] + ([] if cfg.quick else [1_000_000])


def key(i: int) -> str:
    return f"k{i}"


def fill(c: Any, start: int, stop: int) -> None:
    """Put keys ``start .. stop-1``, a few thousand per writer-lock hold."""
    v = BYTES_100.value
    put = c.put
    for lo in range(start, stop, 4096):
        with c.transaction():
            for i in range(lo, min(stop, lo + 4096)):
                put(key(i), v)


def needed_bytes(n: int, size: int) -> int:
    return size * SLOT_BYTES + n * RECORD_BYTES


def room_for(directory: Path, n: int, size: int) -> bool:
    """True if the disk holding ``directory`` has twice what the table needs."""
    return shutil.disk_usage(directory).free > 2 * needed_bytes(n, size)


def time_list_items(c: Any, budget_s: float = 2.0, repeats: int = 3) -> float:
    """Median ns of one ``list_items()`` call (fewer repeats when a call is slow)."""
    samples: list[float] = []
    start = time.monotonic()
    while len(samples) < repeats and (not samples or time.monotonic() - start < budget_s):
        gc.disable()
        try:
            t0 = time.perf_counter_ns()
            c.list_items()
            samples.append(time.perf_counter_ns() - t0)
        finally:
            gc.enable()
    return statistics.median(samples)


def time_latency(c: Any, n: int, cfg: Config) -> dict[str, Timing]:
    rng = random.Random(n)
    v = BYTES_100.value
    c.put(key(0), v)
    assert c.get(key(n - 1)) == v and c.get("miss:0") is None

    def hits(m: int) -> list[str]:
        return [key(rng.randrange(n)) for _ in range(m)]

    def misses(m: int) -> list[str]:
        return [f"miss:{rng.randrange(1 << 40)}" for _ in range(m)]

    from mmcache import MmapCache

    with MmapCache.open(c.path, memo=False) as lean:
        first = measure(loop_get(lean.get), hits, cfg)
    # Steady state first: with more keys than the memo holds (32,768), it
    # fills, is dropped and pauses within 4 x its size of random reads; a
    # timed batch is far shorter, so without this it would time the filling.
    loop_get(c.get)(hits(STEADY_READS))
    return {
        "get hit": measure(loop_get(c.get), hits, cfg),
        "get hit (first read)": first,
        "get miss": measure(loop_get(c.get), misses, cfg),
        "put overwrite": measure(loop_put(c.put, v), hits, cfg, max_n=20_000),
    }


def time_peer_hits(peer: str, n: int, cfg: Config, directory: Path) -> Timing | None:
    """Random get hits on ``peer`` holding ``n`` entries (None: not installed)."""
    try:
        store = open_store(peer, directory, BYTES_100, n)
    except Unavailable:
        return None
    try:
        store.put_many((key(i), BYTES_100.value) for i in range(n))
        rng = random.Random(n)
        assert store.get(key(n - 1)) == BYTES_100.value
        return measure(loop_get(store.get), lambda m: [key(rng.randrange(n)) for _ in range(m)], cfg)
    finally:
        store.close()


def run(cfg: Config) -> Report:
    from mmcache import MmapCache

    rep = Report("scale", "mmcache latency vs entries; list_items vs occupied count", cfg.mode, cfg.command)
    base = Path(tempfile.mkdtemp(prefix="mmcache-bench-scale-", dir=cfg.tmp))
    lat: dict[int, dict[str, Timing]] = {}
    tight: dict[int, float] = {}
    fixed: dict[int, float] = {}
    peer_lat: dict[str, dict[int, Timing]] = {}
    try:
        # Tight tables for the small counts: list_items there, latencies at 1e3 / 1e5.
        for n in list_counts(cfg):
            if n >= LIST_SIZE // 2:
                continue
            size = max(256, 2 * n)
            d = Path(tempfile.mkdtemp(dir=base))
            with MmapCache(d / "t", size=size) as c:
                fill(c, 0, n)
                tight[n] = time_list_items(c)
                if n in latency_sizes(cfg):
                    lat[n] = time_latency(c, n, cfg)
                    _progress(n, size, lat[n])
            shutil.rmtree(d, ignore_errors=True)
        # The fixed large table: list_items at every count, latencies at 1e6.
        d = Path(tempfile.mkdtemp(dir=base))
        with MmapCache(d / "t", size=LIST_SIZE) as c:
            done = 0
            for n in sorted(set(list_counts(cfg)) | {LIST_SIZE // 2}):
                fill(c, done, n)
                done = n
                if n in list_counts(cfg):
                    fixed[n] = time_list_items(c)
            lat[LIST_SIZE // 2] = time_latency(c, LIST_SIZE // 2, cfg)
            _progress(LIST_SIZE // 2, LIST_SIZE, lat[LIST_SIZE // 2])
        shutil.rmtree(d, ignore_errors=True)
        for n in latency_sizes(cfg):
            if n in lat:
                continue
            size = 2 * n
            d = Path(tempfile.mkdtemp(dir=base))
            if not room_for(d, n, size):
                rep.note(
                    f"{n:.0e} entries skipped: the disk has less than twice the "
                    f"{needed_bytes(n, size) / 1e9:.1f} GB the table needs"
                )
                continue
            t0 = time.monotonic()
            with MmapCache(d / "t", size=size) as c:
                fill(c, 0, n)
                rep.note(
                    f"{n:.0e} entries: filled in {time.monotonic() - t0:.0f} s "
                    f"({os.path.getsize(d / 't') / 1e9:.2f} GB index)"
                )
                lat[n] = time_latency(c, n, cfg)
                _progress(n, size, lat[n])
            shutil.rmtree(d, ignore_errors=True)
        for n in latency_sizes(cfg):
            if n > PEER_MAX or n not in lat:
                continue
            for peer in PEERS:
                d = Path(tempfile.mkdtemp(dir=base))
                t = time_peer_hits(peer, n, cfg, d)
                shutil.rmtree(d, ignore_errors=True)
                if t is None:
                    rep.note(f"{peer} skipped: not installed")
                else:
                    peer_lat.setdefault(peer, {})[n] = t
                    print(f"  {n:>10,} entries, {peer}: get hit={fmt_ns(t.median_ns)}", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    _report(rep, cfg, lat, tight, fixed)
    _report_peers(rep, lat, peer_lat)
    rep.target_section()
    return rep


def _progress(n: int, size: int, t: dict[str, Timing]) -> None:
    print(
        f"  {n:>10,} entries / {size:,} slots: "
        + "  ".join(f"{w}={fmt_ns(x.median_ns)}" for w, x in t.items()),
        flush=True,
    )


def _report(
    rep: Report,
    cfg: Config,
    lat: dict[int, dict[str, Timing]],
    tight: dict[int, float],
    fixed: dict[int, float],
) -> None:
    ops = ("get hit", "get hit (first read)", "get miss", "put overwrite")
    ns = sorted(lat)
    for n in ns:
        for w in ops:
            t = lat[n][w]
            rep.rows.append(
                {
                    "kind": "latency",
                    "entries": n,
                    "slots": 2 * n if n != LIST_SIZE // 2 else LIST_SIZE,
                    "workload": w,
                    "median_ns": t.median_ns,
                    "min_ns": t.min_ns,
                    "max_ns": t.max_ns,
                    "batch": t.batch,
                    "repeats": t.repeats,
                }
            )
    for n, v in fixed.items():
        rep.rows.append({"kind": "list_items", "entries": n, "slots": LIST_SIZE, "median_ns": v})
    for n, v in tight.items():
        rep.rows.append({"kind": "list_items_tight", "entries": n, "slots": max(256, 2 * n), "median_ns": v})
    first = ns[0] if ns else None
    rep.section(
        "mmcache latency against entries (100 B values, random keys, tables half full)",
        ["entries", *ops, "get hit / at 1e3", "first read / at 1e3"],
        [
            [
                f"{n:,}",
                *[fmt_ns(lat[n][w].median_ns) for w in ops],
                *[
                    fmt_ratio(lat[n][w].median_ns / lat[first][w].median_ns) if first else "–"
                    for w in ("get hit", "get hit (first read)")
                ],
            ]
            for n in ns
        ],
    )
    rep.section(
        f"list_items() against occupied entries, in a {LIST_SIZE:,}-slot table and in a tight one",
        ["occupied", f"time ({LIST_SIZE:,} slots)", "per entry", "time (tight table)", "per entry "],
        [
            [
                f"{n:,}",
                fmt_ns(fixed[n]),
                fmt_ns(fixed[n] / n),
                fmt_ns(tight.get(n)),
                fmt_ns(tight[n] / n) if n in tight else "–",
            ]
            for n in sorted(fixed)
        ],
    )
    if 1_000 in lat and 1_000_000 in lat:
        r = lat[1_000_000]["get hit"].median_ns / lat[1_000]["get hit"].median_ns
        rep.targets.append(Target("get hit latency at 1e6 / at 1e3", f"{r:.2f}×", "<= 1.5×", r <= 1.5))
        r = lat[1_000_000]["get hit (first read)"].median_ns / lat[1_000]["get hit (first read)"].median_ns
        rep.targets.append(
            Target("first-read get hit (memo=False) at 1e6 / at 1e3", f"{r:.2f}×", "<= 1.5×", r <= 1.5)
        )
    if 10_000_000 in lat and 1_000 in lat:
        r = lat[10_000_000]["get hit"].median_ns / lat[1_000]["get hit"].median_ns
        rep.targets.append(
            Target("get hit latency at 1e7 / at 1e3 (for information)", f"{r:.2f}×", "–", None)
        )


def _report_peers(
    rep: Report, lat: dict[int, dict[str, Timing]], peer_lat: dict[str, dict[int, Timing]]
) -> None:
    """mmcache's get hit against lmdb's and dict's at the same counts."""
    ns = [n for n in sorted(lat) if all(n in t for t in peer_lat.values()) and n <= PEER_MAX]
    if not peer_lat or not ns:
        return
    cols = {"mmcache": {n: lat[n]["get hit"] for n in ns}}
    cols["mmcache (first read)"] = {n: lat[n]["get hit (first read)"] for n in ns}
    cols.update(peer_lat)
    for peer, ts in peer_lat.items():
        for n, t in ts.items():
            row = {"kind": "peer_latency", "peer": peer, "entries": n, "workload": "get hit"}
            rep.rows.append(row | {"median_ns": t.median_ns, "min_ns": t.min_ns, "max_ns": t.max_ns})
    base = ns[0]
    rep.section(
        "get hit against entries, with py-lmdb and a dict in the same run (random keys, 100 B values)",
        ["entries", *cols, *(f"{c} / at {base:.0e}" for c in cols)],
        [
            [f"{n:,}", *(fmt_ns(c[n].median_ns) for c in cols.values())]
            + [fmt_ratio(c[n].median_ns / c[base].median_ns) for c in cols.values()]
            for n in ns
        ],
    )
    if base == 1_000 and 1_000_000 in ns:
        for peer, ts in peer_lat.items():
            r = ts[1_000_000].median_ns / ts[1_000].median_ns
            what = f"{peer} get hit at 1e6 / at 1e3 (same run, for comparison)"
            rep.targets.append(Target(what, f"{r:.2f}×", "–", None))
