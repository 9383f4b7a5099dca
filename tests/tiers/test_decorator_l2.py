"""``@mmap_cached(l2=...)``: results shared between hosts through a real redis-server.

A "host" is a process with its own L1 directory (``_decorator_l2_workers``);
every run of a function appends a line to a count file, so "the function did
not run on B" is a line count. A few tests run two "hosts" in this process
instead: the same function decorated twice over two directories. Nothing is
mocked: the server is started here, killed with SIGKILL and restarted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

redis = pytest.importorskip("redis", reason="redis-py is not installed (pip install redis)")

from support.helpers import read_reply, wait_until  # noqa: E402
from support.redis_server import RedisServer, redis_server  # noqa: E402

from mmcache import MmapCache, mmap_cached  # noqa: E402
from mmcache.l2 import RedisL2  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests" / "tiers"
BOUND = 1.0  # seconds within which a refresh or a clear must reach another host


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    yield from redis_server()


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A server this test may kill and restart."""
    yield from redis_server()


# ------------------------------------------------------------------ hosts
class HostError(Exception):
    pass


class Host:
    """One process on L1 directory ``l1``: ``call(op, fn, *args)`` runs there."""

    def __init__(self, url: str, l1: Path, run_dir: Path, name: str) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "MMCACHE_DIR": str(l1),
            "DECO_L2_URL": url,
            "DECO_COUNT_FILE": str(run_dir / "counts"),
            "DECO_SOURCE": str(run_dir / "source"),
        }
        self.log = run_dir / f"{name}.log"
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "import _decorator_l2_workers as w; w.main()"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env,
            )
        self.pid = self._read(30)["ready"]

    def _read(self, timeout: float) -> dict[str, Any]:
        return read_reply(self.proc, timeout, ":\n" + self.stderr())

    def call(self, op: str, fn: str, *args: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, "fn": fn, "args": args}) + "\n")
        self.proc.stdin.flush()
        r = self._read(30)
        if "error" in r:
            raise HostError(r["error"], r["message"])
        return r["ok"]

    def error(self, op: str, fn: str, *args: Any) -> list[str]:
        """The class names (MRO) of what ``op`` raised there."""
        with pytest.raises(HostError) as e:
            self.call(op, fn, *args)
        names: list[str] = e.value.args[0]
        return names

    def wait_listening(self, fn: str, timeout: float = 10) -> None:
        wait_until(lambda: self.call("status", fn)["connected"], timeout, f"{fn}'s listener on {self.pid}")

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Callable[..., Host]]:
    """``hosts(url, "a")`` starts a process on L1 directory ``tmp_path/a``."""
    started: list[Host] = []

    def start(url: str, name: str) -> Host:
        h = Host(url, tmp_path / name, tmp_path, f"{name}-{len(started)}")
        started.append(h)
        return h

    yield start
    for h in started:
        h.close()


def runs(tmp_path: Path, fn: str) -> list[int]:
    """The pids that ran ``fn``, in order."""
    counts = tmp_path / "counts"
    lines = counts.read_text().split("\n") if counts.exists() else []
    return [int(pid) for name, pid in (line.split() for line in lines if line) if name == fn]


def listening(a: Host, b: Host, *fns: str) -> None:
    """Wait for each function's listener on both hosts. Its first subscription
    may empty the host's L1 (a refresh of an earlier test changed the token):
    fill L1 after it."""
    for fn in fns:
        a.wait_listening(fn)
        b.wait_listening(fn)


def set_source(tmp_path: Path, text: str) -> None:
    (tmp_path / "source").write_text(text)


# ------------------------------------------------------- across processes
def test_result_computed_on_one_host_is_a_hit_on_another(
    server: RedisServer, hosts: Any, tmp_path: Path
) -> None:
    a, b = hosts(server.url, "a"), hosts(server.url, "b")
    listening(a, b, "shared")
    first = a.call("call", "shared", 1)
    assert first["by"] == a.pid and runs(tmp_path, "shared") == [a.pid]
    assert b.call("l1_has", "shared", 1) is False
    assert b.call("call", "shared", 1) == first  # from Redis: B did not run it
    assert runs(tmp_path, "shared") == [a.pid]
    assert b.call("l1_has", "shared", 1) is True  # and now in B's own L1
    assert b.call("call", "shared", 1) == first
    assert b.call("info", "shared") == [2, 0, None, 1]  # hits, misses, maxsize, currsize (no guard entries)
    assert b.call("time_calls", "shared", 1, 2000) < 50e-6  # an L1 hit: no round trip
    with redis.Redis.from_url(server.url) as r:  # one listener per host and function
        channels = r.pubsub_channels(b"mmcache:fn:*shared*")
        assert len(channels) == 1 and r.pubsub_numsub(channels[0])[0][1] == 2


def test_refresh_on_one_host_reaches_the_other(server: RedisServer, hosts: Any, tmp_path: Path) -> None:
    a, b = hosts(server.url, "a"), hosts(server.url, "b")
    listening(a, b, "shared")
    set_source(tmp_path, "v1")
    assert a.call("call", "shared", 2)["source"] == "v1"
    assert b.call("call", "shared", 2)["source"] == "v1"  # B holds v1 in its L1
    set_source(tmp_path, "v2")
    assert a.call("refresh", "shared", 2)["source"] == "v2"
    elapsed = b.call("wait_value", "shared", 2, "source", "v2", 5)
    assert elapsed is not None and elapsed < BOUND, elapsed
    assert a.call("call", "shared", 2)["source"] == "v2"
    assert runs(tmp_path, "shared") == [a.pid, a.pid]  # B never ran it: v2 came from Redis


def test_cache_clear_on_one_host_clears_the_other(server: RedisServer, hosts: Any, tmp_path: Path) -> None:
    a, b = hosts(server.url, "a"), hosts(server.url, "b")
    listening(a, b, "shared")
    a.call("call", "shared", 3)
    b.call("call", "shared", 3)
    assert b.call("l1_has", "shared", 3) is True
    a.call("clear", "shared")
    elapsed = b.call("wait_l1_gone", "shared", 3, 5)
    assert elapsed is not None and elapsed < BOUND, elapsed
    assert b.call("call", "shared", 3)["by"] == b.pid  # gone from Redis too: B computes
    assert runs(tmp_path, "shared") == [a.pid, b.pid]


def test_restarted_host_keeps_l1_unless_it_missed_a_change(
    own_server: RedisServer, hosts: Any, tmp_path: Path
) -> None:
    """No announcement missed: a host's L1 survives its restart. A refresh
    made while no process of the host listened: L1 is emptied on resubscription."""
    url = own_server.url
    set_source(tmp_path, "v1")
    a, b = hosts(url, "a"), hosts(url, "b")
    listening(a, b, "shared")
    a.call("call", "shared", 5)
    b.call("call", "shared", 5)
    b.close()
    with redis.Redis.from_url(url) as r:  # B's next answer can then only come from its L1
        values = [k for k in r.scan_iter(b"mmcache:fn:*") if k.count(b":") >= 3]
        assert len(values) == 1 and r.delete(*values) == 1
    b = hosts(url, "b")
    b.wait_listening("shared")
    assert b.call("call", "shared", 5) == {"x": 5, "source": "v1", "by": a.pid}
    assert runs(tmp_path, "shared") == [a.pid]
    b.close()

    set_source(tmp_path, "v2")
    a.call("refresh", "shared", 5)  # B has no listener now
    b = hosts(url, "b")
    b.wait_listening("shared")  # its first subscription saw a new token: L1 emptied
    assert b.call("call", "shared", 5) == {"x": 5, "source": "v2", "by": a.pid}
    assert runs(tmp_path, "shared") == [a.pid, a.pid]


def test_redis_killed_then_restarted(own_server: RedisServer, hosts: Any, tmp_path: Path) -> None:
    url = own_server.url
    set_source(tmp_path, "v1")
    a, b = hosts(url, "a"), hosts(url, "b")
    listening(a, b, "logged", "strict")
    before = a.call("call", "logged", 1)
    assert b.call("call", "logged", 1) == before  # through Redis
    a.call("call", "strict", 1)
    assert b.call("call", "strict", 1)["by"] == a.pid

    own_server.kill()
    # Reads: L1 hits keep working, misses compute here.
    assert b.call("call", "logged", 1) == before and b.call("call", "strict", 1)["by"] == a.pid
    assert b.call("call", "logged", 2)["by"] == b.pid  # write failure logged, result returned
    assert "Redis failed during" in b.stderr()
    # l2_errors="raise": the write raises, but the result is in L1 and stays there.
    assert "ConnectionError" in b.error("call", "strict", 2)
    assert b.call("call", "strict", 2)["by"] == b.pid
    assert runs(tmp_path, "strict") == [a.pid, b.pid]
    set_source(tmp_path, "v2")
    assert b.call("refresh", "logged", 1)["source"] == "v2"  # logged; L1 has the new value
    assert b.call("call", "logged", 1)["source"] == "v2"
    assert "ConnectionError" in b.error("clear", "strict")
    assert b.call("l1_has", "strict", 2) is False  # the clear is local too
    wait_until(lambda: not b.call("status", "logged")["connected"], 5, "B's listener to notice")

    own_server.restart()
    b.wait_listening("logged")
    for x, source in ((1, "v2"), (2, "v1")):  # nothing stored locally was lost
        assert b.call("call", "logged", x)["source"] == source
    n = runs(tmp_path, "logged")
    assert n == [a.pid, b.pid, b.pid]

    def shared_again() -> bool:  # A's first write may still meet a dead pooled connection
        x = 100 + len(runs(tmp_path, "logged"))
        a.call("call", "logged", x)
        return bool(b.call("call", "logged", x)["by"] == a.pid)

    wait_until(shared_again, 5, "results to be shared again")


# ------------------------------------------------------------ in-process
CALLS: list[Any] = []


def twice(server: RedisServer, tmp_path: Path, l2s: list[Any], **opts: Any) -> list[Any]:
    """The same function (one identity) on one L1 directory per entry of ``l2s``."""

    def make(directory: Path, l2: Any) -> Any:
        def work(x: int) -> dict[str, Any]:
            CALLS.append(x)
            return {"x": x, "n": len(CALLS)}

        return mmap_cached(path=directory, l2=l2, **opts)(work)

    CALLS.clear()
    opts.setdefault("version", tmp_path.name)  # keys of its own in the shared server
    return [make(tmp_path / f"host{i}", l2) for i, l2 in enumerate(l2s)]


def test_l2_accepts_a_url_a_client_and_a_redisl2(server: RedisServer, tmp_path: Path) -> None:
    client = redis.Redis.from_url(server.url)
    f1, f2, f3 = twice(server, tmp_path, [server.url, client, RedisL2(client, "any", retry_after=0.1)])
    assert f1(1) == f2(1) == f3(1) == {"x": 1, "n": 1}
    assert CALLS == [1]
    assert [f.cache_info()[:2] for f in (f1, f2, f3)] == [(0, 1), (1, 0), (1, 0)]
    assert f3.cache_info().currsize == 1
    name = os.path.basename(f1.cache_parameters()["path"]).encode()
    stored = client.get(b"mmcache:fn:" + name + b":" + f1.__cache_key__(1))
    assert stored is not None and pickle.loads(stored) == {"x": 1, "n": 1}
    assert f2.cache_parameters()["l2"] is client and f1.cache_parameters()["l2_errors"] == "log"


def test_bad_l2_arguments(server: RedisServer) -> None:
    def f(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="l2= takes"):
        mmap_cached(l2=42)(f)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="l2= takes"):
        mmap_cached(l2=redis.asyncio.Redis.from_url(server.url))(f)
    with pytest.raises(ValueError, match="must start with redis://"):
        mmap_cached(l2="localhost:6379")(f)
    with pytest.raises(ValueError, match="decode_responses"):
        mmap_cached(l2=redis.Redis.from_url(server.url, decode_responses=True))(f)
    with pytest.raises(ValueError, match="l2_errors"):
        mmap_cached(l2=server.url, l2_errors="ignore")(f)  # type: ignore[call-overload]


def test_ttl_is_carried_from_redis_into_l1(server: RedisServer, tmp_path: Path) -> None:
    f1, f2 = twice(server, tmp_path, [server.url, server.url], ttl=30)
    f1(1)
    time.sleep(0.2)
    assert f2(1)["n"] == 1
    entry = MmapCache.open(f2.cache_parameters()["path"]).get_entry(f2.__cache_key__(1))
    assert entry is not None and entry.expire_ns is not None
    assert 29.0 < (entry.expire_ns - time.time_ns()) / 1e9 < 29.9  # its remaining TTL in Redis


def test_stale_result_in_redis_is_recomputed_not_served_as_fresh(server: RedisServer, tmp_path: Path) -> None:
    f1, f2 = twice(server, tmp_path, [server.url, server.url], ttl=0.3, stale_ttl=30)
    f1(1)
    time.sleep(0.4)
    assert f2(1)["n"] == 2  # older than ttl= in Redis: B computes
    assert f1(1)["n"] == 1  # A serves its stale copy and revalidates in the background


def test_secret_signs_results_in_redis(server: RedisServer, tmp_path: Path) -> None:
    f1, f2 = twice(server, tmp_path, [server.url, server.url], secret="s3cret")
    f1(1)
    assert f2(1)["n"] == 1  # a signed value from another host is a hit
    name = os.path.basename(f1.cache_parameters()["path"]).encode()
    rkey = b"mmcache:fn:" + name + b":" + f1.__cache_key__(2)
    client = redis.Redis.from_url(server.url)
    client.set(rkey, pickle.dumps({"x": 2, "n": "planted"}))  # no signature
    assert f2(2)["n"] == 2
    forged = hashlib.blake2b(b"x", digest_size=16).digest() + pickle.dumps({"x": 3, "n": "planted"})
    client.set(rkey[:-16] + f1.__cache_key__(3), forged)
    assert f2(3)["n"] == 3


def test_async_function_shares_through_redis(server: RedisServer, tmp_path: Path) -> None:
    def make(directory: Path) -> Any:
        async def awork(x: int) -> int:
            CALLS.append(x)
            await asyncio.sleep(0)
            return x * 10

        return mmap_cached(path=directory, l2=server.url, version=tmp_path.name)(awork)

    CALLS.clear()
    a1, a2 = make(tmp_path / "a"), make(tmp_path / "b")

    async def scenario() -> None:
        assert await a1(4) == 40
        assert await a2(4) == 40  # from Redis
        assert await a2.refresh(4) == 40

    asyncio.run(scenario())
    assert CALLS == [4, 4]
