"""``@mmap_cached`` across real processes: keys, stampede, killed computers, revalidation.

Children run the functions of ``_decorator_workers`` (imported by that name in
every process) with ``MMCACHE_DIR`` set to this test's directory; each run of
a function appends a line to the count file, so "the function ran once" is a
line count over every process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests" / "faces"


class Children:
    """Child processes sharing one cache directory and one count file."""

    def __init__(self, tmp_path: Path) -> None:
        self.cache = tmp_path / "cache"
        self.count_file = tmp_path / "counts"
        self.go = tmp_path / "go"
        self.procs: list[subprocess.Popen[str]] = []

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": f"{TESTS}{os.pathsep}{ROOT}",
            "MMCACHE_DIR": str(self.cache),
            "DECO_COUNT_FILE": str(self.count_file),
            **extra,
        }

    def start(self, *args: Any, code: str | None = None, **env: str) -> subprocess.Popen[str]:
        """Run ``_decorator_workers.main(args)``, or ``code``, in a new interpreter."""
        script = textwrap.dedent(code) if code else "import _decorator_workers as w; w.main()"
        cmd = [sys.executable, "-c", script, *map(str, args)]
        pipe = subprocess.PIPE
        p = subprocess.Popen(cmd, stdout=pipe, stderr=pipe, text=True, env=self.env(**env))
        self.procs.append(p)
        return p

    def run(self, *args: Any, code: str | None = None, **env: str) -> Any:
        return self.finish(self.start(*args, code=code, **env))

    @staticmethod
    def ready(*procs: subprocess.Popen[str]) -> None:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"

    @staticmethod
    def finish(p: subprocess.Popen[str], timeout: float = 60) -> Any:
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, f"child failed ({p.returncode}):\n{out}\n{err}"
        return json.loads(out.strip().splitlines()[-1])

    def counts(self, tag: str) -> list[str]:
        if not self.count_file.exists():
            return []
        lines = [line.split() for line in self.count_file.read_text().splitlines()]
        return [pid for name, pid in lines if name == tag]

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.communicate()


@pytest.fixture
def kids(tmp_path: Path) -> Any:
    c = Children(tmp_path)
    yield c
    c.close()


COMBINE = """
    import json, sys
    import numpy as np
    import _decorator_workers as w
    if sys.argv[1] == "a":
        d, s = {"a": 1, "b": 2, "c": 3}, {"x", "y", "z", "w"}
        arr = np.arange(6, dtype=np.int64).reshape(2, 3)
    else:  # equal values, built in another order
        d, s = dict([("c", 3), ("b", 2), ("a", 1)]), set("wzyx")
        arr = np.array([[0, 1, 2], [3, 4, 5]], dtype=np.int64)
    results = [w.combine(d, s, arr) for _ in range(3)]
    print(json.dumps({"results": results, "info": list(w.combine.cache_info())}))
"""


def test_other_process_and_hash_seed_gets_hits(kids: Children) -> None:
    pytest.importorskip("numpy")
    a = kids.run("a", code=COMBINE, PYTHONHASHSEED="1")
    b = kids.run("b", code=COMBINE, PYTHONHASHSEED="2")
    expected = [[["a", 1], ["b", 2], ["c", 3]], ["w", "x", "y", "z"], 15, "int64"]
    assert a["results"] == b["results"] == [expected] * 3
    assert a["info"] == [2, 1, None, 1]  # hits, misses, maxsize, currsize
    assert b["info"] == [3, 0, None, 1]  # every call a hit ...
    assert len(kids.counts("combine")) == 1  # ... and the function never ran in b


def test_stampede_four_processes_compute_once(kids: Children) -> None:
    procs = [kids.start("slow", 7, kids.go) for _ in range(4)]
    kids.ready(*procs)
    t0 = time.monotonic()
    kids.go.touch()
    reports = [kids.finish(p) for p in procs]
    elapsed = time.monotonic() - t0
    assert [r["results"] for r in reports] == [[70]] * 4
    assert len(kids.counts("slow")) == 1
    assert sorted(r["info"][1] for r in reports) == [0, 0, 0, 1]  # one miss: the computer
    assert sum(r["info"][0] for r in reports) == 3  # the waiters got its value
    assert elapsed < 5, elapsed


def test_killed_computer_is_replaced_after_its_lease_lapses(kids: Children) -> None:
    victim = kids.start("killable", 3, DECO_VICTIM="1")
    deadline = time.monotonic() + 20
    while not kids.counts("killable"):  # the victim holds the lease and hangs
        assert time.monotonic() < deadline and victim.poll() is None
        time.sleep(0.01)
    waiters = [kids.start("killable", 3, kids.go) for _ in range(3)]
    kids.ready(*waiters)
    kids.go.touch()
    time.sleep(0.5)  # the waiters are waiting on the victim's (renewed) lease
    assert len(kids.counts("killable")) == 1
    os.kill(victim.pid, signal.SIGKILL)
    t_kill = time.monotonic()
    reports = [kids.finish(p) for p in waiters]
    assert time.monotonic() - t_kill < 6  # lease_ttl=1: well before lock_timeout=30
    ran = kids.counts("killable")
    assert len(ran) == 2 and ran[0] == str(victim.pid)  # exactly one waiter took over
    assert {r["results"][0] for r in reports} == {f"3 from {ran[1]}"}


def test_lock_timeout_lets_waiters_compute_themselves(kids: Children) -> None:
    code = """
        import json, os, time
        from mmcache import mmap_cached
        import _decorator_workers as w

        @mmap_cached(lock_timeout=float(os.environ["TIMEOUT"]), lease_ttl=1.0, version=1)
        def hang(x):
            w.count("hang")
            time.sleep(float(os.environ["SLEEP"]))
            return os.getpid()

        print("ready", flush=True)
        t0 = time.monotonic()
        print(json.dumps([hang(1), time.monotonic() - t0]))
    """
    holder = kids.start(code=code, TIMEOUT="60", SLEEP="30")
    kids.ready(holder)
    while not kids.counts("hang"):
        time.sleep(0.01)
    waiter = kids.start(code=code, TIMEOUT="0.5", SLEEP="0")
    kids.ready(waiter)
    pid, waited = kids.finish(waiter)
    assert pid == waiter.pid and 0.4 < waited < 5  # computed itself after 0.5 s
    assert kids.counts("hang") == [str(holder.pid), str(waiter.pid)]


def test_stale_while_revalidate_one_recompute_across_processes(kids: Children) -> None:
    first = kids.run("revalidated", 1)["results"][0]
    stored = time.monotonic()
    procs = [kids.start("revalidated", 1, kids.go, 0.8) for _ in range(4)]
    kids.ready(*procs)
    time.sleep(max(0.0, stored + 2.1 - time.monotonic()))  # ttl=2: stale now, not yet gone
    kids.go.touch()
    reports = [kids.finish(p) for p in procs]
    assert len(kids.counts("revalidated")) == 2  # the first computation + exactly one recompute
    latencies = [t for r in reports for t in r["latencies"]]
    assert max(latencies) < 0.2, max(latencies)  # nobody waited for the 0.3 s recompute
    assert [r["results"][0] for r in reports] == [first] * 4  # stale served at once
    values = {v for r in reports for v in r["results"]}
    assert len(values) == 2 and first in values  # then the new value, the same everywhere
    assert sum(r["info"][1] for r in reports) == 1  # the background recompute: one miss


def test_cache_clear_is_seen_by_other_processes(kids: Children) -> None:
    code = """
        import json, sys, time, os
        import _decorator_workers as w
        first = w.killable(5)
        print("ready", flush=True)
        while not os.path.exists(sys.argv[1]):
            time.sleep(0.005)
        print(json.dumps([first, w.killable(5), w.killable(5), list(w.killable.cache_info())]))
    """
    longlived = kids.start(kids.go, code=code)
    kids.ready(longlived)
    clear = "import _decorator_workers as w, json; w.killable.cache_clear(); print(json.dumps(0))"
    kids.run(code=clear)
    kids.go.touch()
    first, again, hit, info = kids.finish(longlived)
    assert first == again == hit == f"5 from {longlived.pid}"
    assert info == [1, 2, None, 1]  # miss, miss after the clear elsewhere, hit
    assert len(kids.counts("killable")) == 2  # recomputed after the clear


MAIN_CLASS = """
    import json
    import _decorator_workers as w

    class Point:
        def __init__(self, x):
            self.x = x

    p = w.build(1, Point)
    adder = w.build(2, lambda n: (lambda y: y + n))
    print(json.dumps([type(p).__name__, p.x, adder(1)]))
"""

READER = """
    import json
    import _decorator_workers as w
    p, adder = w.build(1, None), w.build(2, None)  # hits: make is never called
    print(json.dumps([type(p).__name__, p.x, adder(1), list(w.build.cache_info())]))
"""


def test_main_classes_and_lambdas_reach_a_process_without_them(kids: Children) -> None:
    assert kids.run(code=MAIN_CLASS) == ["Point", 1, 3]
    assert kids.run(code=READER) == ["Point", 1, 3, [2, 0, None, 2]]
    assert len(kids.counts("build")) == 2


SCRIPT_IN_MAIN = """
    import json
    import _decorator_workers as w
    from mmcache import mmap_cached

    class Vec:
        def __init__(self, *xs):
            self.xs = xs

        def norm1(self):
            return sum(map(abs, self.xs))

    @mmap_cached
    def make(n):
        w.count("make")
        return Vec(*range(-n, n + 1)), (lambda: n * 2)

    v, twice = make(3)
    print(json.dumps([type(v).__name__, v.norm1(), twice(), list(make.cache_info())]))
"""


def test_function_in_main_returning_main_class_instances(kids: Children) -> None:
    assert kids.run(code=SCRIPT_IN_MAIN) == ["Vec", 12, 6, [0, 1, None, 1]]
    assert kids.run(code=SCRIPT_IN_MAIN) == ["Vec", 12, 6, [1, 0, None, 1]]
    assert len(kids.counts("make")) == 1
    other = SCRIPT_IN_MAIN.replace("n * 2", "n * 3")  # another __main__: its own entries
    assert kids.run(code=other) == ["Vec", 12, 9, [0, 1, None, 1]]
