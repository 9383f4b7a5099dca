"""What a cached function *is*, across programs sharing the default location.

Every test runs real interpreters that share one ``$MMCACHE_DIR`` (as every
program of a user shares the per-user cache directory) and reads back what
each one computed (``cache_info()``: hits and misses in that process). The
projects are real files in a temporary directory; ``PYTHONDONTWRITEBYTECODE``
keeps a stale ``.pyc`` from standing in for an edited source.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mmcache import MmapCache, mmap_cached
from mmcache.decorators._argkey import ArgKeyer
from mmcache.decorators._location import table_path
from mmcache.decorators._table import RECORDED, TAG_KEY

ROOT = Path(__file__).resolve().parents[2]

# Calls every name in argv as utils.NAME(arg) and prints results and counters.
CALL = """
import json, sys
import utils
out = {}
for spec in sys.argv[1:]:
    name, arg = spec.split("=")
    f = getattr(utils, name)
    out[name] = [f(int(arg)), list(f.cache_info())[:2]]
print(json.dumps(out))
"""


class Programs:
    """Interpreters sharing one cache directory."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.cache = tmp_path / "shared-cache"

    def project(self, name: str, utils: str) -> Path:
        """A project directory holding ``utils.py``."""
        d = self.tmp / name
        d.mkdir(exist_ok=True)
        (d / "utils.py").write_text(textwrap.dedent(utils))
        return d

    def run(
        self, *argv: str, path: Path | None = None, script: Path | None = None, timeout: float = 120
    ) -> Any:
        env = {
            **os.environ,
            "MMCACHE_DIR": str(self.cache),
            "PYTHONPATH": os.pathsep.join([*([str(path)] if path else []), str(ROOT)]),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        cmd = [sys.executable, *([str(script)] if script else ["-c", CALL]), *argv]
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=self.tmp)
        assert p.returncode == 0, f"child failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
        return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture
def progs(tmp_path: Path) -> Programs:
    return Programs(tmp_path)


UTILS = """
from mmcache import mmap_cached

@mmap_cached
def compute(x):
    return x + {n}
"""


def test_two_projects_with_the_same_module_and_function_get_their_own_results(progs: Programs) -> None:
    a = progs.project("a", UTILS.format(n=1))
    b = progs.project("b", UTILS.format(n=1000))
    assert progs.run("compute=1", path=a) == {"compute": [2, [0, 1]]}
    assert progs.run("compute=1", path=b) == {"compute": [1001, [0, 1]]}  # not a's 2
    assert progs.run("compute=1", path=a) == {"compute": [2, [1, 0]]}  # each keeps its own
    assert progs.run("compute=1", path=b) == {"compute": [1001, [1, 0]]}


def test_sharing_between_projects_is_explicit(progs: Programs) -> None:
    shared = UTILS.replace("@mmap_cached", "@mmap_cached(namespace='team')")
    a = progs.project("a", shared.format(n=1))
    b = progs.project("b", shared.format(n=1))  # the same code in another checkout
    assert progs.run("compute=1", path=a) == {"compute": [2, [0, 1]]}
    assert progs.run("compute=1", path=b) == {"compute": [2, [1, 0]]}
    named = UTILS.replace("@mmap_cached", "@mmap_cached(name='shared-compute', hash_code=False)")
    c = progs.project("c", named.format(n=5).replace("def compute", "def other_name"))
    d = progs.project("d", named.format(n=5))
    assert progs.run("other_name=1", path=c) == {"other_name": [6, [0, 1]]}
    assert progs.run("compute=1", path=d) == {"compute": [6, [1, 0]]}  # another module, one name


LAMBDAS = """
from mmcache import mmap_cached

f1 = mmap_cached(version=1)(lambda x: x + 1)
f2 = mmap_cached(version=1)(lambda x: x * 100)
"""


def test_two_lambdas_with_equal_options_get_their_own(progs: Programs) -> None:
    p = progs.project("p", LAMBDAS)
    assert progs.run("f1=5", "f2=5", path=p) == {"f1": [6, [0, 1]], "f2": [500, [0, 1]]}
    assert progs.run("f2=5", "f1=5", path=p) == {"f1": [6, [1, 0]], "f2": [500, [1, 0]]}


EDITABLE = """
from mmcache import mmap_cached

@mmap_cached
def f(x):
    return [x, {body}]
"""

EDITS = {
    "comment": """
# a comment above
from mmcache import mmap_cached


@mmap_cached
def f(x):  # what f does
    # a comment inside
    return [x, "one"]  # and here
""",
    "docstring": '''
from mmcache import mmap_cached

@mmap_cached
def f(x):
    """Now documented, over
    two lines."""
    return [x, "one"]
''',
    "whitespace": """
from mmcache import mmap_cached
@mmap_cached
def f( x ):

    return [
        x,
        "one",
    ]
""",
}


def test_a_body_edit_misses_and_comment_docstring_whitespace_edits_hit(progs: Programs) -> None:
    p = progs.project("p", EDITABLE.format(body='"one"'))
    assert progs.run("f=7", path=p) == {"f": [[7, "one"], [0, 1]]}
    assert progs.run("f=7", path=p) == {"f": [[7, "one"], [1, 0]]}
    for what, text in EDITS.items():
        progs.project("p", text)
        assert progs.run("f=7", path=p) == {"f": [[7, "one"], [1, 0]]}, what
    progs.project("p", EDITABLE.format(body='"two"'))  # a constant changed
    assert progs.run("f=7", path=p) == {"f": [[7, "two"], [0, 1]]}
    progs.project("p", EDITABLE.format(body='"two".upper()'))  # a call added
    assert progs.run("f=7", path=p) == {"f": [[7, "TWO"], [0, 1]]}
    progs.project("p", EDITABLE.replace("(x):", "(x, y=2):").format(body="y"))  # a default
    assert progs.run("f=7", path=p) == {"f": [[7, 2], [0, 1]]}
    progs.project("p", EDITABLE.replace("(x):", "(x, y=3):").format(body="y"))
    assert progs.run("f=7", path=p) == {"f": [[7, 3], [0, 1]]}
    progs.project("p", EDITABLE.format(body='"two"'))  # back: its entries were dropped, not kept
    assert progs.run("f=7", path=p) == {"f": [[7, "two"], [0, 1]]}


def test_opting_out_of_the_code_hash_keeps_results_across_edits(progs: Programs) -> None:
    for opt in ("hash_code=False", "version='2026-12'"):
        src = EDITABLE.replace("@mmap_cached", f"@mmap_cached({opt})")
        p = progs.project(f"p{len(opt)}", src.format(body='"one"'))
        assert progs.run("f=7", path=p) == {"f": [[7, "one"], [0, 1]]}
        progs.project(f"p{len(opt)}", src.format(body='"two"'))
        assert progs.run("f=7", path=p) == {"f": [[7, "one"], [1, 0]]}, opt  # as asked: kept


SCRIPT = """
import json, sys
from mmcache import mmap_cached

@mmap_cached
def where(x):
    return [x, __file__]

print(json.dumps([where(1), list(where.cache_info())[:2]]))
"""


def test_a_symlinked_checkout_and_its_real_path_hit_the_same_entries(progs: Programs, tmp_path: Path) -> None:
    real = progs.project("real", UTILS.format(n=1))
    (real / "script.py").write_text(SCRIPT)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    assert progs.run("compute=1", path=link) == {"compute": [2, [0, 1]]}
    assert progs.run("compute=1", path=real) == {"compute": [2, [1, 0]]}
    first = progs.run(script=link / "script.py")  # __main__: the script's real path
    assert first == [[1, str(link / "script.py")], [0, 1]]
    assert progs.run(script=real / "script.py") == [[1, str(link / "script.py")], [1, 0]]
    other = progs.project("other", "")
    (other / "script.py").write_text(SCRIPT)  # another script with the same code: its own table
    assert progs.run(script=other / "script.py") == [[1, str(other / "script.py")], [0, 1]]


SPAWN = """
import json, multiprocessing as mp, os
from mmcache import mmap_cached

@mmap_cached
def square(x):
    return [x * x, os.getpid()]

def child(x):
    return [square(x), list(square.cache_info())[:2]]

if __name__ == "__main__":
    parent = square(4)
    with mp.get_context("spawn").Pool(1) as pool:
        got, info = pool.apply(child, (4,))
    print(json.dumps([got == parent, info]))
"""


def test_a_spawned_child_shares_its_scripts_functions(progs: Programs) -> None:
    p = progs.project("spawn", SPAWN)
    assert progs.run(script=p / "utils.py") == [True, [1, 0]]  # the child's call: a hit


FIB = """
import functools, json, sys
from mmcache import mmap_cached

@mmap_cached
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

@functools.lru_cache
def lru_fib(n):
    return n if n < 2 else lru_fib(n - 1) + lru_fib(n - 2)

n = int(sys.argv[1])
print(json.dumps([str(fib(n)), str(lru_fib(n)), list(fib.cache_info())[:2]]))
"""


def test_cold_memoised_fib_300_works(progs: Programs) -> None:
    p = progs.project("fib", FIB)
    assert progs.run("300", script=p / "utils.py")[2] == [298, 301]  # the default recursion limit
    hot = progs.run("300", script=p / "utils.py")
    assert hot[0] == hot[1] == "222232244629420445529739893461909967206666939096499764990979600"
    assert hot[2] == [1, 0]


SELF = """
import json, os, sys, threading, time
from mmcache import mmap_cached

runs = []

@mmap_cached(ignore=("depth",), lock_timeout=None)  # a wait on its own lease would never end
def f(x, depth=0):
    runs.append(depth)
    return f(x, depth + 1) if depth < 3 else [x, depth]

results = []
threads = [threading.Thread(target=lambda: results.append(f(int(sys.argv[1])))) for _ in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps([results, sorted(runs), list(f.cache_info())[:2]]))
"""


def test_self_recursion_with_equal_arguments_does_not_wait(progs: Programs) -> None:
    p = progs.project("selfcall", SELF.replace("runs.append(depth)", "runs.append(depth); time.sleep(0.2)"))
    with ThreadPoolExecutor(2) as pool:  # two processes of three threads each, at once
        outs = list(pool.map(lambda _: progs.run("5", script=p / "utils.py", timeout=60), range(2)))
    assert [o[0] for o in outs] == [[[5, 3]] * 3] * 2
    # One thread of one process computed (the others waited for its result): one run of each depth.
    assert sorted(outs[0][1] + outs[1][1]) == [0, 1, 2, 3]
    assert progs.run("5", script=p / "utils.py", timeout=60) == [[[5, 3]] * 3, [], [3, 0]]


def test_closure_rebinding_gives_fresh_results(tmp_path: Path) -> None:
    n = 10

    @mmap_cached(path=tmp_path)
    def add(x: int) -> int:
        return x + n

    assert add(0) == 10
    n = 15
    assert add(0) == 15  # not the 10 computed under n = 10
    n = 10
    assert add(0) == 10 and add.cache_info().hits == 1
    a, b, c, e = 1, 2, 3, [4]

    @mmap_cached(path=tmp_path)
    def many(x: int) -> int:  # more cells than the unrolled checks take
        return x + a + b + c + e[0]

    assert many(0) == 10
    e = [40]
    assert many(0) == 46 and many.cache_info() == (0, 2, None, 2)

    def make(lock: Any) -> Any:
        @mmap_cached(path=tmp_path)
        def rec(k: int) -> int:  # captures itself (empty at decoration) and a lock (a resource)
            with lock:
                return 0 if k == 0 else 1 + rec(k - 1)

        return rec

    r1, r2 = make(threading.RLock()), make(threading.RLock())
    assert r1(50) == 50 and r2(50) == 50 and r2.cache_info().hits == 1  # keyed alike: rec by its id


def test_old_entries_are_never_served_under_the_new_identity(tmp_path: Path) -> None:
    """A table of the previous scheme (``k1``: keys by module:qualname, an
    empty tag) at the very file a ``name=`` now maps to is emptied, not read."""

    def f(x: int) -> str:
        return "new"

    old_key = ArgKeyer(f, version=None).key((1,), {})  # the k1 key of f(1)
    path = table_path(str(tmp_path), "shared")
    with MmapCache(path, 1024, 56, 24, eviction="lru") as old:
        old.put(TAG_KEY, b"")
        old.put(old_key, b"planted")
    new = mmap_cached(path=tmp_path, name="shared")(f)
    assert new.cache_parameters()["path"] == path
    assert new.__cache_key__(1) != old_key
    assert new(1) == "new" and new.cache_info() == (0, 1, None, 1)
    with MmapCache.open(path) as t:
        assert t.get(old_key) is None
        assert t.get(TAG_KEY) == new.cache_parameters()["key_version"].encode() + RECORDED


def test_prune_removes_only_tables_of_an_older_key_scheme(tmp_path: Path) -> None:
    cache = tmp_path / "cache"

    @mmap_cached(path=cache)
    def current(x: int) -> int:
        return x

    current(1)
    old = []
    for table_id, tag in (("m:f", b""), ("m:g", b"v=1|code=0123456789abcdef")):  # k1 tags
        path = table_path(str(cache), table_id)
        with MmapCache(path, 1024, 56, 24) as t:
            t.put(TAG_KEY, tag)
            t.put(b"k" * 16, b"x" * 5000)  # a heap segment too
        old.append(path)
    with MmapCache(cache / "mine-0123456789abcdef", 64) as plain:  # an MmapCache user's table
        plain.put(TAG_KEY.upper(), b"")
    (cache / "link-fedcba9876543210").symlink_to(old[0])  # untrusted directory: not followed
    before = sorted(os.listdir(cache))
    assert len([n for n in before if n.startswith(os.path.basename(old[0]))]) >= 3  # index, heap, lock...

    def prune(*extra: str) -> list[str]:
        cmd = [sys.executable, "-m", "mmcache", "prune-decorator-tables", str(cache), *extra]
        p = subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)}
        )
        assert p.returncode == 0, p.stderr
        return p.stdout.splitlines()

    dry = prune("--dry-run")
    assert [line.split()[:3] for line in dry[:-1]] == [["would", "remove", p] for p in sorted(old)]
    assert "key scheme k1, now k2" in dry[0] and dry[-1].startswith("2 stale decorator table(s)")
    assert sorted(os.listdir(cache)) == before
    done = prune()
    assert [line.split()[:2] for line in done[:-1]] == [["removed", p] for p in sorted(old)]
    left = sorted(os.listdir(cache))
    assert not [n for n in left if any(n.startswith(os.path.basename(p)) for p in old)]
    assert "mine-0123456789abcdef" in left and "link-fedcba9876543210" in left
    assert os.path.exists(current.cache_parameters()["path"])
    assert current(1) == 1 and current.cache_info().hits == 1  # the current table is untouched
    assert prune()[-1].startswith("0 stale decorator table(s)")


def test_async_self_recursion_with_equal_arguments_does_not_wait(tmp_path: Path) -> None:
    import asyncio

    runs: list[int] = []

    @mmap_cached(path=tmp_path, ignore=("depth",), lock_timeout=None)
    async def f(x: int, depth: int = 0) -> list[int]:
        runs.append(depth)
        await asyncio.sleep(0.01)
        return await f(x, depth + 1) if depth < 3 else [x, depth]

    async def main() -> list[Any]:
        # Two tasks on one key: the second waits for the first (not re-entrant: another task).
        return await asyncio.wait_for(asyncio.gather(f(5), f(5)), timeout=60)  # a hang guard

    assert asyncio.run(main()) == [[5, 3], [5, 3]]
    assert runs == [0, 1, 2, 3]
