"""PNG charts drawn from the result JSON files (``--chart``; needs matplotlib).

One chart per suite, beside its JSON: latency bars against the peers on a
log scale (kv, django, decorator, core), scaling curves (scale), process
throughput (procs) and each missed target's path split into its parts
(breakdown). ``python -m benchmarks.charts [STEM ...]`` redraws from
the files already in ``benchmarks/results``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .report import RESULTS

COLORS = {"mmcache": "#d62728", "mmap_cached": "#d62728"}
PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#ff7f0e", "#17becf", "#7f7f7f")


def _color(name: str, i: int) -> str:
    return COLORS.get(name, PALETTE[i % len(PALETTE)])


def grouped_bars(
    ax: Any,
    groups: Sequence[str],
    series: Sequence[str],
    value: dict[tuple[str, str], float | None],
    ylabel: str,
    log: bool = True,
    scale: float = 1.0,
) -> None:
    """One cluster per group, one bar per series; missing values leave a gap labelled 'n/a'."""
    width = 0.8 / max(1, len(series))
    for j, s in enumerate(series):
        xs, ys = [], []
        for i, g in enumerate(groups):
            v = value.get((g, s))
            x = i - 0.4 + width * (j + 0.5)
            if v is None:
                ax.text(
                    x,
                    0.02,
                    "n/a",
                    rotation=90,
                    ha="center",
                    va="bottom",
                    fontsize=6,
                    transform=ax.get_xaxis_transform(),
                )
                continue
            xs.append(x)
            ys.append(v * scale)
        ax.bar(xs, ys, width, label=s if ys else f"{s} (skipped)", color=_color(s, j))
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, fontsize=8)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", which="major", alpha=0.3)


def _latency_chart(data: dict[str, Any], out: Path, label_key: str = "peer") -> Path:
    import matplotlib.pyplot as plt

    rows = data["rows"]
    kinds = list(dict.fromkeys(r.get("value", "") for r in rows))
    fig, axes = plt.subplots(1, len(kinds), figsize=(max(7.5, 5.2 * len(kinds)), 4.6), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        sub = [r for r in rows if r.get("value", "") == kind]
        groups = list(dict.fromkeys(r["workload"] for r in sub))
        series = list(dict.fromkeys(r.get(label_key, r["peer"]) for r in sub))
        value = {(r["workload"], r.get(label_key, r["peer"])): r["median_ns"] for r in sub}
        grouped_bars(ax, groups, series, value, "µs per operation (log scale)", scale=1e-3)
        ax.set_title(f"{kind} values" if kind else "", fontsize=10)
        ax.tick_params(axis="x", labelrotation=20)
    fig.suptitle(f"{data['title']} ({data['mode']}) — lower is better", fontsize=11)
    _legend_on_top(fig, axes[0][0])
    return _save(fig, out)


def _legend_on_top(fig: Any, ax: Any) -> None:
    """One legend for the figure, in rows under the title, clear of the bars."""
    handles, labels = ax.get_legend_handles_labels()
    ncol = max(1, min(len(labels), int(fig.get_figwidth() / 2.4)))
    rows = -(-len(labels) // ncol)
    fig.legend(
        handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.94), ncol=ncol, fontsize=8, frameon=False
    )
    fig.tight_layout(rect=(0, 0, 1, 0.92 - 0.05 * rows))


def _scale_chart(data: dict[str, Any], out: Path) -> Path:
    import matplotlib.pyplot as plt

    rows = data["rows"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    lat = [r for r in rows if r["kind"] == "latency"]
    for i, w in enumerate(dict.fromkeys(r["workload"] for r in lat)):
        pts = sorted((r["entries"], r["median_ns"] / 1e3) for r in lat if r["workload"] == w)
        a1.plot(*zip(*pts, strict=True), marker="o", label=w, color=PALETTE[i])
    a1.set_xscale("log")
    a1.set_yscale("log")
    a1.set_xlabel("entries (table of 2× as many slots)")
    a1.set_ylabel("µs per operation (log scale)")
    a1.set_title("mmcache latency vs entries (flat = O(1))", fontsize=10)
    a1.legend(fontsize=8)
    a1.grid(alpha=0.3, which="both")
    for i, (kind, label) in enumerate(
        (("list_items", "fixed large table"), ("list_items_tight", "tight table"))
    ):
        pts = sorted((r["entries"], r["median_ns"] / 1e6) for r in rows if r["kind"] == kind)
        if pts:
            slots = next(r["slots"] for r in rows if r["kind"] == kind)
            text = f"{label} ({slots:,} slots)" if kind == "list_items" else label
            a2.plot(*zip(*pts, strict=True), marker="o", label=text, color=PALETTE[i])
    fixed = sorted((r["entries"], r["median_ns"] / 1e6) for r in rows if r["kind"] == "list_items")
    if fixed:
        n0, t0 = fixed[-1]
        xs = [p[0] for p in fixed]
        a2.plot(xs, [t0 * x / n0 for x in xs], ls="--", color="grey", label="∝ occupied")
    a2.set_xscale("log")
    a2.set_yscale("log")
    a2.set_xlabel("occupied entries")
    a2.set_ylabel("ms per list_items()")
    a2.set_title("list_items() vs occupied count (O(occupied))", fontsize=10)
    a2.legend(fontsize=8)
    a2.grid(alpha=0.3, which="both")
    fig.suptitle(f"{data['title']} ({data['mode']})", fontsize=11)
    fig.tight_layout()
    return _save(fig, out)


def _procs_chart(data: dict[str, Any], out: Path) -> Path:
    import matplotlib.pyplot as plt

    from .procs import CEILING

    rows = [r for r in data["rows"] if r["peer"] != CEILING]  # another unit: in the table only
    fig, ax = plt.subplots(figsize=(7, 4.2))
    groups = [f"{n} proc" for n in sorted({r["processes"] for r in rows})]
    series = list(dict.fromkeys(r["peer"] for r in rows))
    value = {(f"{r['processes']} proc", r["peer"]): r["ops_per_s"] for r in rows}
    grouped_bars(ax, groups, series, value, "thousand ops/s (all processes)", log=False, scale=1e-3)
    fig.suptitle(f"{data['title']} ({data['mode']}) — higher is better", fontsize=11)
    _legend_on_top(fig, ax)
    return _save(fig, out)


def _breakdown_chart(data: dict[str, Any], out: Path) -> Path:
    """One stacked bar per path: its parts and the rest (grey), with the
    time the target allows marked (the whole must end left of it)."""
    import matplotlib.pyplot as plt

    rows = data["rows"]
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(rows) + 3.2))
    colors: dict[str, Any] = {}
    palette = plt.get_cmap("tab20").colors
    for i, r in enumerate(rows):
        parts = [(name, ns) for name, ns in r["parts"].items() if ns > 0]
        rest = r.get("rest", "rest")
        parts.append((rest, max(0.0, r["whole_ns"] - sum(ns for _, ns in parts))))
        left = 0.0
        for name, ns in parts:
            if name not in colors:
                grey = name.startswith("rest")
                colors[name] = "#cccccc" if grey else palette[(2 * len(colors)) % 20 + len(colors) // 10 % 2]
            ax.barh(i, ns / 1e3, left=left / 1e3, color=colors[name], edgecolor="white")
            left += ns
        if r["peer_ns"]:
            allowed = r["peer_ns"] / r["goal"] / 1e3
            ax.plot([allowed, allowed], [i - 0.45, i + 0.45], color="#d62728", lw=2.5)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["path"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("µs per operation (red mark: the most the target allows)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
    fig.legend(handles, list(colors), loc="lower center", ncol=2, fontsize=7, frameon=False)
    fig.suptitle(f"{data['title']} ({data['mode']})", fontsize=11)
    fig.tight_layout(rect=(0, 0.03 + 0.028 * (len(colors) + 1) / 2, 1, 1))
    return _save(fig, out)


def _save(fig: Any, out: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def draw(stems: Sequence[str], results: Path = RESULTS) -> Iterator[tuple[Path, str | None]]:
    """Draw a chart for each result stem; yields (png path, None) or (json path, why skipped)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        yield results, "matplotlib is not installed (pip install matplotlib)"
        return
    for stem in stems:
        src = results / f"{stem}.json"
        if not src.exists():
            yield src, "no results file"
            continue
        data = json.loads(src.read_text())
        out = results / f"{stem}.png"
        suite = data.get("suite") if isinstance(data, dict) else None
        if suite not in ("kv", "django", "core", "decorator", "scale", "procs", "breakdown"):
            yield src, "not a result of this suite runner"
        elif not data["rows"]:
            yield src, "no rows to draw"
        elif suite == "scale":
            yield _scale_chart(data, out), None
        elif suite == "procs":
            yield _procs_chart(data, out), None
        elif suite == "breakdown":
            yield _breakdown_chart(data, out), None
        elif suite == "decorator":
            yield _latency_chart(data, out, label_key="label"), None
        else:
            yield _latency_chart(data, out), None


if __name__ == "__main__":
    for path, note in draw(sys.argv[1:] or [p.stem for p in sorted(RESULTS.glob("*.json"))]):
        print(f"chart: {path}" if note is None else f"chart skipped: {path}: {note}")
