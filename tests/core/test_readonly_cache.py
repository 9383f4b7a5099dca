"""A read-only cache directory still serves reads (issue 15).

A deploy that mounts the cache read-only, or a worker running as another
user with read permission only: ``get`` on a filled table must not need to
create, lock or write anything, and every write fails with a clear
``ReadOnlyCacheError`` naming the path. Tested with a real second user (a
forked child that drops to ``nobody``) and, as root, a real read-only mount.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _users import IS_ROOT, NOBODY, in_child_as
from _users import needs_root as needs_root_for

from mmcache import MmapCache, ReadOnlyCacheError
from mmcache._core import layout as L

needs_root = needs_root_for("a second uid (setuid) and mounts")


def fill(path: str) -> None:
    with MmapCache(path, size=64) as c:
        for i in range(20):
            c.put(f"k{i}", b"v%d" % i)
        c.put("gone", b"x", expire=0.01)
        c.put("bytes", bytes(range(256)) * 64)  # a longer record
    time.sleep(0.02)  # "gone" has expired


def listing(d: Path) -> dict[str, tuple[int, int]]:
    return {n: (os.stat(d / n).st_size, os.stat(d / n).st_mtime_ns) for n in sorted(os.listdir(d))}


def reads_and_refused_writes(path: str, **kw: object) -> None:
    """What a read-only process can and cannot do (asserts; raises on failure)."""
    for opener in (lambda: MmapCache(path, size=64, **kw), lambda: MmapCache.open(path, **kw)):  # type: ignore[arg-type]
        with opener() as c:
            for _ in range(3):  # first reads, then the memo's
                for i in range(20):
                    assert c.get(f"k{i}") == b"v%d" % i
                assert c.get("bytes") == bytes(range(256)) * 64
                assert c.get("gone") is None and c.get("never") is None
            assert c.get_entry("k1").value == b"v1"  # type: ignore[union-attr]
            assert "k2" in c and len(c) >= 20
            assert dict(c.list_items())["k3"] == b"v3"
            stats = c.get_stats()
            assert stats["occupied_count"] >= 20 and stats["hits"] >= 60
            for write in (lambda: c.put("k1", b"new"), lambda: c.delete("k1"), lambda: c.add("n", b"1")):
                with pytest.raises(ReadOnlyCacheError, match=path):
                    write()
            assert c.get("k1") == b"v1"


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory other users can reach (pytest's tmp_path is root-only)."""
    d = Path(tempfile.mkdtemp(prefix="mmcache-ro-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@needs_root
def test_another_user_with_read_permission_only_reads(public_dir: Path) -> None:
    """Files and directory readable by all, writable by their owner only: a
    worker running as another user serves every read and creates nothing."""
    path = str(public_dir / "t")
    fill(path)
    for name in os.listdir(public_dir):
        os.chmod(public_dir / name, 0o644)
    os.chmod(public_dir, 0o755)
    before = listing(public_dir)
    in_child_as(NOBODY, lambda: reads_and_refused_writes(path, allow_foreign_owner=True))
    assert listing(public_dir) == before  # nothing created, nothing written
    with MmapCache(path, size=64) as c:  # the owner still writes
        c.put("k1", b"new")
        assert c.get("k1") == b"new"


@needs_root
def test_without_the_lock_file_reads_still_work(public_dir: Path) -> None:
    """The lock/control file is only opened to write: a read-only user who
    cannot read it (or finds none) still reads the table."""
    path = str(public_dir / "t")
    fill(path)
    os.unlink(L.lock_name(path))
    for name in os.listdir(public_dir):
        os.chmod(public_dir / name, 0o644)
    os.chmod(public_dir, 0o755)
    in_child_as(NOBODY, lambda: reads_and_refused_writes(path, allow_foreign_owner=True))
    assert not os.path.exists(L.lock_name(path))


@pytest.fixture
def ro_mount() -> Iterator[Path]:
    """A real tmpfs mount (made read-only by the test), unmounted after."""
    if not IS_ROOT:
        pytest.skip("mounting needs root")
    d = Path(tempfile.mkdtemp(prefix="mmcache-mnt-"))
    mount = ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(d)]
    if subprocess.run(mount, capture_output=True).returncode:
        d.rmdir()
        pytest.skip("mount is not allowed here")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)
        d.rmdir()


def test_read_only_mount_serves_reads(ro_mount: Path) -> None:
    path = str(ro_mount / "t")
    fill(path)
    subprocess.run(["mount", "-o", "remount,ro", str(ro_mount)], check=True)
    before = listing(ro_mount)
    reads_and_refused_writes(path)
    assert listing(ro_mount) == before


def test_cli_and_django_read_a_read_only_mount(ro_mount: Path) -> None:
    """The CLI's stats / ls / get, and a Django cache's get, on a read-only
    mount; a Django set fails with ReadOnlyCacheError."""
    pytest.importorskip("django", reason="Django is not installed")
    from support.helpers import configure_django

    configure_django()
    from mmcache.contrib.django import MmapCacheBackend, _tables

    location = str(ro_mount / "cache")
    MmapCacheBackend(location, {}).set("dj", {"a": 1})
    _tables.close_all()  # (a file open for writing keeps the remount from going read-only)
    fill(str(ro_mount / "t"))
    subprocess.run(["mount", "-o", "remount,ro", str(ro_mount)], check=True)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    for args, want in ((["stats"], "entries          22"), (["ls"], "k19"), (["get", "k7"], "v7")):
        cmd = [sys.executable, "-m", "mmcache", args[0], str(ro_mount / "t"), *args[1:]]
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        assert p.returncode == 0 and want in p.stdout, (args, p.stdout, p.stderr)
    code = f"""if 1:
        from mmcache.contrib.django import MmapCacheBackend
        from mmcache import ReadOnlyCacheError
        c = MmapCacheBackend({location!r}, {{}})
        assert c.get("dj") == {{"a": 1}} and c.get("missing", 5) == 5
        try:
            c.set("dj", 2)
        except ReadOnlyCacheError as e:
            print("refused", e)
        assert c.get("dj") == {{"a": 1}}
    """
    conf = "from support.helpers import configure_django; configure_django()\n"
    p = subprocess.run(
        [sys.executable, "-c", conf + code], capture_output=True, text=True, timeout=60,
        env={**env, "PYTHONPATH": f"{root}{os.pathsep}{root / 'tests'}"},
    )  # fmt: skip
    assert p.returncode == 0 and p.stdout.startswith("refused") and location in p.stdout, (p.stdout, p.stderr)
