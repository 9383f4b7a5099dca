"""Issue 19's rows: the compiled get and put and the pure-Python ones, side by side,
against py-lmdb, in one run (100-byte values, str keys).

``python -m benchmarks --only native [--quick]``. One mmcache table and one
lmdb environment hold ``WIDE`` keys; the mmcache rows read that one table
through two handles, one with the compiled get and put (``mmcache._native``)
and one with them taken off (the class's pure-Python ``get``: memo, then
probe; and ``put``).
Workloads: get hit over the first 1,000 keys in random order (hot), get hit
over all ``WIDE`` keys in random order (wide: past the pure path's memo),
get miss, put overwrite (the native handle's put is the compiled one).
"""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .harness import Case, Config, fmt_ns, fmt_ratio, measure_all, ratio
from .peers import Unavailable, mmcache_size, open_store
from .report import Report, Target
from .values import BYTES_100

HOT = 1_000
ROWS = ("mmcache native", "mmcache pure", "lmdb")
WORKLOADS = ("get hit, 1,000 hot keys", "get hit, {wide:,} keys", "get miss", "put overwrite")
GOALS = {"get hit, 1,000 hot keys": 3.0, "get hit, {wide:,} keys": 3.0, "get miss": 3.0, "put overwrite": 2.0}


def _keys(n: int) -> list[str]:
    return [f"key:{i:09d}" for i in range(n)]


def _gets(get: Any) -> Any:
    def run(batch: list[str]) -> None:
        for k in batch:
            get(k)

    return run


def _puts(put: Any, value: bytes) -> Any:
    def run(batch: list[str]) -> None:
        for k in batch:
            put(k, value)

    return run


def run(cfg: Config) -> Report:
    from mmcache import MmapCache, _native

    wide = 20_000 if cfg.quick else 200_000
    rep = Report("native", "Native and pure-Python get against py-lmdb (issue 19)", cfg.mode, cfg.command)
    if not _native.AVAILABLE:
        rep.note(f"the compiled get is not in use here ({_native.REASON}): the native rows are pure Python")
    base = Path(tempfile.mkdtemp(prefix="mmcache-bench-native-", dir=cfg.tmp))
    keys = _keys(wide)
    value = BYTES_100.value
    rng = random.Random(19)
    med: dict[tuple[str, str], float | None] = {}
    try:
        path = base / "table"
        native = MmapCache(path, size=mmcache_size(wide))
        pure = MmapCache(path, size=mmcache_size(wide))
        for attr in ("get", "_get_view", "put"):  # back to the class's pure-Python methods
            pure.__dict__.pop(attr, None)
        for k in keys:
            native.put(k, value)
        stores: dict[str, Any] = {"mmcache native": native, "mmcache pure": pure}
        try:
            lm = open_store("lmdb", base / "lmdb", BYTES_100, wide)
            lm.put_many((k, value) for k in keys)
            stores["lmdb"] = lm
        except Unavailable as e:
            rep.note(f"lmdb: skipped: {e}")
        batches = {
            WORKLOADS[0]: lambda n: rng.choices(keys[:HOT], k=n),
            WORKLOADS[1]: lambda n: rng.choices(keys, k=n),
            WORKLOADS[2]: lambda n: [f"absent:{rng.randrange(1 << 40)}" for _ in range(n)],
            WORKLOADS[3]: lambda n: rng.choices(keys[:HOT], k=n),
        }
        for w in WORKLOADS:
            cases = {
                name: Case(_puts(s.put, value) if w == "put overwrite" else _gets(s.get), batches[w],
                           max_n=20_000 if w == "put overwrite" else None)  # fmt: skip
                for name, s in stores.items()
            }
            for name, t in measure_all(cases, cfg).items():
                med[(w, name)] = t.median_ns
                rep.rows.append({"workload": w.format(wide=wide), "peer": name, "median_ns": t.median_ns,
                                 "min_ns": t.min_ns, "max_ns": t.max_ns, "batch": t.batch})  # fmt: skip
        native.close()
        pure.close()
        if "lmdb" in stores:
            stores["lmdb"].close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    rep.section(
        "Median latency per operation",
        ["operation", *ROWS, "lmdb / native", "lmdb / pure", "pure / native"],
        [
            [w.format(wide=wide), *[fmt_ns(med.get((w, p))) for p in ROWS],
             fmt_ratio(ratio(med.get((w, "lmdb")), med.get((w, "mmcache native")))),
             fmt_ratio(ratio(med.get((w, "lmdb")), med.get((w, "mmcache pure")))),
             fmt_ratio(ratio(med.get((w, "mmcache pure")), med.get((w, "mmcache native"))))]  # fmt: skip
            for w in WORKLOADS
        ],
    )
    for w, goal in GOALS.items():
        r = ratio(med.get((w, "lmdb")), med.get((w, "mmcache native")))
        rep.targets.append(Target(f"{w.format(wide=wide)}: lmdb / native", fmt_ratio(r), f">= {goal:g}×",
                                  None if r is None else r >= goal))  # fmt: skip
    rep.target_section("Targets (issue 19)")
    return rep
