"""Hit rate of mmcache's sampled LRU against exact LRU on a Zipf trace.

Replays one key trace (Zipf-distributed ranks, fixed seed) through
``MmapCache(max_entries=C, eviction=...)`` and through ``cachetools.LRUCache``
of the same entry count: on a miss the key is put, as a read-through cache
does. Prints each policy's hit rate and its distance from exact LRU in
percentage points; with ``--chart`` draws the rolling hit rate over the trace.

    python -m benchmarks.hit_rate [--requests N] [--keys K] [--capacity C] [--alpha A] [--chart]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def zipf_trace(n_requests: int, n_keys: int, alpha: float, seed: int = 1) -> list[int]:
    """Ranks 0..n_keys-1 drawn with P(r) proportional to 1 / (r+1)**alpha, then
    mapped through a fixed shuffle so popularity is not correlated with the key."""
    rnd = random.Random(seed)
    weights = [1.0 / (r + 1) ** alpha for r in range(n_keys)]
    ranks = rnd.choices(range(n_keys), weights=weights, k=n_requests)
    perm = list(range(n_keys))
    rnd.shuffle(perm)
    return [perm[r] for r in ranks]


def replay_exact_lru(trace: list[int], capacity: int) -> list[bool]:
    from cachetools import LRUCache

    c: LRUCache[int, bytes] = LRUCache(maxsize=capacity)
    hits = []
    for k in trace:
        hit = c.get(k) is not None
        if not hit:
            c[k] = b"v"
        hits.append(hit)
    return hits


def replay_mmcache(trace: list[int], capacity: int, policy: str, samples: int | None = None) -> list[bool]:
    from mmcache import MmapCache
    from mmcache._core import evict as _evict

    old = _evict.SAMPLES
    if samples is not None:
        _evict.SAMPLES = samples
    try:
        with tempfile.TemporaryDirectory() as d:
            size = int(capacity / 0.75) * 2 + 2
            with MmapCache(os.path.join(d, "t"), size=size, max_entries=capacity, eviction=policy) as c:  # type: ignore[arg-type]
                hits = []
                for k in trace:
                    key = str(k)
                    hit = c.get(key) is not None
                    if not hit:
                        c.put(key, b"v")
                    hits.append(hit)
                return hits
    finally:
        _evict.SAMPLES = old


def rolling(hits: list[bool], window: int) -> list[float]:
    out, acc = [], 0
    for i, h in enumerate(hits):
        acc += h
        if i >= window:
            acc -= hits[i - window]
        if i >= window - 1 and (i + 1) % (window // 10 or 1) == 0:
            out.append(acc / window)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300_000)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--capacity", type=int, default=5_000)
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--chart", action="store_true")
    a = ap.parse_args(argv)
    trace = zipf_trace(a.requests, a.keys, a.alpha)
    t0 = time.perf_counter()
    runs = {"exact LRU (cachetools)": replay_exact_lru(trace, a.capacity)}
    runs["mmcache lru (sampled)"] = replay_mmcache(trace, a.capacity, "lru")
    runs["mmcache fifo"] = replay_mmcache(trace, a.capacity, "fifo")
    elapsed = time.perf_counter() - t0
    exact = sum(runs["exact LRU (cachetools)"]) / len(trace)
    print(f"Zipf trace: {a.requests} requests over {a.keys} keys, alpha={a.alpha}, capacity={a.capacity}")
    print(f"{'policy':28s} {'hit rate':>9s} {'vs exact LRU':>13s}")
    result = {"requests": a.requests, "keys": a.keys, "alpha": a.alpha, "capacity": a.capacity, "rates": {}}
    for name, hits in runs.items():
        rate = sum(hits) / len(hits)
        result["rates"][name] = rate
        print(f"{name:28s} {rate:9.2%} {100 * (rate - exact):+12.2f}pp")
    gap = abs(result["rates"]["mmcache lru (sampled)"] - exact) * 100
    print(f"sampled LRU is {gap:.2f} percentage points from exact LRU (target: within 3); {elapsed:.1f}s")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hit_rate.json").write_text(json.dumps(result, indent=2) + "\n")
    if a.chart:
        chart(runs, a, RESULTS / "hit_rate.png")
    return 0 if gap <= 3 else 1


def chart(runs: dict[str, list[bool]], a: argparse.Namespace, out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("chart skipped: matplotlib is not installed (pip install matplotlib)")
        return
    window = max(a.requests // 50, 100)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for name, hits in runs.items():
        r = rolling(hits, window)
        xs = [window + i * (window // 10 or 1) for i in range(len(r))]
        ax.plot(xs, [100 * v for v in r], label=f"{name}: {100 * sum(hits) / len(hits):.1f}%")
    ax.set_xlabel("request")
    ax.set_ylabel(f"hit rate, % (rolling window of {window})")
    ax.set_title(f"Hit rate over a Zipf trace (alpha={a.alpha}, {a.keys} keys, capacity {a.capacity})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    print(f"chart: {out}")


if __name__ == "__main__":
    sys.exit(main())
