"""``@mmap_cached(tags=...)``: group invalidation of results, in one process
(threads) and across real processes, and the tag table it shares."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import mmcache
from mmcache import MmapCache, mmap_cached
from mmcache.decorators._tagging import TAG_TABLE

ROOT = Path(__file__).resolve().parents[2]


def _sets(directory: Path) -> int:
    with MmapCache.open(str(directory / TAG_TABLE)) as t:
        return int(t.get_stats()["sets"])


def test_static_tags_reach_every_function_of_the_directory(tmp_path: Path) -> None:
    calls: list[str] = []

    @mmap_cached(path=tmp_path, tags=["users"])
    def profile(uid: int) -> str:
        calls.append(f"p{uid}")
        return f"profile {uid}"

    @mmap_cached(path=tmp_path, tags=("users", "lists"))
    def listing() -> list[int]:
        calls.append("l")
        return [1, 2]

    @mmap_cached(path=tmp_path)
    def untagged(x: int) -> int:
        calls.append(f"u{x}")
        return x

    for _ in range(2):
        assert profile(1) == "profile 1" and listing() == [1, 2] and untagged(1) == 1
    assert calls == ["p1", "l", "u1"]
    assert mmcache.invalidate_tags("users", path=tmp_path) == 1
    assert profile(1) == "profile 1" and listing() == [1, 2] and untagged(1) == 1
    assert calls == ["p1", "l", "u1", "p1", "l"]  # both tagged functions missed; the untagged one hit
    assert profile.invalidate_tags("lists") == 1  # f.invalidate_tags: the same, in f's directory
    assert profile(1) == "profile 1" and listing() == [1, 2]
    assert calls[5:] == ["l"]
    assert profile.cache_info().hits == 2 and listing.cache_info().misses == 3


def test_tags_from_the_arguments_and_no_tags_for_some_calls(tmp_path: Path) -> None:
    calls: list[int] = []

    @mmap_cached(path=tmp_path, tags=lambda uid, verbose=False: [f"user:{uid}"] if uid else [])
    def orders(uid: int, verbose: bool = False) -> list[int]:
        calls.append(uid)
        return [uid] * 2

    for uid in (0, 1, 2, 0, 1, 2):
        assert orders(uid) == [uid] * 2
    assert calls == [0, 1, 2]
    mmcache.invalidate_tags("user:1", "user:99", path=tmp_path)
    for uid in (0, 1, 2):
        orders(uid)
    assert calls == [0, 1, 2, 1]  # only user:1's result; uid 0 had no tags: a plain entry
    assert orders.refresh(2) == [2, 2] and calls[-1] == 2  # refresh stores with current tokens
    orders(2)
    assert calls == [0, 1, 2, 1, 2]


def test_invalidation_is_one_put_per_tag_whatever_the_number_of_results(tmp_path: Path) -> None:
    @mmap_cached(path=tmp_path, tags=["big"])
    def f(x: int) -> int:
        return x

    for i in range(300):
        f(i)
    before = _sets(tmp_path)
    assert mmcache.invalidate_tags("big", path=tmp_path) == 1
    assert _sets(tmp_path) - before == 1  # O(1): one token written, no result touched
    assert f.cache_info().currsize == 300  # the stale results stay until evicted or expired
    f(7)
    assert f.cache_info().misses == 301


def test_an_invalidation_during_the_computation_leaves_the_result_a_miss(tmp_path: Path) -> None:
    """Tokens are taken before the function runs: a result computed from data
    that changed meanwhile is returned once, never served from the cache."""
    calls: list[int] = []

    @mmap_cached(path=tmp_path, tags=["prices"])
    def price(x: int) -> int:
        calls.append(x)
        if len(calls) == 1:
            mmcache.invalidate_tags("prices", path=tmp_path)  # the data changed while we read it
        return x * 10

    assert price(1) == 10
    assert price(1) == 10 and price(1) == 10
    assert calls == [1, 1]  # recomputed once after the mid-computation invalidation, then hits


def test_threads_invalidating_while_others_read(tmp_path: Path) -> None:
    """A reader never gets a result older than the last invalidation that
    had returned when it called: each result is the generation it was
    computed at (the data is changed, then its tag invalidated)."""
    generation, done = [0], [0]

    @mmap_cached(path=tmp_path, tags=lambda k: ["gen"], lock_timeout=5)
    def current(k: int) -> int:
        return generation[0]

    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen = done[0]
            got = current(1)
            if got < seen:
                errors.append(f"stale {got} < {seen}")

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(50):
        generation[0] += 1
        mmcache.invalidate_tags("gen", path=tmp_path)
        done[0] = generation[0]
        time.sleep(0.002)
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors
    assert current(1) == generation[0]


def test_stale_ttl_never_serves_an_invalidated_result_and_async_functions(tmp_path: Path) -> None:
    calls: list[str] = []

    @mmap_cached(path=tmp_path, ttl=60, stale_ttl=60, tags=["t"])
    def swr(x: int) -> int:
        calls.append("swr")
        return len(calls)

    @mmap_cached(path=tmp_path, tags=lambda x: [f"a{x}"])
    async def afn(x: int) -> int:
        calls.append("async")
        return len(calls)

    async def run_async() -> list[int]:
        return [await afn(1), await afn(1)]

    assert swr(1) == swr(1) == 1
    assert asyncio.run(run_async()) == [2, 2]
    mmcache.invalidate_tags("t", "a1", path=tmp_path)
    assert swr(1) == 3  # recomputed at once, not served stale
    assert asyncio.run(run_async()) == [4, 4]
    assert calls == ["swr", "async", "swr", "async"]


def test_changing_the_tags_never_serves_results_stored_with_the_old_ones(tmp_path: Path) -> None:
    def make(tags: Any) -> Any:
        def f(x: int) -> str:
            return f"tags {tags}"

        return mmap_cached(path=tmp_path, name="shared-f", tags=tags)(f)

    a, b, plain = make(["a"]), make(["b"]), make(None)
    assert a.cache_parameters()["path"] == b.cache_parameters()["path"] == plain.cache_parameters()["path"]
    assert len({a.__cache_key__(1), b.__cache_key__(1), plain.__cache_key__(1)}) == 3
    assert a(1) == "tags ['a']" and b(1) == "tags ['b']" and plain(1) == "tags None"
    mmcache.invalidate_tags("b", path=tmp_path)
    assert b(1) == "tags ['b']" and b.cache_info().misses == 2
    assert a(1) == "tags ['a']" and a.cache_info().hits == 1


def test_bad_tags_are_refused_with_nothing_stored(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="tags="):
        mmap_cached(path=tmp_path, tags="users")  # a lone str would be split into letters
    with pytest.raises(TypeError, match="tags="):
        mmap_cached(path=tmp_path, tags=[1])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="tags="):
        mmap_cached(path=tmp_path, tags=["x" * 201])
    with pytest.raises(ValueError, match="l2="):
        mmap_cached(path=tmp_path, tags=["a"], l2="redis://localhost:1/0")
    ran: list[Any] = []

    @mmap_cached(path=tmp_path, tags=lambda x: x)
    def f(x: Any) -> int:
        ran.append(x)
        return 1

    with pytest.raises(TypeError, match="tags= gave 'abc'"):
        f("abc")
    with pytest.raises(ValueError, match="tags= gave"):
        f([""])
    assert ran == [] and f.cache_info().currsize == 0  # refused before running, nothing stored
    assert f(["ok"]) == 1 and f(["ok"]) == 1 and ran == [["ok"]]


def test_a_lost_tag_table_only_turns_hits_into_misses(tmp_path: Path) -> None:
    code = """
        import sys
        from mmcache import mmap_cached
        calls = []
        @mmap_cached(path=sys.argv[1], name="lost", tags=["t"])
        def f(x):
            calls.append(x)
            return x
        f(1); f(1)
        print(len(calls))
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run() -> str:
        cmd = [sys.executable, "-c", textwrap.dedent(code), str(tmp_path)]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=60).stdout

    assert run().strip() == "1"
    assert run().strip() == "0"  # a hit in a new process
    for name in os.listdir(tmp_path):
        if name.startswith(TAG_TABLE):
            os.unlink(tmp_path / name)  # every token gone
    assert run().strip() == "1"  # no token matches: a miss, never the old value
    assert run().strip() == "0"


# ------------------------------------------------------------- across processes
APP = '''
"""Two tagged functions; a child serving commands on stdin (one JSON line each)."""
import json, os, sys, threading
import mmcache
from mmcache import mmap_cached

def count(name):
    fd = os.open(os.environ["COUNT_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, f"{name} {os.getpid()}\\n".encode())
    os.close(fd)

@mmap_cached(tags=lambda uid: [f"user:{uid}"])
def profile(uid):
    count("profile")
    return {"uid": uid}

@mmap_cached(tags=lambda uid: [f"user:{uid}", "orders"])
def orders(uid):
    count("orders")
    return [uid] * 3

def serve():
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "call":  # each function, each uid, from 4 threads at once
            out = []
            def work():
                for uid in map(int, args):
                    out.append((profile(uid)["uid"], orders(uid)[0]) == (uid, uid))
            threads = [threading.Thread(target=work) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            print(json.dumps(all(out)), flush=True)
        elif cmd == "inv":
            print(json.dumps(mmcache.invalidate_tags(*args)), flush=True)
'''


class Server:
    def __init__(self, tmp_path: Path) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}",
            "MMCACHE_DIR": str(tmp_path / "cache"),
            "COUNT_FILE": str(tmp_path / "counts"),
        }
        cmd = [sys.executable, "-c", "import tagged_app; tagged_app.serve()"]
        self.p = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )

    def __call__(self, line: str) -> Any:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        out = self.p.stdout.readline()
        assert out, self.p.stderr.read() if self.p.stderr else "child died"
        return out.strip()

    def close(self) -> None:
        if self.p.stdin is not None:
            self.p.stdin.close()
        try:
            self.p.wait(30)
        finally:
            if self.p.poll() is None:
                self.p.kill()
                self.p.wait()


def test_invalidation_reaches_running_processes_at_once(tmp_path: Path) -> None:
    (tmp_path / "tagged_app.py").write_text(APP)
    counts = tmp_path / "counts"

    def computed() -> list[str]:
        return [line.split()[0] for line in counts.read_text().splitlines()] if counts.exists() else []

    a, b = Server(tmp_path), Server(tmp_path)
    try:
        assert a("call 1 2 3") == "true"
        assert sorted(computed()) == ["orders"] * 3 + ["profile"] * 3  # once per key, 4 threads asking
        assert b("call 1 2 3") == "true" and len(computed()) == 6  # hits in the other process
        assert a("inv user:2") == "1"
        assert b("call 1 2 3") == "true"  # b has both tables open: the check is on every read
        assert sorted(computed()[6:]) == ["orders", "profile"]  # user:2's results only
        assert b("inv orders") == "1"
        assert a("call 1 2 3") == "true"
        assert sorted(computed()[8:]) == ["orders"] * 3  # every orders result, no profile
        assert a("call 1 2 3") == "true" and b("call 1 2 3") == "true" and len(computed()) == 11
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("cut", [0, 1, 5, 9, 10, 13, 14, 15])  # the head is 16 bytes
def test_a_damaged_envelope_is_a_miss_never_an_error(tmp_path: Path, cut: int) -> None:
    """Files are untrusted: ``Tags.value_of`` (the decorator's read) on a cut
    or altered envelope is None."""
    from mmcache.tags import TAGGED, Tags

    tags = Tags(MmapCache(str(tmp_path / "t"), size=4096))
    data, flags = tags.wrap(b"payload", 1, ["abc"])
    assert flags == 1 | TAGGED and tags.value_of(data) == b"payload"
    assert tags.value_of(data[:cut]) is None
    bad_len = data[:9] + b"\xff" + data[10:]  # a name length past the end
    zero = b"\x00" + data[1:]  # no tags
    nested = data[:-9] + (1 | TAGGED).to_bytes(2, "little") + b"payload"  # inner flags claim an envelope
    assert tags.value_of(bad_len) is None and tags.value_of(zero) is None and tags.value_of(nested) is None


def test_large_tagged_results(tmp_path: Path) -> None:
    @mmap_cached(path=tmp_path, tags=["big"])
    def big(n: int) -> bytes:
        return b"x" * n

    assert big(1 << 20) == big(1 << 20) and big.cache_info().hits == 1
    mmcache.invalidate_tags("big", path=tmp_path)
    assert len(big(1 << 20)) == 1 << 20 and big.cache_info().misses == 2
