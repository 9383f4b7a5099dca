"""mmcache.contrib.django: the backend on real files, across real processes,
plus its system checks and management command.

Django's own BaseCacheTests run in ``test_django_conformance.py``; these tests
cover what that suite cannot see: processes, handle sharing, codecs, options.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

django = pytest.importorskip("django", reason="Django is not installed (pip install mmcache[django])")

from django.conf import settings  # noqa: E402
from support.helpers import configure_django  # noqa: E402

configure_django()

from django.core.cache import CacheKeyWarning, caches  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.core.management.base import CommandError  # noqa: E402
from django.test import override_settings  # noqa: E402

from mmcache import CorruptCacheError  # noqa: E402
from mmcache.contrib.django import MmapCacheBackend, _tables, checks  # noqa: E402
from mmcache.serialization import CLOUDPICKLE, PICKLE, RAW  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BACKEND = "mmcache.contrib.django.MmapCacheBackend"


@pytest.fixture
def location(tmp_path: Path) -> str:
    return str(tmp_path / "cache")


@pytest.fixture
def cache(location: str) -> Iterator[MmapCacheBackend]:
    yield MmapCacheBackend(location, {})


def backend(location: str, **options: Any) -> MmapCacheBackend:
    return MmapCacheBackend(location, {"OPTIONS": options})


def run_procs(codes: list[str], timeout: float = 120) -> list[str]:
    """Run each code in its own interpreter, all at once; return their stdouts."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for code in codes
    ]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, f"child failed ({p.returncode}):\n{out}\n{err}"
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return outs


def _barrier(go: Path) -> str:
    return f"""
        import os, time
        deadline = time.monotonic() + 60
        while not os.path.exists({str(go)!r}) and time.monotonic() < deadline:
            time.sleep(0.005)
    """


def start_later(go: Path, delay: float = 0.5) -> threading.Timer:
    t = threading.Timer(delay, go.touch)
    t.start()
    return t


# ----------------------------------------------------------------- basics
def test_round_trip_and_types(cache: MmapCacheBackend) -> None:
    cache.set("k", {"a": [1, 2]})
    assert cache.get("k") == {"a": [1, 2]}
    cache.set("none", None)
    assert cache.get("none", "dflt") is None
    assert cache.get("missing", "dflt") == "dflt"
    assert cache.has_key("none") is True
    assert cache.add("k", 1) is False
    assert cache.add("k2", 1) is True
    assert cache.delete("k2") is True
    assert cache.delete("k2") is False
    assert cache.touch("k", 10) is True
    assert cache.touch("nope", 10) is False
    assert cache.set_many({"x": 1, "y": 2}) == []
    assert cache.delete_many([]) is None
    assert cache.delete_many(["x"]) is None
    assert cache.get_many(iter(["x", "y", "z"])) == {"y": 2}


def test_raw_bytes_skip_pickle(cache: MmapCacheBackend) -> None:
    blob = bytes(range(256)) * 10
    cache.set("blob", blob)
    e = cache.table.get_entry(cache.make_key("blob"))
    assert e is not None and e.flags == RAW and e.value == blob  # stored as is
    assert cache.get("blob") == blob and type(cache.get("blob")) is bytes
    cache.set("ba", bytearray(b"xy"))  # not exactly bytes: pickled, type kept
    assert cache.table.get_entry(cache.make_key("ba")).flags == PICKLE  # type: ignore[union-attr]
    assert cache.get("ba") == bytearray(b"xy") and type(cache.get("ba")) is bytearray


def test_codec_option(location: str) -> None:
    pickling = backend(location)
    cloud = backend(location, CODEC="cloudpickle")
    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickling.set("fn", lambda x: x + 1)
    cloud.set("fn", lambda x: x + 1)
    assert cloud.table.get_entry(cloud.make_key("fn")).flags == CLOUDPICKLE  # type: ignore[union-attr]
    # The flag travels with the record: any alias on the table decodes it.
    assert pickling.get("fn")(1) == 2
    with pytest.raises(ImproperlyConfigured, match="CODEC"):
        backend(location, CODEC="json")
    with pytest.raises(ImproperlyConfigured, match="TABLE_SIZE"):
        backend(location, TABLE_SIZE="big")


def test_pickle_error_propagates_unwrapped(cache: MmapCacheBackend) -> None:
    class Unpicklable:
        def __getstate__(self) -> None:
            raise pickle.PickleError("no")

    with pytest.raises(pickle.PickleError):
        cache.set("u", Unpicklable())
    with pytest.raises(pickle.PickleError):
        cache.set_many({"ok": 1, "u": Unpicklable()})
    assert cache.get("ok") is None  # set_many encodes everything before storing


def test_timeouts(location: str) -> None:
    c = MmapCacheBackend(location, {"TIMEOUT": None})
    c.set("forever", 1)
    assert c.table.get_entry(c.make_key("forever")).expire_ns is None  # type: ignore[union-attr]
    c.set("zero", 1, 0)
    assert c.get("zero") is None
    assert c.add("zero", 1, 0) is True and c.get("zero") is None
    c.set("short", 1, 0.3)
    c.set("month", 1, 60 * 60 * 24 * 31)
    assert c.get("short") == 1
    time.sleep(0.45)
    assert c.get("short") is None  # sub-second precision
    assert c.get("month") == 1
    c.set("t", 1, 0.3)
    assert c.touch("t", None) is True
    time.sleep(0.4)
    assert c.get("t") == 1


def test_incr_decr(cache: MmapCacheBackend) -> None:
    cache.set("n", 10, 100)
    exp = cache.table.get_entry(cache.make_key("n")).expire_ns  # type: ignore[union-attr]
    assert cache.incr("n") == 11
    assert cache.decr("n", 5) == 6
    kept = cache.table.get_entry(cache.make_key("n")).expire_ns  # type: ignore[union-attr]
    assert abs(kept - exp) < 5_000_000  # the expiry is kept (to within the ms)
    with pytest.raises(ValueError, match="not found"):
        cache.incr("missing")
    cache.set("null", None)
    with pytest.raises(TypeError):
        cache.incr("null")
    assert cache.incr_version("n") == 2
    assert cache.get("n") is None and cache.get("n", version=2) == 6


def test_key_validation_and_long_keys(cache: MmapCacheBackend) -> None:
    long_key = "k" * 251
    with pytest.warns(CacheKeyWarning, match="longer than 250"):
        cache.set(long_key, "v")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheKeyWarning)
        assert cache.get(long_key) == "v"
        assert cache.get("k" * 250 + "x") is None  # same slot prefix, different key
        cache.set("key with spaces and 清", "u")
        assert cache.get("key with spaces and 清") == "u"
    # key_func is read at call time
    cache.key_func = lambda key, prefix, version: f"custom:{key}"
    cache.set("a", 1)
    assert cache.table.get_entry("custom:a") is not None


def test_cull_follows_djangos_rule(location: str) -> None:
    c = backend(location, MAX_ENTRIES=30)
    for i in range(1, 50):
        c.set(f"cull{i}", "v")
    assert sum(c.has_key(f"cull{i}") for i in range(1, 50)) == 29
    c.clear()
    z = backend(location, MAX_ENTRIES=30, CULL_FREQUENCY=0)
    for i in range(1, 50):
        z.set(f"cull{i}", "v")
    assert sum(z.has_key(f"cull{i}") for i in range(1, 50)) == 19
    z._max_entries = -1
    z.set("after", 1)
    assert z.has_key("after")


def test_table_grows_for_max_entries_without_evicting(location: str) -> None:
    c = backend(location, MAX_ENTRIES=10_000, TABLE_SIZE=1024)
    for i in range(10_000):
        c.set(f"k{i}", i)
    st = c.get_stats()
    assert st["occupied_count"] == 10_000 and st["evictions"] == 0
    assert st["size"] > 1024
    c.set("one-more", 1)  # Django's cull: 10000 // 3 entries go, then the store
    assert len(c.table) == 10_000 - 10_000 // 3 + 1


def test_async_methods(cache: MmapCacheBackend) -> None:
    async def scenario() -> None:
        await cache.aset("a", 1)
        assert await cache.aget("a") == 1
        assert await cache.aadd("a", 2) is False
        assert await cache.aadd("b", 2) is True
        assert await cache.ahas_key("b") is True
        assert await cache.aincr("a", 5) == 6
        assert await cache.adecr("a") == 5
        assert await cache.aset_many({"c": 3, "d": 4}) == []
        assert await cache.aget_many(["a", "c", "zz"]) == {"a": 5, "c": 3}
        assert await cache.atouch("c", 100) is True
        assert await cache.adelete("c") is True
        assert await cache.adelete_many(["d"]) is None
        assert await cache.aget_or_set("e", lambda: 7) == 7
        assert await cache.aincr_version("e") == 2
        assert await cache.adecr_version("e", version=2) == 1
        await cache.aclear()
        assert await cache.aget("a") is None
        await cache.aclose()

    asyncio.run(scenario())


# ------------------------------------------------- handles, close, recovery
def test_instances_share_one_handle_and_fds_stay_flat(location: str) -> None:
    first = backend(location)
    first.set("warm", 1)
    handles: list[object] = []

    def per_thread() -> None:
        b = backend(location)
        b.get("warm")
        handles.append(b.table)
        b.close()

    threads = [threading.Thread(target=per_thread) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(h is first.table for h in handles)
    fds = len(os.listdir("/proc/self/fd"))
    for i in range(1000):
        b = backend(location)
        b.set("k", i)
        assert b.get("k") == i
        b.close()
    assert len(os.listdir("/proc/self/fd")) <= fds
    assert first.get("k") == 999


def test_close_is_free_and_survives_deleted_location(location: str) -> None:
    c = backend(location)
    c.set("a", 1)
    c.close()
    assert c.get("a") == 1  # still works after close
    c.clear()
    shutil.rmtree(location)
    c.close()  # no error with the directory gone
    time.sleep(0.3)  # past the core's staleness interval: the next write notices
    c.set("b", 2)  # recreates LOCATION and the table
    assert os.path.isdir(location) and c.get("b") == 2
    read_b = (
        f"from mmcache.contrib.django import MmapCacheBackend as B; print(B({location!r}, {{}}).get('b'))"
    )
    assert run_procs([read_b])[0].strip() == "2"  # the new files, seen by a new process


def test_closed_handles_are_reopened_and_real_errors_propagate(location: str) -> None:
    c = backend(location)
    c.set("a", 1)
    old = c.table
    _tables.close_all()  # what interpreter exit does
    assert c.get("a") == 1 and c.table is not old  # reopened on next use
    other = backend(location)
    assert other.get("a") == 1 and other.table is c.table
    _tables.close_all()
    with open(c.spec.path, "r+b") as f:
        f.write(b"NOTMMCACHE")  # a damaged index: the files exist, so no retry may hide the error
    with pytest.raises(CorruptCacheError, match="not an mmcache index"):
        c.get("a")
    with pytest.raises(CorruptCacheError, match="not an mmcache index"):
        c.has_key("a")


def test_location_created_owner_only(tmp_path: Path) -> None:
    loc = tmp_path / "a" / "b" / "cache"
    backend(str(loc)).set("x", 1)
    for d in (loc, loc.parent, loc.parent.parent):
        assert d.stat().st_mode & 0o777 == 0o700


def test_empty_location_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match="LOCATION"):
        MmapCacheBackend("", {})


# ------------------------------------------------------------ processes
def test_incr_is_atomic_across_four_processes(location: str, tmp_path: Path) -> None:
    c = backend(location)
    c.set("counter", 0)
    go = tmp_path / "go"
    code = (
        _barrier(go)
        + f"""
        from mmcache.contrib.django import MmapCacheBackend
        c = MmapCacheBackend({location!r}, {{}})
        for _ in range(1000):
            c.incr("counter")
        """
    )
    timer = start_later(go)
    try:
        run_procs([code] * 4)
    finally:
        timer.cancel()
    assert c.get("counter") == 4000


def test_add_is_atomic_across_processes(location: str, tmp_path: Path) -> None:
    go = tmp_path / "go"
    code = (
        _barrier(go)
        + f"""
        import os
        from mmcache.contrib.django import MmapCacheBackend
        c = MmapCacheBackend({location!r}, {{"OPTIONS": {{"MAX_ENTRIES": 10000}}}})
        won = [i for i in range(300) if c.add(f"slot{{i}}", os.getpid())]
        print(os.getpid(), " ".join(map(str, won)))
        """
    )
    timer = start_later(go)
    try:
        outs = run_procs([code] * 4)
    finally:
        timer.cancel()
    c = backend(location, MAX_ENTRIES=10_000)
    winners: dict[int, int] = {}
    for out in outs:
        pid, *won = out.split()
        for i in won:
            assert int(i) not in winners, f"slot{i} was added twice"
            winners[int(i)] = int(pid)
    assert sorted(winners) == list(range(300))
    assert all(c.get(f"slot{i}") == pid for i, pid in winners.items())


def test_a_value_set_in_one_process_is_a_hit_in_another(location: str) -> None:
    writer = f"""
        import os
        from mmcache.contrib.django import MmapCacheBackend
        c = MmapCacheBackend({location!r}, {{}})
        c.set("shared", {{"by": os.getpid()}})
        print(os.getpid())
    """
    reader = f"""
        from mmcache.contrib.django import MmapCacheBackend
        c = MmapCacheBackend({location!r}, {{}})
        print(c.get("shared")["by"])
    """
    (wpid,) = run_procs([writer])
    (seen,) = run_procs([reader])
    assert seen.strip() == wpid.strip()
    st = backend(location).get_stats()
    assert st["hits"] >= 1 and st["sets"] >= 1  # counted in the shared stats


# ------------------------------------------------------ checks, command
def mm_caches(location: str, **aliases: dict[str, Any]) -> dict[str, Any]:
    out = {"default": {"BACKEND": BACKEND, "LOCATION": location}}
    for name, extra in aliases.items():
        out[name] = {"BACKEND": BACKEND, "LOCATION": location, **extra}
    return out


def ids(messages: list[Any]) -> list[str]:
    return sorted(m.id for m in messages)


def test_checks_clean_config(location: str) -> None:
    with override_settings(CACHES=mm_caches(location, cull={"OPTIONS": {"MAX_ENTRIES": 30}})):
        assert checks.check_mmcache_caches() == []


def test_checks_find_bad_configs(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    afile = tmp_path / "file"
    afile.write_text("x")
    cases = {
        "mmcache.E001": {"default": {"BACKEND": BACKEND}},
        "mmcache.E002": mm_caches(str(tmp_path / "c"), bad={"OPTIONS": {"CODEC": "xml"}}),
        "mmcache.W002": {"default": {"BACKEND": BACKEND, "LOCATION": str(tmp_path), "OPTIONS": {"SIZE": 1}}},
        "mmcache.E003": mm_caches(str(afile)),
        "mmcache.W005": mm_caches(str(tmp_path / "no" / "such" / "dir")),
        "mmcache.W007": {
            "default": {
                "BACKEND": BACKEND,
                "LOCATION": str(tmp_path),
                "OPTIONS": {"MAX_ENTRIES": 100_000, "MAX_TABLE_SIZE": 8192},
            }
        },
        "mmcache.E008": mm_caches(str(tmp_path / "c"), other={"OPTIONS": {"SLOT_SIZE": 128}}),
    }
    if os.geteuid() != 0:  # root may write anywhere
        cases["mmcache.E004"] = mm_caches(str(ro / "cache"))
    for want, caches_setting in cases.items():
        with override_settings(CACHES=caches_setting):
            assert want in ids(checks.check_mmcache_caches()), want
    with override_settings(CACHES=mm_caches(str(tmp_path))):
        # No NFS server can run here: the mount table lookup is the one stand-in.
        with mock.patch.object(checks, "mount_type", return_value="nfs4"):
            assert ids(checks.check_mmcache_caches()) == ["mmcache.E006"]
        allowed = {
            "default": {"BACKEND": BACKEND, "LOCATION": str(tmp_path), "OPTIONS": {"ALLOW_NETWORK_FS": True}}
        }
        with override_settings(CACHES=allowed), mock.patch.object(checks, "mount_type", return_value="nfs4"):
            assert checks.check_mmcache_caches() == []


def test_check_foreign_owned_files(location: str) -> None:
    backend(location).set("x", 1)  # creates the files, owned by us
    with override_settings(CACHES=mm_caches(location)):
        assert checks.check_mmcache_caches() == []
        if os.geteuid() != 0:
            pytest.skip("giving the files to another user needs root")
        for f in Path(location).iterdir():
            os.chown(f, 65534, 65534)
        assert "mmcache.E009" in ids(checks.check_mmcache_caches())


def test_checks_are_registered(location: str) -> None:
    from django.core.checks import run_checks

    with override_settings(CACHES=mm_caches(location, other={"OPTIONS": {"KEY_SIZE": 32}})):
        assert "mmcache.E008" in ids(run_checks(tags=["caches"]))


def test_management_command(location: str, tmp_path: Path) -> None:
    setting = mm_caches(location, second={"OPTIONS": {"MAX_ENTRIES": 50}})
    with override_settings(CACHES=setting):
        caches["default"].set("a", 1)
        out = StringIO()
        call_command("mmcache", "stats", stdout=out)
        assert "entries  " in out.getvalue() and "second" in out.getvalue()
        out = StringIO()
        call_command("mmcache", "verify", stdout=out)
        assert "default: ok" in out.getvalue()
        call_command("mmcache", "clear", "--alias", "second", stdout=StringIO())
        assert caches["default"].get("a") is None  # one table behind both aliases
        with pytest.raises(CommandError, match="not a CACHES alias"):
            call_command("mmcache", "stats", "--alias", "nope")
        marker = b"mmcache-corruption-marker-" * 4
        caches["default"].set("victim", marker)
        _damage_on_disk(location, marker)
        with pytest.raises(CommandError, match=r"verify found \d+ problem"):
            call_command("mmcache", "verify", stdout=StringIO(), stderr=StringIO())


def test_management_command_in_a_real_process(location: str, tmp_path: Path) -> None:
    (tmp_path / "cmd_settings.py").write_text(
        textwrap.dedent(
            f"""
            SECRET_KEY = "x"
            INSTALLED_APPS = ["mmcache.contrib.django"]
            CACHES = {{"default": {{"BACKEND": {BACKEND!r}, "LOCATION": {location!r}}}}}
            """
        )
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]),
        "DJANGO_SETTINGS_MODULE": "cmd_settings",
    }
    c = backend(location)
    marker = b"mmcache-corruption-marker-" * 4
    c.set("victim", marker)

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "django", "mmcache", *args],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    ok = manage("verify")
    assert ok.returncode == 0, ok.stderr
    assert "default: ok" in ok.stdout
    stats = manage("stats", "--json")
    assert stats.returncode == 0 and '"occupied_count": 1' in stats.stdout
    _damage_on_disk(location, marker)  # verify must now fail with a non-zero exit
    bad = manage("verify")
    assert bad.returncode != 0
    assert "problem" in bad.stderr


def _damage_on_disk(location: str, marker: bytes) -> None:
    """Change one byte of a stored value in the heap file that holds it."""
    for f in Path(location).iterdir():
        at = f.read_bytes().find(marker)
        if at >= 0:
            with open(f, "r+b") as fh:
                fh.seek(at + 3)
                fh.write(b"X")
            return
    raise AssertionError("marker not found on disk")


def test_sign_option_uses_secret_key(location: str) -> None:
    """OPTIONS['SIGN']: records are signed with a key from SECRET_KEY; a value
    planted by a writer without it is never unpickled."""
    settings.SECRET_KEY = "one secret"  # this module's settings have none
    try:
        _check_signing(location)
    finally:
        del settings.SECRET_KEY


def _check_signing(location: str) -> None:
    from mmcache import MmapCache

    signed = backend(location, SIGN=True)
    signed.set("k", {"a": 1})
    assert signed.get("k") == {"a": 1}
    with MmapCache.open(signed.spec.path) as plain:  # an attacker without the secret
        plain.put(signed.make_key("k"), pickle.dumps({"evil": True}), flags=PICKLE)
        assert pickle.loads(plain.get(signed.make_key("k"))) == {"evil": True}
    assert backend(location, SIGN=True).get("k", "miss") == "miss"
    with pytest.raises(ImproperlyConfigured, match="SIGN"):
        backend(location, SIGN="yes").get("k")
