"""Group invalidation: ``mmcache.tags`` on the core table, and the Django
backend's ``delete_pattern`` (django-redis semantics) and tags, across real
processes and threads."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from support.helpers import run_py

from mmcache import MmapCache
from mmcache.tags import TAG_KEY_PREFIX, TAGGED, Tags

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ core tags
def test_invalidation_is_one_put_per_tag_not_a_scan(path: str) -> None:
    t = MmapCache(path, size=8192)
    tags = Tags(t)
    for i in range(500):
        data, flags = tags.wrap(b"v%d" % i, 0, ["big"])
        t.put(f"k{i}", data, flags=flags)
    sets = t.get_stats()["sets"]
    tags.invalidate(["big"])
    assert t.get_stats()["sets"] - sets == 1  # O(1): one token written, no entry touched
    assert len(t) == 501  # the 500 entries (now stale) and the token
    assert tags.unwrap(*t.get("k0", with_flags=True)) is None
    assert all(tags.unwrap(*t.get(f"k{i}", with_flags=True)) is None for i in range(500))


def test_unwrap_checks_every_tag_and_passes_untagged_records(path: str) -> None:
    t = MmapCache(path, size=4096)
    tags = Tags(t)
    data, flags = tags.wrap(b"payload", 1, ["a", "b", "a"])
    assert flags == 1 | TAGGED
    assert tags.tags_of(data, flags) == ["a", "b"]
    assert tags.unwrap(data, flags) == (b"payload", 1)
    assert tags.unwrap(b"plain", 1) == (b"plain", 1)
    tags.invalidate(["b"])
    assert tags.unwrap(data, flags) is None
    data2, flags2 = tags.wrap(b"again", 0, ["b"])
    assert tags.unwrap(data2, flags2) == (b"again", 0)


def test_a_lost_token_never_revives_a_stale_entry(path: str) -> None:
    """clear() or eviction removes tokens: the entries they guarded become misses."""
    t = MmapCache(path, size=4096)
    tags = Tags(t)
    data, flags = tags.wrap(b"v", 0, ["x"])
    t.delete(TAG_KEY_PREFIX + b"x")  # as if evicted
    assert tags.unwrap(data, flags) is None
    data, flags = tags.wrap(b"v", 0, ["x"])  # a new (random) token
    assert tags.unwrap(data, flags) == (b"v", 0)


@pytest.mark.parametrize(
    "blob",
    [b"", b"\x01", b"\x01" + b"\0" * 9, b"\x02" + struct.pack("<QH", 1, 50) + b"x", b"\x00\x00\x00"],
)
def test_a_damaged_envelope_is_a_miss_not_an_error(path: str, blob: bytes) -> None:
    tags = Tags(MmapCache(path, size=4096))
    assert tags.unwrap(blob, TAGGED) is None


def test_bad_tags_are_refused(path: str) -> None:
    tags = Tags(MmapCache(path, size=4096))
    with pytest.raises(TypeError):
        tags.wrap(b"v", 0, "abc")
    with pytest.raises(TypeError):
        tags.wrap(b"v", 0, [1])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        tags.wrap(b"v", 0, [""])
    with pytest.raises(ValueError):
        tags.wrap(b"v", 0, ["x" * 201])
    with pytest.raises(ValueError):
        tags.wrap(b"v", 0, [f"t{i}" for i in range(256)])
    with pytest.raises(ValueError):
        tags.wrap(b"v", TAGGED, ["a"])


# -------------------------------------------------------------- Django face
django = pytest.importorskip("django", reason="Django is not installed")

from support.helpers import configure_django  # noqa: E402

configure_django()

from mmcache.contrib.django import MmapCacheBackend  # noqa: E402
from mmcache.contrib.django._groups import glob_to_regex  # noqa: E402


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("user:*", ["user:", "user:1:x"], ["users", "xuser:1"]),
        ("h?llo", ["hello", "hallo"], ["hllo", "heello"]),
        ("h[ae]llo", ["hello", "hallo"], ["hillo"]),
        ("h[^e]llo", ["hallo", "hbllo"], ["hello"]),
        ("h[a-b]llo", ["hallo", "hbllo"], ["hcllo"]),
        (r"a\*b", ["a*b"], ["axb"]),
        ("a.b", ["a.b"], ["axb"]),
    ],
)
def test_glob_follows_redis(pattern: str, yes: list[str], no: list[str]) -> None:
    rx = glob_to_regex(pattern)
    assert all(rx.fullmatch(s) for s in yes)
    assert not any(rx.fullmatch(s) for s in no)


def test_delete_pattern_like_django_redis(tmp_path: Path) -> None:
    c = MmapCacheBackend(str(tmp_path), {"KEY_PREFIX": "site*"})
    for i in range(20):
        c.set(f"user:{i}:profile", i)
        c.set(f"post:{i}", i)
    c.set("user:1:profile", "v2", version=2)
    other = MmapCacheBackend(str(tmp_path), {"KEY_PREFIX": "siteX"})  # "*" in the prefix is escaped
    other.set("user:1:profile", "other")
    assert c.delete_pattern("user:1*") == 11  # user:1 and user:10..19, version 1 only
    assert c.get("user:1:profile") is None and c.get("user:2:profile") == 2
    assert c.get("user:1:profile", version=2) == "v2"
    assert other.get("user:1:profile") == "other"
    assert c.delete_pattern("user:*", version=2) == 1
    assert c.delete_pattern("nothing*") == 0
    assert c.delete_pattern("post:?") == 10
    assert c.get("post:10") == 10


def test_delete_pattern_with_writers_in_other_processes(tmp_path: Path) -> None:
    """Deletes what matched while other processes keep writing other keys."""
    loc = str(tmp_path)
    c = MmapCacheBackend(loc, {"OPTIONS": {"MAX_ENTRIES": 5000}})
    for i in range(300):
        c.set(f"doomed:{i}", i)
    code = f"""
import sys
sys.path.insert(0, {str(ROOT / "tests")!r})
from support.helpers import configure_django
configure_django()
from mmcache.contrib.django import MmapCacheBackend
c = MmapCacheBackend({loc!r}, {{"OPTIONS": {{"MAX_ENTRIES": 5000}}}})
for i in range(300):
    c.set(f"keep:{{sys.argv[1]}}:{{i}}", i)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(n)], env=env) for n in range(2)]
    assert c.delete_pattern("doomed:*") == 300
    assert all(p.wait(120) == 0 for p in procs)
    assert c.get_many([f"doomed:{i}" for i in range(300)]) == {}
    assert all(c.get(f"keep:{n}:{i}") == i for n in range(2) for i in range(300))


def test_tags_across_processes_and_threads(tmp_path: Path) -> None:
    loc = str(tmp_path)
    c = MmapCacheBackend(loc, {})
    c.set("p1", "profile", tags=["user:1"])
    c.set("l1", "list", tags=["user:1", "lists"])
    c.set("l2", "list2", tags=["lists"])
    c.set("plain", "untagged")
    everything = {"p1": "profile", "l1": "list", "l2": "list2", "plain": "untagged"}
    assert c.get_many(list(everything)) == everything
    out = run_py(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from support.helpers import configure_django
        configure_django()
        from mmcache.contrib.django import MmapCacheBackend
        c = MmapCacheBackend({loc!r}, {{}})
        print(c.get("p1"), c.has_key("l1"))
        print(c.invalidate_tags("user:1"))
        """
    )
    assert out.split() == ["profile", "True", "1"]
    assert c.get("p1") is None and c.get("l1", "dflt") == "dflt" and not c.has_key("l1")
    assert c.get_many(["p1", "l1", "l2", "plain"]) == {"l2": "list2", "plain": "untagged"}
    with pytest.raises(ValueError):
        c.incr("l1")  # a stale entry is not there for incr either
    assert c.add("p1", "new", tags=["user:1"])  # nor does it block add
    assert c.get("p1") == "new"
    c.set("n", 1, tags=["counters"])
    barrier = threading.Barrier(4)

    def bump() -> None:
        barrier.wait()
        for _ in range(50):
            c.incr("n")

    ts = [threading.Thread(target=bump) for _ in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert c.get("n") == 201
    c.invalidate_tags("counters")  # incr kept the tag
    assert c.get("n") is None
