"""Issue 2's first benchmark: the core table against diskcache and a dict.

``python -m benchmarks.core [--quick]`` times get hit, get miss, put (new
keys) and delete on 100-byte values for ``MmapCache``, ``diskcache.Cache``
and a plain dict in the same run, prints the medians and the ratios, and
checks issue 2's target: a get hit at least 5× faster than diskcache.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from .harness import Config, fmt_ns, fmt_ratio, ratio
from .kv import time_workload
from .report import Report, Target, machine_info, machine_line
from .values import BYTES_100

PEERS = ("mmcache", "diskcache", "dict")
WORKLOADS = {"get hit": "get hit", "get miss": "get miss", "put": "put new", "delete": "delete"}


def run(cfg: Config) -> Report:
    rep = Report(
        "core", "Core table: MmapCache vs diskcache.Cache vs dict (100 B values)", cfg.mode, cfg.command
    )
    base = Path(tempfile.mkdtemp(prefix="mmcache-bench-core-", dir=cfg.tmp))
    med: dict[tuple[str, str], float | None] = {}
    try:
        for label, workload in WORKLOADS.items():
            res = time_workload(PEERS, workload, BYTES_100, cfg, base)
            for peer in PEERS:
                t = res[peer]
                if isinstance(t, str):
                    rep.note(f"{peer}: skipped: not available: {t}")
                    med[(label, peer)] = None
                    continue
                med[(label, peer)] = t.median_ns
                rep.rows.append(
                    {
                        "workload": label,
                        "peer": peer,
                        "median_ns": t.median_ns,
                        "min_ns": t.min_ns,
                        "max_ns": t.max_ns,
                        "batch": t.batch,
                        "repeats": t.repeats,
                    }
                )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    rep.section(
        "Median latency per operation",
        ["operation", *PEERS, "diskcache / mmcache", "dict / mmcache"],
        [
            [
                w,
                *[fmt_ns(med[(w, p)]) for p in PEERS],
                fmt_ratio(ratio(med[(w, "diskcache")], med[(w, "mmcache")])),
                fmt_ratio(ratio(med[(w, "dict")], med[(w, "mmcache")])),
            ]
            for w in WORKLOADS
        ],
    )
    r = ratio(med[("get hit", "diskcache")], med[("get hit", "mmcache")])
    rep.targets.append(
        Target(
            "get hit vs diskcache (issue 2)",
            "skipped" if r is None else fmt_ratio(r),
            ">= 5×",
            None if r is None else r >= 5,
        )
    )
    rep.target_section("Target (issue 2)")
    return rep


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m benchmarks.core", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer, shorter batches")
    args = p.parse_args(argv)
    command = "python -m benchmarks.core" + "".join(" " + shlex.quote(a) for a in argv)
    tmp = Path(tempfile.mkdtemp(prefix="mmcache-bench-"))
    try:
        machine = machine_info()
        print(f"machine: {machine_line(machine)}\ncommand: {command}")
        rep = run(Config.make(args.quick, tmp, command=command))
        jp, mp = rep.write(machine)
        print(f"-> {jp}, {mp}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
