"""Timing harness: batches of one operation, median ns/op over repeats.

A *case* is a pair of callables: ``make_batch(n)`` builds the inputs of one
batch of ``n`` operations (untimed: it may also prepare the store, e.g. put
the keys a delete batch will remove) and ``run(batch)`` performs them in a
plain ``for`` loop. The loop's own cost (a few tens of ns) is included for
every peer alike; it is visible as the ``dict`` floor.

The batch size is calibrated so that one batch takes about
``Config.batch_ms``; then one warm-up batch runs untimed and
``Config.repeats`` batches are timed with ``time.perf_counter_ns`` and the
garbage collector disabled. We report the median (and min / max) of the
per-batch ns/op. ``measure_all`` times the peers of one workload together,
one batch of each per repeat, so that load from elsewhere hits all alike.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Batch = Sized
MakeBatch = Callable[[int], Batch]
Run = Callable[[Any], object]


@dataclass(frozen=True)
class Config:
    """How hard to measure: ``quick`` (< 1 min in all) or full (< 10 min)."""

    quick: bool
    repeats: int
    batch_ms: float
    max_batch: int
    pool: int
    tmp: Path
    chart: bool = False
    command: str = ""

    @classmethod
    def make(cls, quick: bool, tmp: Path | None = None, chart: bool = False, command: str = "") -> Config:
        base = tmp if tmp is not None else Path(tempfile.gettempdir())
        if quick:
            return cls(True, 5, 5.0, 20_000, 500, base, chart, command)
        return cls(False, 9, 25.0, 100_000, 10_000, base, chart, command)

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "full"


@dataclass(frozen=True)
class Timing:
    """Per-op nanoseconds of one case: median over ``repeats`` batches of ``batch`` ops."""

    median_ns: float
    min_ns: float
    max_ns: float
    batch: int
    repeats: int
    samples: list[float] = field(default_factory=list)


def _timed(run: Run, batch: Batch) -> int:
    """Nanoseconds for one batch, with the collector off."""
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        run(batch)
        t1 = time.perf_counter_ns()
    finally:
        gc.enable()
    return t1 - t0


@dataclass
class Case:
    """One thing to time: ``run(make_batch(n))`` performs ``n`` operations."""

    run: Run
    make_batch: MakeBatch
    max_n: int | None = None
    min_n: int = 16


def _batch_size(case: Case, cfg: Config) -> int:
    cap = min(cfg.max_batch, case.max_n) if case.max_n is not None else cfg.max_batch
    probe_n = max(1, min(64, cap))
    per_op = _timed(case.run, case.make_batch(probe_n)) / probe_n
    n = int(cfg.batch_ms * 1e6 / max(per_op, 1.0))
    return max(min(case.min_n, cap), min(n, cap))


def measure_all(cases: dict[str, Case], cfg: Config) -> dict[str, Timing]:
    """Time several cases with their batches interleaved.

    Each case is calibrated and warmed up; then every repeat times one batch
    of each case, in an order rotated from repeat to repeat, so that a burst
    of load from elsewhere on the machine falls on all peers alike and the
    ratios stay meaningful on a noisy host.
    """
    sizes = {name: _batch_size(c, cfg) for name, c in cases.items()}
    for name, c in cases.items():
        c.run(c.make_batch(sizes[name]))  # warm-up, untimed
    gc.collect()
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(cfg.repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            c, n = cases[name], sizes[name]
            batch = c.make_batch(n)
            samples[name].append(_timed(c.run, batch) / n)
    return {
        name: Timing(statistics.median(xs), min(xs), max(xs), sizes[name], cfg.repeats, xs)
        for name, xs in samples.items()
    }


def measure(
    run: Run, make_batch: MakeBatch, cfg: Config, *, max_n: int | None = None, min_n: int = 16
) -> Timing:
    """Calibrate, warm up, then time ``cfg.repeats`` batches of one case."""
    return measure_all({"case": Case(run, make_batch, max_n, min_n)}, cfg)["case"]


def timing_fields(t: Timing | None, skipped: str | None = None) -> dict[str, Any]:
    """A result row's numbers: the timing's, or why there is none."""
    if t is None:
        return {"median_ns": None, "skipped": skipped or "not available"}
    return {
        "median_ns": t.median_ns,
        "min_ns": t.min_ns,
        "max_ns": t.max_ns,
        "batch": t.batch,
        "repeats": t.repeats,
    }


def cycle(items: Sequence[Any], n: int, start: int = 0) -> list[Any]:
    """``n`` items taken round-robin from ``items`` beginning at ``start``."""
    m = len(items)
    if m == 0:
        raise ValueError("cycle() needs at least one item")
    reps = (start % m + n) // m + 1
    return (list(items) * reps)[start % m : start % m + n]


# ------------------------------------------------------------------ formatting
def fmt_ns(ns: float | None) -> str:
    """A latency in the unit that keeps three significant digits."""
    if ns is None:
        return "skipped"
    if ns < 1_000:
        return f"{ns:.0f} ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.3g} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.3g} ms"
    return f"{ns / 1e9:.3g} s"


def fmt_ratio(r: float | None) -> str:
    """``peer / mmcache``: above 1 means mmcache is that many times faster."""
    if r is None:
        return "–"
    return f"{r:.1f}×" if r >= 1 else f"{r:.2f}×"


def fmt_rate(ops: float | None) -> str:
    if ops is None:
        return "skipped"
    if ops >= 1e6:
        return f"{ops / 1e6:.2f} M/s"
    if ops >= 1e3:
        return f"{ops / 1e3:.1f} k/s"
    return f"{ops:.0f} /s"


def ratio(peer: float | None, mine: float | None) -> float | None:
    """How many times slower ``peer`` is than mmcache (both in ns/op)."""
    if peer is None or mine is None or mine <= 0:
        return None
    return peer / mine


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A pipe table with padded columns: readable in a terminal and as markdown."""
    cols = [list(header), *[list(r) for r in rows]]
    widths = [max(len(str(row[i])) for row in cols) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *[line(r) for r in rows]])
