"""Reliability harness: hammer, kill -9, corruption and full-disk trials.

Each function runs real processes against real files and returns counts;
the tests assert on them, and ``reliability_report.py`` runs larger
versions and writes docs/RELIABILITY.md. Values always start with their own
key (``key|...``), so a wrong value is recognisable without a model.
"""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from mmcache import CorruptCacheError, DiskFullError, IncompatibleCacheError, MmapCache

# compact_min_bytes: small, so that automatic compactions (most of them
# HeapCopier ones) happen all the time, kills included.
OPTS = {"size": 512, "max_segment_bytes": 1 << 16, "compact_min_bytes": 32 << 10}
HANG_SECONDS = 30


def value_for(key: str, seq: int, rnd: random.Random) -> bytes:
    return f"{key}|{seq}|".encode() + bytes([rnd.randrange(256)]) * rnd.randrange(3000)


def wrong_values(c: MmapCache) -> int:
    """How many live entries hold a value that was not put under their key."""
    bad = 0
    for k, v in c.list_items():
        kk = k.encode() if isinstance(k, str) else k
        if not v.startswith(kk + b"|"):
            bad += 1
        if c.get(k) not in (None, v):
            bad += 1
    return bad


# ---------------------------------------------------------------- hammer
def _hammer_worker(path: str, wid: int, duration: float, out) -> None:  # type: ignore[no-untyped-def]
    c = MmapCache(path, **OPTS, max_bytes=200_000)
    rnd = random.Random(wid)
    ops = wrong = seq = 0
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        key = f"k{rnd.randrange(200)}"
        r = rnd.random()
        ops += 1
        if r < 0.55:
            v = c.get(key)
            if v is not None and not v.startswith(key.encode() + b"|"):
                wrong += 1
        elif r < 0.85:
            seq += 1
            c.put(key, value_for(key, seq, rnd), expire=rnd.choice([None, None, 0.05, 5]))
        elif r < 0.97:
            c.delete(key)
        elif r < 0.99:
            c.purge_expired()
        else:
            c.atomic_rebuild()
    out.put((ops, wrong))
    c.close()


def hammer(base: str, nprocs: int, duration: float) -> dict[str, int]:
    path = os.path.join(base, f"hammer{nprocs}")
    MmapCache(path, **OPTS, max_bytes=200_000).close()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_hammer_worker, args=(path, w, duration, out)) for w in range(nprocs)]
    for p in procs:
        p.start()
    results = [out.get(timeout=duration + 120) for _ in procs]
    for p in procs:
        p.join(60)
    with MmapCache(path, **OPTS) as c:
        problems = c.verify()
        wrong = sum(r[1] for r in results) + wrong_values(c)
    return {
        "processes": nprocs,
        "operations": sum(r[0] for r in results),
        "wrong": wrong,
        "inconsistent": int(bool(problems)),
        "exit_failures": sum(p.exitcode != 0 for p in procs),
    }


# ----------------------------------------------------------------- crash
def _crash_child(path: str, seed: int, rebuild_every: int) -> None:
    c = MmapCache(path, **OPTS, max_bytes=300_000)
    rnd = random.Random(seed)
    seq = 0
    while True:
        seq += 1
        key = f"k{rnd.randrange(300)}"
        r = rnd.random()
        if r < 0.6:
            c.put(key, value_for(key, seq, rnd), expire=rnd.choice([None, 0.01, 10]))
        elif r < 0.85:
            c.delete(key)
        else:
            c.get(key)
        if seq % rebuild_every == 0:
            c.atomic_rebuild()


def crash_trials(base: str, trials: int, rebuild_every: int = 50, seed: int = 0) -> dict[str, int]:
    """Fork a writer, SIGKILL it at a random moment, check the table; repeat."""
    path = os.path.join(base, f"crash{rebuild_every}")
    rnd = random.Random(seed)
    counts: Counter[str] = Counter()
    for t in range(trials):
        pid = os.fork()
        if pid == 0:
            try:
                _crash_child(path, seed * 100_000 + t, rebuild_every)
            finally:
                os._exit(0)
        time.sleep(rnd.uniform(0.002, 0.04))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        counts["kills"] += 1
        try:
            c = MmapCache(path, **OPTS, max_bytes=300_000)  # repairs a dirty table on open
        except Exception:
            counts["unopenable"] += 1
            traceback.print_exc()
            continue
        try:
            problems = c.verify()
            if problems:
                counts["repaired"] += 1
                c.repair()
                if c.verify():
                    counts["unrepairable"] += 1
            counts["wrong"] += wrong_values(c)
            c.put("after-crash", b"after-crash|ok")
            if c.get("after-crash") != b"after-crash|ok":
                counts["unwritable"] += 1
        finally:
            c.close()
    with MmapCache(path, **OPTS) as c:
        gen = c.get_stats()["generation"]
    base_name = os.path.basename(path)
    current = {base_name, base_name + ".lock", f"{base_name}.roster.{gen}"}
    leftovers = [n for n in os.listdir(base)
                 if n not in current and not n.startswith(f"{base_name}.heap.{gen}.")]  # fmt: skip
    counts["leftover_files"] = len(leftovers)
    return {k: counts[k] for k in ("kills", "unopenable", "repaired", "unrepairable", "wrong",
                                    "unwritable", "leftover_files")}  # fmt: skip


# ------------------------------------------------------------ corruption
def build_pristine(path: str, n: int = 300) -> dict[str, bytes]:
    rnd = random.Random(7)
    expected: dict[str, bytes] = {}
    with MmapCache(path, **OPTS) as c:
        for i in range(n):
            key = f"k{i}" if i % 5 else "long-" * 20 + str(i)
            v = value_for(key, i, rnd)
            c.put(key, v)
            expected[key] = v
        for i in range(0, n, 7):
            key = f"k{i}" if i % 5 else "long-" * 20 + str(i)
            c.delete(key)
            del expected[key]
    return expected


def _table_files(path: str) -> list[str]:
    d, base = os.path.split(path)
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f == base or f.startswith(base + "."))


def corrupt(files: list[str], rnd: random.Random) -> str:
    """Damage one file at random: flip bits, zero a run, or truncate."""
    name = rnd.choice(files)
    size = os.path.getsize(name)
    kind = rnd.choice(["flip", "flip", "flip", "zero", "truncate", "header"])
    with open(name, "r+b") as f:
        if kind == "truncate":
            f.truncate(rnd.randrange(size + 1) if size else 0)
        elif kind == "zero" and size:
            at = rnd.randrange(size)
            f.seek(at)
            f.write(b"\0" * min(rnd.randrange(1, 5000), size - at))
        elif size:
            for _ in range(rnd.randrange(1, 20)):
                at = rnd.randrange(min(size, 128)) if kind == "header" else rnd.randrange(size)
                f.seek(at)
                b = f.read(1)[0]
                f.seek(at)
                f.write(bytes([b ^ (1 << rnd.randrange(8))]))
    return f"{kind} {os.path.basename(name)}"


def _check_damaged(path: str, expected: dict[str, bytes]) -> int:
    """In a forked child: open, read everything, write, verify. Exit code:
    0 worked, 1 repaired (verify found problems, repair fixed them),
    2 CorruptCacheError/IncompatibleCacheError, 3 wrong value, 4 other error."""
    try:
        try:
            c = MmapCache(path, **OPTS)
        except (CorruptCacheError, IncompatibleCacheError):
            return 2
        for k, v in expected.items():
            got = c.get(k)
            if got is not None and got != v:
                return 3
        if wrong_values(c):
            return 3
        outcome = 0
        if c.verify():
            c.repair()
            outcome = 1
            if c.verify():
                return 4
        for i in range(50):
            c.put(f"new{i}", f"new{i}|".encode() * 10)
        if any(c.get(f"new{i}") != f"new{i}|".encode() * 10 for i in range(50)):
            return 3
        for k, v in expected.items():
            got = c.get(k)
            if got is not None and got != v:
                return 3
        c.close()
        return outcome
    except (CorruptCacheError, IncompatibleCacheError):
        return 2
    except Exception:
        traceback.print_exc()
        return 4


def corruption_trials(base: str, trials: int, seed: int = 0, only: int | None = None) -> dict[str, int]:
    """Damage copies of a table at random and check each in a forked child.
    ``only`` replays the damage of every trial but checks just that one."""
    pristine = os.path.join(base, "pristine", "t")
    os.makedirs(os.path.dirname(pristine))
    expected = build_pristine(pristine)
    rnd = random.Random(seed)
    counts: Counter[str] = Counter()
    names = {0: "worked", 1: "repaired", 2: "refused", 3: "wrong", 4: "error"}
    for t in range(trials):
        d = os.path.join(base, f"trial{t}")
        shutil.copytree(os.path.dirname(pristine), d)
        path = os.path.join(d, "t")
        for _ in range(rnd.choice([1, 1, 2, 3])):
            corrupt([f for f in _table_files(path) if not f.endswith(".lock")], rnd)
        if only is not None and t != only:
            shutil.rmtree(d, ignore_errors=True)
            continue
        pid = os.fork()
        if pid == 0:
            # A hang is a failure too: print where, then die by SIGALRM.
            faulthandler.dump_traceback_later(HANG_SECONDS - 1)
            signal.alarm(HANG_SECONDS)
            os._exit(_check_damaged(path, expected))
        _, status = os.waitpid(pid, 0)
        counts["tried"] += 1
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM:
            counts["hung"] += 1
            print(f"corruption trial {t} (seed {seed}) hung", file=sys.stderr)
        elif os.WIFSIGNALED(status):
            counts["crashed"] += 1
        else:
            counts[names.get(os.WEXITSTATUS(status), "error")] += 1
        shutil.rmtree(d, ignore_errors=True)
    keys = ("tried", "worked", "repaired", "refused", "wrong", "error", "crashed", "hung")
    return {k: counts[k] for k in keys}


# ------------------------------------------------------------- full disk
@contextlib.contextmanager
def small_tmpfs(size: str = "2m") -> Iterator[str | None]:
    """Mount a small tmpfs (root only); yields None where mounting is not allowed."""
    d = tempfile.mkdtemp(prefix="mmcache-fulldisk-")
    mounted = False
    try:
        if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount"):
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", d],
                               capture_output=True)  # fmt: skip
            mounted = r.returncode == 0
        yield d if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", d], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def small_ext4(size_mb: int = 8) -> Iterator[str | None]:
    """Mount a small ext4 image through a loop device (root, mkfs.ext4 and
    loop devices needed); yields None where that is not possible. ext4 is
    where heap space is fallocated and then zero-filled (mmcache._core.fs)."""
    d = tempfile.mkdtemp(prefix="mmcache-fulldisk-ext4-")
    image, mnt = os.path.join(d, "fs.img"), os.path.join(d, "mnt")
    os.mkdir(mnt)
    mounted = False
    try:
        tools = shutil.which("mount") and shutil.which("mkfs.ext4")
        if hasattr(os, "geteuid") and os.geteuid() == 0 and tools:
            with open(image, "wb") as f:
                f.truncate(size_mb << 20)
            run = functools.partial(subprocess.run, capture_output=True)
            mounted = run(["mkfs.ext4", "-q", "-F", image]).returncode == 0
            mounted = mounted and run(["mount", "-o", "loop", image, mnt]).returncode == 0
        yield mnt if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", mnt], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def fill_disk(path: str, value_size: int = 20_000) -> dict[str, int]:
    """Put until the filesystem refuses; then everything stored must read back
    here and in a fresh process."""
    counts: Counter[str] = Counter()
    stored: dict[str, bytes] = {}
    with MmapCache(path, size=1024, max_segment_bytes=1 << 20) as c:
        rnd = random.Random(1)
        for i in range(100_000):
            key = f"k{i}"
            v = value_for(key, i, rnd)[:16] + b"x" * value_size
            try:
                c.put(key, v)
            except DiskFullError:
                counts["refused"] += 1
                if counts["refused"] >= 5:
                    break
                continue
            stored[key] = v
        counts["stored"] = len(stored)
        counts["lost_here"] = sum(c.get(k) != v for k, v in stored.items())
        counts["verify_problems"] = len(c.verify())
    code = (
        "import sys, json; from mmcache import MmapCache\n"
        "c = MmapCache(sys.argv[1], size=1024, max_segment_bytes=1 << 20)\n"
        "got = {k: c.get(k) for k in sys.argv[2:]}\n"
        "print(json.dumps({k: (v or b'').decode('latin-1') for k, v in got.items()}))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    r = subprocess.run([sys.executable, "-c", code, path, *stored], capture_output=True, text=True, env=env)
    seen = json.loads(r.stdout) if r.returncode == 0 else {}
    counts["lost_elsewhere"] = sum(seen.get(k, "").encode("latin-1") != v for k, v in stored.items())
    return dict(counts)
