"""A table of another FORMAT_VERSION: real tables whose header's version field
is patched on disk, opened by a direct MmapCache user (a clear error, nothing
touched), by the Django backend and by @mmap_cached (replaced by themselves,
but never while another process has the old table mapped)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.helpers import ROOT, run_py

from mmcache import FormatVersionError, IncompatibleCacheError, MmapCache
from mmcache._core import layout as L
from mmcache.cli import main as cli_main

VERSION_OFFSET = 8  # u32 after the 8-byte magic (see _layout.HEADER)


def set_version(index: str | Path, version: int) -> None:
    with open(index, "r+b") as f:
        f.seek(VERSION_OFFSET)
        f.write(L.U32.pack(version))


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("version", [0, L.FORMAT_VERSION + 1], ids=["older", "newer"])
def test_direct_user_gets_a_clear_error_and_nothing_changes(tmp_path: Path, version: int) -> None:
    path = tmp_path / "t"
    with MmapCache(path, size=64) as c:
        c.put("k", b"v")
    set_version(path, version)
    before = snapshot(tmp_path)
    for opener in (lambda: MmapCache(path, size=64), lambda: MmapCache.open(path), lambda: MmapCache(path)):
        with pytest.raises(FormatVersionError) as info:
            opener()
        assert isinstance(info.value, IncompatibleCacheError)
        assert info.value.version == version
        msg = str(info.value)
        assert f"format version {version}" in msg and "remove its files" in msg
    assert snapshot(tmp_path) == before


DJANGO = """
    import sys, threading
    from django.conf import settings
    settings.configure(CACHES={{"default": {{
        "BACKEND": "mmcache.contrib.django.MmapCacheBackend", "LOCATION": {location!r}}}}})
    import django
    django.setup()
    from django.core.cache import cache
"""


def django_py(location: str, body: str) -> str:
    return run_py(textwrap.dedent(DJANGO.format(location=location)) + textwrap.dedent(body))


def test_django_replaces_an_old_format_table(tmp_path: Path) -> None:
    location = str(tmp_path / "cache")
    django_py(location, 'cache.set("old", "value")')
    index = os.path.join(location, "mmcache")
    set_version(index, 0)
    # A new process, four threads at once: the old entries are gone (a cache),
    # every thread stores and reads, nothing raises.
    out = django_py(
        location,
        """
        errors = []
        def work(i):
            try:
                assert cache.get("old") is None
                cache.set(f"new{i}", i)
                assert cache.get(f"new{i}") == i
            except Exception as e:
                errors.append(repr(e))
        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(errors)
        """,
    )
    assert out.strip() == "[]"
    with open(index, "rb") as f:
        assert L.HEADER.unpack(f.read(L.HEADER.size))[1] == L.FORMAT_VERSION
    assert not [n for n in os.listdir(location) if "old-format" in n]
    with MmapCache.open(index) as c:
        assert sorted(c.list()) == [f":1:new{i}" for i in range(4)]
        assert c.verify() == []


def test_two_processes_meet_the_old_table_at_once(tmp_path: Path) -> None:
    location = str(tmp_path / "cache")
    django_py(location, 'cache.set("old", "value")')
    set_version(os.path.join(location, "mmcache"), 0)
    code = textwrap.dedent(DJANGO.format(location=location)) + textwrap.dedent(
        """
        tag = sys.argv[1]
        def work(i):
            cache.set(f"{tag}{i}", i)
            assert cache.get(f"{tag}{i}") == i
        threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
        for t in threads: t.start()
        for t in threads: t.join()
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, tag], env=env, stderr=subprocess.PIPE, text=True)
        for tag in ("a", "b")
    ]
    for p in procs:
        _, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
    with MmapCache.open(os.path.join(location, "mmcache")) as c:
        keys = set(c.list())
    # Both processes ended on one table; a process that replaced the table
    # after the other had stored (possible: each saw the old one) is the only
    # way to lose keys, and the lock plus the recheck under it rule it out.
    assert keys == {f":1:{t}{i}" for t in "ab" for i in range(3)}


def test_django_leaves_a_table_in_use_alone(tmp_path: Path) -> None:
    location = str(tmp_path / "cache")
    django_py(location, 'cache.set("old", "value")')
    index = os.path.join(location, "mmcache")
    # A process that has the table mapped, as a process of the old version would.
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sys; from mmcache import MmapCache; c = MmapCache.open({index!r}); "
         "print('open', flush=True); sys.stdin.read()"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        set_version(index, 0)
        before = snapshot(Path(location))
        with pytest.raises(AssertionError) as info:
            django_py(location, 'cache.get("old")')
        msg = str(info.value)
        assert "FormatVersionError" in msg and f"pids [{holder.pid}]" in msg
        assert "replaces it by itself at the first open after those processes exit" in msg
        assert snapshot(Path(location)) == before  # untouched while in use
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    assert django_py(location, 'cache.set("x", 1); print(cache.get("x"))').strip() == "1"


def test_decorator_replaces_an_old_format_table(tmp_path: Path) -> None:
    code = f"""
        import os
        from mmcache import mmap_cached
        calls = []
        @mmap_cached(path={str(tmp_path)!r})
        def square(x):
            calls.append(x)
            return x * x
        print(square(3), square(3), len(calls), square.__wrapped__ is not None)
    """
    assert run_py(code).split() == ["9", "9", "1", "True"]
    (index,) = [p for p in tmp_path.iterdir() if p.read_bytes()[:8] == L.INDEX_MAGIC]
    set_version(index, 0)
    assert run_py(code).split() == ["9", "9", "1", "True"]  # computed again, then a hit
    assert cli_main(["verify", str(index)]) == 0
