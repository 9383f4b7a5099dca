"""``python -m benchmarks [--quick] [--only NAME,...] [--chart]``: run the suites.

Suites: kv, native, django, decorator, scale, procs, tiered, breakdown,
integration (all by default) and core (issue 2's first benchmark, only with ``--only core``).
Each runs in a subprocess of its own (Django is configured once per
process, and tables a suite leaves open must not follow the next one into
its forks), prints its tables and writes
``benchmarks/results/<name>[-quick].json`` and ``.md``; ``--chart`` also
draws ``.png`` charts there. One local ``redis-server`` serves every suite
and is stopped at the end. Nothing is installed: a missing peer is a
"skipped: not available" row with the reason.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import redis_server
from .harness import Config
from .report import RESULTS, Report, machine_info, machine_line

SUITES = {
    "kv": "benchmarks.kv",
    "django": "benchmarks.django_cache",
    "decorator": "benchmarks.decorator",
    "scale": "benchmarks.scale",
    "procs": "benchmarks.procs",
    "core": "benchmarks.core",
    "tiered": "benchmarks.tiered",
    "breakdown": "benchmarks.breakdown",
    "integration": "benchmarks.integration",
    "native": "benchmarks.native",
}
DEFAULT = ("kv", "native", "django", "decorator", "scale", "procs", "tiered", "breakdown", "integration")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short run (under a minute)")
    p.add_argument(
        "--only",
        default=",".join(DEFAULT),
        help=f"comma-separated suites among {', '.join(SUITES)} (default: {','.join(DEFAULT)})",
    )
    p.add_argument("--chart", action="store_true", help="also draw PNG charts (needs matplotlib)")
    p.add_argument(
        "--tmp", type=Path, default=None, help="where to put the stores (default: the system temp dir)"
    )
    p.add_argument("--out", type=Path, default=RESULTS, help=f"results directory (default: {RESULTS})")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one suite, in this process
    p.add_argument("--command", default=None, help=argparse.SUPPRESS)  # the command the user typed
    args = p.parse_args(argv)
    args.suites = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in [*args.suites, args.child or "kv"] if s not in SUITES]
    if bad:
        p.error(f"unknown suite(s) {', '.join(bad)}; choose among {', '.join(SUITES)}")
    return args


def run_child(args: argparse.Namespace) -> int:
    """Run one suite in this process and write its result files."""
    cfg = Config.make(args.quick, args.tmp, args.chart, args.command)
    machine = machine_info(redis_server.server().version)
    rep: Report = importlib.import_module(SUITES[args.child]).run(cfg)
    jp, mp = rep.write(machine, args.out)
    print(f"  -> {jp.name}, {mp.name}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.child:
        return run_child(args)
    command = "python -m benchmarks" + "".join(" " + shlex.quote(a) for a in argv)
    tmp = Path(tempfile.mkdtemp(prefix="mmcache-bench-", dir=args.tmp))
    t0 = time.monotonic()
    stems: list[str] = []
    failed: list[str] = []
    try:
        srv = redis_server.server()
        if srv.url is None:
            print(f"note: Redis rows will be skipped: {srv.reason}")
        print(f"machine: {machine_line(machine_info(srv.version))}\ncommand: {command}", flush=True)
        print(f"mode: {'quick' if args.quick else 'full'}\n", flush=True)
        env = os.environ | redis_server.export(srv)
        for name in args.suites:
            print(f"=== {name} ===", flush=True)
            t = time.monotonic()
            child = [sys.executable, "-m", "benchmarks", "--child", name, "--tmp", str(tmp)]
            child += ["--out", str(args.out), "--command", command] + (["--quick"] if args.quick else [])
            rc = subprocess.run(child, env=env, cwd=Path(__file__).resolve().parent.parent).returncode
            if rc != 0:
                failed.append(name)
                print(f"  !! suite {name} failed (exit code {rc})", flush=True)
            else:
                stems.append(name if not args.quick else f"{name}-quick")
            print(f"  ({time.monotonic() - t:.1f} s)\n", flush=True)
    finally:
        redis_server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    summary(stems, args.out)
    if args.chart:
        from . import charts

        for path, note in charts.draw(stems, args.out):
            print(f"chart: {path}" if note is None else f"chart skipped: {path}: {note}")
    print(f"\ntotal {time.monotonic() - t0:.1f} s")
    return 1 if failed else 0


def summary(stems: list[str], out: Path) -> None:
    """Every suite's targets, read back from its JSON file."""
    print("=== targets (issue 7) ===")
    for stem in stems:
        data = json.loads((out / f"{stem}.json").read_text())
        for t in data["targets"]:
            print(f"  [{t['verdict']:>12}] {data['suite']}: {t['name']}: {t['measured']} (goal {t['goal']})")


if __name__ == "__main__":
    sys.exit(main())
