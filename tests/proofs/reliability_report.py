"""Run the reliability harness at full size and write docs/RELIABILITY.md.

    python tests/proofs/reliability_report.py [--quick] [--out docs/RELIABILITY.md]

The same functions back the test suite (tests/proofs/test_reliability.py), which
runs them smaller. Exits non-zero if any wrong value, unopenable table,
crash or unexpected error was seen.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared support package

import stress_mixed  # noqa: E402  (beside this script)
from support import stress  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs (about a minute)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "docs" / "RELIABILITY.md"))
    a = ap.parse_args(argv)
    scale = 1 if a.quick else 4
    rows: list[tuple[str, str, str]] = []
    bad = 0
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        for n in (4, 8):
            r = stress.hammer(os.path.join(d, ""), n, duration=3.0 * scale)
            rows.append((f"hammer, {n} processes (get/put/delete/expire/purge/rebuild)",
                         f"{r['operations']:,} operations held", f"wrong values: {r['wrong']}, "
                         f"inconsistent tables: {r['inconsistent']}"))  # fmt: skip
            bad += r["wrong"] + r["inconsistent"] + r["exit_failures"]
        for nprocs, nthreads in ((2, 4), (4, 3)):
            sub = os.path.join(d, f"mixed{nprocs}x{nthreads}")
            os.makedirs(sub)
            r = stress_mixed.mixed(sub, nprocs, nthreads, duration=8.0 * scale, chaos=2, kill_every=0.8)
            rows.append((f"threads: {nprocs} processes x {nthreads} threads checked against a model, "
                         f"2 more processes x {nthreads} threads killed (get/put/delete/incr in a "
                         "transaction/evict/compact/rebuild)",
                         f"{r['ops']:,} operations ({r['incr']:,} increments), {r['kills']} kills, "
                         f"{r['rebuilds']} rebuilds, {r['evictions']:,} evictions",
                         f"lost: {r['lost']}, increments lost: {r['incr_lost']}, deletes undone: "
                         f"{r['resurrected']}, wrong values: {r['wrong']}, exceptions to callers: "
                         f"{r['errors']}, inconsistent tables: {r['inconsistent']}"))  # fmt: skip
            bad += stress_mixed.failures(r)
        for label, every, seed in (("during puts/deletes", 1000, 11), ("during atomic_rebuild", 3, 12)):
            sub = os.path.join(d, f"crash{every}")
            os.makedirs(sub)
            r = stress.crash_trials(sub, trials=100 * scale, rebuild_every=every, seed=seed)
            rows.append((f"kill -9 {label}", f"{r['kills']} kills survived",
                         f"unopenable: {r['unopenable']}, wrong values: {r['wrong']}, "
                         f"repaired: {r['repaired']}, leftover files: {r['leftover_files']}"))  # fmt: skip
            bad += r["unopenable"] + r["wrong"] + r["unrepairable"] + r["unwritable"] + r["leftover_files"]
        sub = os.path.join(d, "corrupt")
        os.makedirs(sub)
        r = stress.corruption_trials(sub, trials=300 * scale, seed=13)
        rows.append(("bit flips, zeroed runs, truncation of index / roster / heap",
                     f"{r['tried']} corruptions tried",
                     f"worked: {r['worked']}, repaired: {r['repaired']}, refused (CorruptCacheError): "
                     f"{r['refused']}, wrong values: {r['wrong']}, crashes: {r['crashed']}, "
                     f"hangs: {r['hung']}, other errors: {r['error']}"))  # fmt: skip
        bad += r["wrong"] + r["crashed"] + r["error"] + r["hung"]
        for label, mount in (("2 MiB tmpfs", stress.small_tmpfs("2m")), ("8 MiB ext4", stress.small_ext4(8))):
            with mount as mnt:
                if mnt is None:
                    rows.append((f"full disk ({label})", "skipped", "mounting needs root (and loop devices)"))
                    continue
                r = stress.fill_disk(os.path.join(mnt, "t"))
                rows.append((f"full disk ({label})", f"{r['refused']} full-disk writes refused",
                             f"stored before: {r['stored']}, lost here: {r['lost_here']}, "
                             f"lost in another process: {r['lost_elsewhere']}"))  # fmt: skip
                bad += r["lost_here"] + r["lost_elsewhere"]
    elapsed = time.time() - t0
    cmd = "python tests/proofs/reliability_report.py" + (" --quick" if a.quick else "")
    lines = [
        "# Reliability",
        "",
        f"Figures of the last run of `{cmd}` ({time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{elapsed:.0f} s). The test suite runs the same harness (`tests/support/stress.py`, "
        "`tests/proofs/stress_mixed.py`) smaller.",
        "",
        "| trial | held | outcome |",
        "|---|---|---|",
        *[f"| {a_} | {b_} | {c_} |" for a_, b_, c_ in rows],
        "",
        "Must be zero in every run: wrong values returned, unopenable tables, crashes (SIGBUS/SIGSEGV),",
        f"unexpected errors. This run: **{bad}**.",
        "",
        "- *wrong value*: a value that was never put under the key it was read from (every value",
        "  starts with its own key, so this is checked without a model).",
        "- *threads*: each checked thread owns keys and remembers what it last put or deleted under",
        "  them; every read of its own key, and the final table, must agree exactly (*lost*: an",
        "  older value or a miss where a put was acknowledged; *deletes undone*: a deleted key back).",
        "  In the evicting table a miss is allowed (evicted), an older value is not. The shared",
        "  counter must equal the acknowledged `put(k, get(k) + 1)` transactions. The killed",
        "  processes (SIGKILL, replaced at once) do the same work unchecked, with more rebuilds.",
        "- *repaired*: `verify()` found a problem (a writer killed mid-update, damaged counters or",
        "  roster) and `repair()` (or the next opener) fixed it; entries whose records were damaged",
        "  are dropped, never returned.",
        "- *refused*: the damaged file could not be opened safely and `CorruptCacheError` was raised.",
        "- Every trial's table compacts itself after each 32 KiB of dead heap, so automatic",
        "  compactions of both kinds (full rebuilds and slot-keeping heap copies) come every few",
        "  hundred operations (some kills land in them), besides the explicit `atomic_rebuild` calls.",
        "",
        "## What an attacker who can write the cache directory can do",
        "",
        "- **Without `secret`**: anything a cache allows. They can delete or replace entries and",
        "  plant values under any key (the checksum protects against damage, not against forgery).",
        "  The decorator and the Django backend unpickle values, so *a planted value is code",
        "  execution in every process that reads it*. Keep the directory owner-only (the default",
        "  mode, 0o600 files), and never point a cache at a directory other users can write.",
        "- **With `secret=`** (decorator: `@mmap_cached(secret=...)`; Django:",
        "  `OPTIONS={'SIGN': True}` uses a key derived from `SECRET_KEY`): every record is",
        "  signed with a keyed BLAKE2b MAC; a record without a valid MAC is a miss and is never",
        "  unpickled. An attacker without the secret can still delete entries, fill the disk, or",
        "  replay an old signed record of the same key (the MAC covers the key, value and expiry, not",
        "  the time of writing), but cannot make a process read a value it did not write.",
        "- mmcache refuses a cache path that is a symlink or owned by another user",
        "  (`allow_symlink=`, `allow_foreign_owner=` to override), so an attacker cannot redirect",
        "  the files or feed a pre-built table.",
        "",
    ]
    Path(a.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
