"""TieredCacheBackend and mmcache.l2 in one process, against a real redis-server.

What the backend promises call by call: where a read is answered, what a
write does to L1, what Redis decides, what happens when Redis is not there,
and the guard that keeps a late fill from undoing an invalidation. The
multi-host behaviour (processes, kills, restarts) is in
``test_tiered_hosts.py``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

django = pytest.importorskip("django", reason="Django is not installed (pip install mmcache[django])")

from django.conf import settings  # noqa: E402
from support.helpers import configure_django  # noqa: E402

configure_django()

import redis  # noqa: E402
from django.core.cache import caches  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.test import override_settings  # noqa: E402
from support.helpers import run_py  # noqa: E402
from support.redis_server import RedisServer, free_port, redis_server  # noqa: E402

from mmcache import MmapCache  # noqa: E402
from mmcache.contrib.django import TieredCacheBackend, _invalidation  # noqa: E402
from mmcache.l2 import HostSubscriber, L2Unavailable, RedisL2, guard  # noqa: E402

TIERED = "mmcache.contrib.django.TieredCacheBackend"
REDIS = "django.core.cache.backends.redis.RedisCache"
CHANNEL = "mmcache:invalidate:"


def caches_for(url: str, l1: Path, **options: Any) -> dict[str, Any]:
    return {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "redis": {"BACKEND": REDIS, "LOCATION": url},
        "tiered": {"BACKEND": TIERED, "LOCATION": str(l1), "OPTIONS": {"L2": "redis", **options}},
    }


def wait_until(pred: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def fill_l1(c: TieredCacheBackend, key: str, value: Any) -> None:
    """Read until L1 holds ``key`` for good (the write's own announcement,
    arriving after a first fill, removes that fill)."""

    def filled() -> bool:
        if c.get(key) != value:
            return False
        time.sleep(0.02)
        return c.l1_has_key(key)

    wait_until(filled, what=f"{key!r} to stay in L1")


def l1_entry(c: TieredCacheBackend, key: str) -> Any:
    return c._l1.table.get_entry(c.make_key(key))


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    yield from redis_server()


@pytest.fixture
def raw(server: RedisServer) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(server.url)
    r.flushdb()
    yield r
    r.close()


@pytest.fixture
def cache(server: RedisServer, raw: redis.Redis, tmp_path: Path) -> Iterator[TieredCacheBackend]:
    """The tiered alias, its subscriber connected (its first subscription clears L1)."""
    with override_settings(CACHES=caches_for(server.url, tmp_path / "l1", L1_TIMEOUT=30)):
        c = caches["tiered"]
        assert isinstance(c, TieredCacheBackend)
        wait_until(lambda: c.get_stats()["subscriber_connected"], what="the subscriber")
        yield c
    _invalidation.stop_all()


# ------------------------------------------------------------------ reads
def test_a_read_fills_l1_and_later_reads_are_served_from_it(cache: TieredCacheBackend, raw: Any) -> None:
    cache.set("k", {"a": [1, 2]})
    assert not cache.l1_has_key("k")  # writes never fill L1
    fill_l1(cache, "k", {"a": [1, 2]})
    raw.set(":1:k", pickle.dumps("changed behind its back"))  # not announced
    assert cache.get("k") == {"a": [1, 2]}  # answered by L1
    assert caches["redis"].get("k") == "changed behind its back"
    assert cache.get("missing", "dflt") == "dflt"
    cache.set("none", None)
    assert cache.get("none", "dflt") is None
    cache.set("b", b"\x80raw bytes")
    fill_l1(cache, "b", b"\x80raw bytes")


def test_l1_keeps_a_value_for_the_smaller_of_l1_timeout_and_its_l2_ttl(cache: TieredCacheBackend) -> None:
    now = time.time_ns()
    cache.set("short", 1, timeout=2)
    cache.set("forever", 1, timeout=None)
    cache.set("long", 1, timeout=3600)
    for key in ("short", "forever", "long"):
        fill_l1(cache, key, 1)
    left = {k: (l1_entry(cache, k).expire_ns - now) / 1e9 for k in ("short", "forever", "long")}
    assert 1 < left["short"] <= 2.1
    assert 29 < left["forever"] <= 30.5 and 29 < left["long"] <= 30.5


def test_a_plain_redis_cache_shares_the_entries(cache: TieredCacheBackend) -> None:
    plain = caches["redis"]
    cache.set("t", {"x": 1})
    assert plain.get("t") == {"x": 1}
    plain.set("p", [1, 2])
    assert cache.get("p") == [1, 2]
    cache.set("n", 5)  # Django's serializer leaves ints unpickled: INCR works on them
    assert plain.incr("n") == 6
    assert cache.incr("n", 10) == 16
    assert plain.get("n") == 16


# ----------------------------------------------------------------- writes
def test_writes_remove_the_key_from_l1_at_once(cache: TieredCacheBackend) -> None:
    _invalidation.links()[0].subscriber.stop()  # only the writer's own step is at work now

    def cached(value: Any) -> None:
        cache.set("k", value)
        fill_l1(cache, "k", value)

    cached("old")
    cache.set("k", "new")
    assert cache.get("k") == "new"
    cached("old")
    cache.delete("k")
    assert cache.get("k") is None
    cached("old")
    cache.touch("k", 0)  # expires it
    assert cache.get("k") is None
    cached(1)
    assert cache.incr("k") == 2 and cache.get("k") == 2
    fill_l1(cache, "k", 2)
    assert cache.decr("k", 5) == -3 and cache.get("k") == -3


def test_add_incr_and_touch_are_decided_by_redis(cache: TieredCacheBackend, raw: Any) -> None:
    plain = caches["redis"]
    plain.set("x", "theirs")
    assert not cache.l1_has_key("x")
    assert cache.add("x", "mine") is False
    assert cache.get("x") == "theirs"
    assert cache.add("fresh", "mine", timeout=0) is True and cache.get("fresh") is None  # stores nothing
    with pytest.raises(ValueError, match="Key 'nothing' not found"):
        cache.incr("nothing")
    cache.set("text", "abc")
    with pytest.raises(TypeError) as e:  # Django's contract, and RedisCache's ResponseError too
        cache.incr("text")
    assert isinstance(e.value, redis.ResponseError)
    cache.set("t", 1, timeout=100)
    assert 99_000 < raw.pttl(":1:t") <= 100_000
    assert cache.touch("t", None) is True and raw.pttl(":1:t") == -1
    assert cache.touch("t", 5) is True and 4_000 < raw.pttl(":1:t") <= 5_000
    assert cache.touch("nothing", 5) is False
    cache.set("gone", 1, timeout=0)
    assert cache.has_key("gone") is False
    assert cache.get_or_set("gos", lambda: "computed") == "computed"
    assert cache.get_or_set("gos", "other") == "computed"
    assert cache.incr_version("gos") == 2 and cache.get("gos", version=2) == "computed"


def test_many_and_clear(cache: TieredCacheBackend, raw: Any) -> None:
    assert cache.set_many({"a": 1, "b": "two", "c": [3]}) == []
    fill_l1(cache, "a", 1)
    assert cache.get_many(["a", "b", "c", "d"]) == {"a": 1, "b": "two", "c": [3]}  # one from L1, two from L2
    assert cache.l1_has_key("b") and cache.l1_has_key("c")
    assert cache.has_key("a") and not cache.has_key("d")
    cache.delete_many(["a", "b"])
    assert cache.get_many(["a", "b", "c"]) == {"c": [3]}
    raw.set("foreign", b"1")
    cache.clear()  # FLUSHDB, as RedisCache.clear
    assert raw.dbsize() == 0 and not cache.l1_has_key("c") and cache.get("c") is None


def test_a_value_too_big_for_l1_is_still_read_from_redis(
    server: RedisServer, raw: Any, tmp_path: Path
) -> None:
    try:
        with override_settings(CACHES=caches_for(server.url, tmp_path / "l1", MAX_SEGMENT_BYTES=1 << 16)):
            c = caches["tiered"]
            big = b"x" * 200_000  # larger than an L1 heap segment
            c.set("big", big)
            assert c.get("big") == big and c.get_many(["big"]) == {"big": big}
            assert not c.l1_has_key("big")
    finally:
        _invalidation.stop_all()


def test_signed_l1(server: RedisServer, raw: Any, tmp_path: Path) -> None:
    """SIGN=True: L1 records carry a MAC keyed from SECRET_KEY (see docs/RELIABILITY.md)."""
    settings.SECRET_KEY = "tiered test secret"  # as test_django_backend: these settings have none
    try:
        with override_settings(CACHES=caches_for(server.url, tmp_path / "l1", SIGN=True)):
            c = caches["tiered"]
            wait_until(lambda: c.get_stats()["subscriber_connected"], what="the subscriber")
            c.set("k", {"signed": True})
            fill_l1(c, "k", {"signed": True})
            assert c._l1.table._opts.secret is not None
    finally:
        _invalidation.stop_all()
        del settings.SECRET_KEY


def test_async_reads_and_redis_decided_increments(cache: TieredCacheBackend) -> None:
    async def go() -> None:
        await cache.aset("k", "v")
        assert await cache.aget("k") == "v"
        assert await cache.aget("missing", "d") == "d"
        await cache.aset("n", 0)
        results = await asyncio.gather(*[cache.aincr("n") for _ in range(20)])
        assert sorted(results) == list(range(1, 21))
        assert await cache.adecr("n", 20) == 0
        assert await cache.aset_many({"x": 1, "y": 2}) == []
        assert await cache.aget_many(["x", "y"]) == {"x": 1, "y": 2}
        await cache.adelete_many(["x", "y"])
        assert await cache.aget_many(["x", "y"]) == {}

    asyncio.run(go())


# ----------------------------------------------------------- invalidation
def test_announcements_from_elsewhere_empty_l1(cache: TieredCacheBackend, raw: Any) -> None:
    for k in ("a", "b"):
        cache.set(k, k)
        fill_l1(cache, k, k)
    raw.publish(CHANNEL, ":1:a")  # what any other host's write sends
    wait_until(lambda: not cache.l1_has_key("a"), 1.0, "the announced key to leave L1")
    assert cache.l1_has_key("b")
    raw.publish(CHANNEL, b"")  # FLUSH: everything
    wait_until(lambda: not cache.l1_has_key("b"), 1.0, "L1 to be emptied")
    stats = cache.get_stats()
    assert stats["subscriber_leader"] and stats["subscriber_connected"] and stats["channel"] == CHANNEL


def test_guard_refuses_a_fill_that_raced_an_invalidation(path: str) -> None:
    t = MmapCache(path, size=1024)
    try:
        token = guard.snapshot(t, "k")  # before the L2 read...
        guard.invalidate(t, ["k"])  # ...an invalidation arrives...
        assert guard.fill(t, [("k", b"stale", 0, 10.0, token)]) == 0  # ...so the read is not stored
        assert t.get("k") is None
        token = guard.snapshot(t, "k")
        assert guard.fill(t, [("k", b"fresh", 0, 10.0, token)]) == 1
        assert t.get("k") == b"fresh"
        other = next(k for k in map(str, range(1000)) if guard.bucket(k) != guard.bucket("k"))
        token_other = guard.snapshot(t, other)
        guard.invalidate(t, ["k"])  # another bucket's epoch does not move
        assert t.get("k") is None
        assert guard.fill(t, [(other, b"v", 0, 10.0, token_other)]) == 1
        token = guard.snapshot(t, "k")
        guard.reset(t)  # a clear renews every epoch
        assert guard.fill(t, [("k", b"v", 0, 10.0, token)]) == 0
        assert len(t) == guard.BUCKETS  # only the epochs are left
        assert all(guard.is_epoch_key(k) for k in t.list())
    finally:
        t.close()


# ------------------------------------------------------- Redis not there
def test_unreachable_redis(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    conf = caches_for(url, tmp_path / "l1", L2_RETRY=30)
    conf["logged"] = {**conf["tiered"], "OPTIONS": {"L2": "redis", "L2_ERRORS": "log", "L2_RETRY": 0}}
    try:
        with override_settings(CACHES=conf):
            c, logged = caches["tiered"], caches["logged"]
            t0 = time.monotonic()
            assert c.get("k", "dflt") == "dflt" and c.has_key("k") is False
            with pytest.raises(redis.ConnectionError):
                c.set("k", 1)  # L2_ERRORS="raise"
            with pytest.raises(L2Unavailable):
                c.set("k", 1)  # within L2_RETRY: not even tried
            with pytest.raises(redis.ConnectionError):
                c.incr("k")
            assert time.monotonic() - t0 < 2
            with caplog.at_level(logging.WARNING, "mmcache.contrib.django.tiered"):
                assert logged.set("k", 1) is None
                assert logged.add("k", 1) is False
                assert logged.delete("k") is False
                assert logged.set_many({"a": 1, "b": 2}) == ["a", "b"]
                logged.clear()
            assert "Redis unreachable" in caplog.text
            with pytest.raises(redis.ConnectionError):
                logged.incr("k")  # nothing to return: raises whatever L2_ERRORS says
    finally:
        _invalidation.stop_all()


# ---------------------------------------------------------------- options
@pytest.mark.parametrize(
    "options, message",
    [
        ({}, "needs OPTIONS\\['L2'\\]"),
        ({"L2": "redis", "L2_ERRORS": "ignore"}, "L2_ERRORS"),
        ({"L2": "redis", "L1_TIMEOUT": 0}, "L1_TIMEOUT"),
        ({"L2": "redis", "L1_TIMEOUT": None}, "L1_TIMEOUT"),
        ({"L2": "redis", "L2_RETRY": -1}, "L2_RETRY"),
        ({"L2": "redis", "CHANNEL": ""}, "CHANNEL"),
        ({"L2": "redis", "L1_TIMEOT": 5}, "unknown OPTIONS \\['L1_TIMEOT'\\]"),
        ({"L2": "redis", "CODEC": "cloudpickle"}, "unknown OPTIONS"),
    ],
)
def test_bad_options_are_refused(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        TieredCacheBackend(str(tmp_path), {"OPTIONS": options})


def test_l2_must_name_a_redis_cache(tmp_path: Path) -> None:
    conf = caches_for("redis://127.0.0.1:1/0", tmp_path / "l1")
    conf["tiered"]["OPTIONS"]["L2"] = "default"  # a LocMemCache
    with override_settings(CACHES=conf), pytest.raises(ImproperlyConfigured, match="must name a"):
        caches["tiered"].get("k")


def test_the_plain_backend_does_not_import_redis() -> None:
    out = run_py(
        "import sys, mmcache.contrib.django as d\n"
        "print('redis' in sys.modules, 'mmcache.l2' in sys.modules, d.TieredCacheBackend.__name__)"
    )
    assert out.split() == ["False", "False", "TieredCacheBackend"]


def test_host_subscriber_heartbeat_and_election(server: RedisServer, tmp_path: Path) -> None:
    l2 = RedisL2.from_url(server.url, "test:quiet")
    lock = str(tmp_path / "sub.lock")
    got: list[bytes] = []
    clears: list[int] = []
    first = HostSubscriber(l2, lock, got.extend, lambda: clears.append(1), heartbeat=0.1)
    second = HostSubscriber(l2, lock, got.extend, lambda: clears.append(2), poll=0.05)
    try:
        first.start()
        wait_until(lambda: first.connected, what="the first subscriber")
        second.start()  # same lock file: it waits
        time.sleep(0.8)  # eight heartbeats on a quiet channel: PINGs answered, no reconnection
        assert (first.subscriptions, first.connected, clears) == (1, True, [1])
        assert first.leader and not second.leader and l2.subscribers() == 1
        l2.publish("a", "b")
        wait_until(lambda: got == [b"a", b"b"], what="the announcements")
        first.stop()  # gives up the lock: the other takes over and empties L1 first
        wait_until(lambda: second.connected, what="the takeover")
        assert clears == [1, 2] and l2.subscribers() == 1
    finally:
        first.stop()
        second.stop()


def test_a_forked_worker_gets_its_own_subscriber(cache: TieredCacheBackend) -> None:
    """As under a pre-forking server: the parent leads; the child's subscriber
    restarts as a standby, without the parent's descriptor (so it can take
    over when the parent lets go)."""
    sub = _invalidation.links()[0].subscriber
    assert sub.leader
    to_parent_r, to_parent_w = os.pipe()
    to_child_r, to_child_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, wait for the parent to let go, report
        code = 1
        try:
            cache.set("from-child", 1)  # any call that reaches Redis restarts the thread
            time.sleep(0.3)
            os.write(to_parent_w, b"S" if sub.running and not sub.leader else b"L")
            os.read(to_child_r, 1)
            deadline = time.monotonic() + 5
            while not sub.connected and time.monotonic() < deadline:
                time.sleep(0.01)
            code = 0 if sub.leader and sub.connected else 2
        finally:
            os._exit(code)
    try:
        assert os.read(to_parent_r, 1) == b"S"  # a standby in the child
        sub.stop()
        os.write(to_child_w, b"go")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0  # the child took over
        assert cache.get("from-child") == 1
    finally:
        for fd in (to_parent_r, to_parent_w, to_child_r, to_child_w):
            os.close(fd)


# -------------------------------------------------------------- RedisL2
def test_redis_l2_client_for_other_faces(server: RedisServer, raw: Any) -> None:
    """The interface the decorator's ``l2=`` uses: bytes in, bytes out, writes announced."""
    l2 = RedisL2.from_url(server.url, "test:l2")
    ps = raw.pubsub()
    ps.subscribe("test:l2")
    assert ps.get_message(timeout=1)["type"] == "subscribe"
    assert l2.subscribers() == 1
    assert l2.get("fn:1") is None
    l2.set("fn:1", b"\x00value", ttl=None)
    l2.set("fn:2", b"v2", ttl=60)
    assert l2.get("fn:1") == b"\x00value"
    assert l2.get_with_ttl("fn:1") == (b"\x00value", None)
    value, ttl = l2.get_with_ttl("fn:2") or (None, None)
    assert value == b"v2" and ttl is not None and 59 < ttl <= 60
    assert l2.delete("fn:1") is True and l2.delete("fn:1") is False
    l2.publish("fn:3")
    l2.set("fn:4", b"same everywhere", 60, announce=False)  # e.g. a pure function's result
    l2.set("fn*[x]", b"glob characters", None)
    raw.set("fn-other", b"not under the prefix")
    assert l2.clear_prefix(b"fn:") == 2  # fn:2 and fn:4
    assert raw.exists("fn*[x]", "fn-other") == 2
    assert l2.clear_prefix(b"fn*[") == 1 and raw.exists("fn-other") == 1
    got = [ps.get_message(timeout=1) for _ in range(8)]
    expected = [b"fn:1", b"fn:2", b"fn:1", b"fn:1", b"fn:3", b"fn*[x]", b"", b""]
    assert [m["data"] for m in got if m] == expected  # fn:4 was not announced; b"" is FLUSH
    ps.close()
