"""A table's statistics as metrics (Prometheus text).

``MmapCache.get_stats()`` already sums the hit/miss/set/... counters of
every process (each flushes its own stripe), so one reader anywhere on the
host reports the whole table. This module names those numbers once, for
``mmcache stats --format prometheus`` and for the ready collector in
``mmcache.contrib.prometheus``; it imports nothing of prometheus_client (the
text format is written here, to its spec: ``# HELP``, ``# TYPE``, samples
with escaped label values).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

PREFIX = "mmcache_"

# get_stats() key -> (metric name without the prefix, help). Counters grow for
# the table's life (summed over processes); a rebuild keeps them.
COUNTERS: dict[str, tuple[str, str]] = {
    "hits": ("hits_total", "Lookups that found a live entry."),
    "misses": ("misses_total", "Lookups that found no live entry."),
    "sets": ("sets_total", "Entries stored."),
    "deletes": ("deletes_total", "Entries deleted."),
    "evictions": ("evictions_total", "Entries evicted to make room."),
    "expirations": ("expirations_total", "Expired entries removed."),
    "rebuilds": ("rebuilds_total", "Rebuilds (growth, compaction, clear)."),
}
GAUGES: dict[str, tuple[str, str]] = {
    "occupied_count": ("entries", "Live entries."),
    "capacity": ("capacity_entries", "Entries the table holds before it grows or evicts."),
    "deleted_count": ("tombstones", "Deleted slots not yet reclaimed."),
    "size": ("slots", "Slots in the index."),
    "heap_live_bytes": ("heap_live_bytes", "Heap bytes held by live entries."),
    "heap_dead_bytes": ("heap_dead_bytes", "Heap bytes of dead records, reclaimed by compaction."),
    "heap_segments": ("heap_segments", "Heap segment files."),
    "disk_bytes": ("disk_bytes", "Bytes of the table's files on disk."),
    "generation": ("generation", "Rebuild generation of the files."),
    "fill": ("fill_ratio", "Live entries / capacity (given by the CLI)."),
}

Kind = Literal["counter", "gauge"]


def samples(stats: Mapping[str, Any]) -> list[tuple[str, Kind, str, float]]:
    """``(name, kind, help, value)`` for every metric ``stats`` holds (names
    without the prefix; counters without the ``_total`` suffix, as
    prometheus_client's metric families want them)."""
    out: list[tuple[str, Kind, str, float]] = []
    for key, (name, text) in COUNTERS.items():
        if isinstance(stats.get(key), int | float):
            out.append((name.removesuffix("_total"), "counter", text, float(stats[key])))
    for key, (name, text) in GAUGES.items():
        if isinstance(stats.get(key), int | float):
            out.append((name, "gauge", text, float(stats[key])))
    return out


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return str(int(v)) if v.is_integer() and abs(v) < 2**53 else repr(v)


def prometheus_text(tables: Iterable[Mapping[str, Any]]) -> str:
    """The Prometheus text exposition of one or more tables' stats, each
    sample labelled ``table="<path>"``."""
    families: dict[str, tuple[Kind, str, list[str]]] = {}
    for st in tables:
        label = _label(str(st.get("path", "")))
        for name, kind, text, value in samples(st):
            # counters are named with their _total suffix throughout, as
            # prometheus_client's own text output (format 0.0.4) does
            full = PREFIX + name + ("_total" if kind == "counter" else "")
            rows = families.setdefault(full, (kind, text, []))[2]
            rows.append(f'{full}{{table="{label}"}} {_number(value)}')
    lines: list[str] = []
    for full, (kind, text, rows) in families.items():
        lines += [f"# HELP {full} {text}", f"# TYPE {full} {kind}", *rows]
    return "\n".join(lines) + "\n" if lines else ""


__all__ = ["COUNTERS", "GAUGES", "PREFIX", "prometheus_text", "samples"]
