"""The platform module's answers, native and portable (issue 21).

No macOS machine runs these: the portable answers are exercised here, on
Linux, in child processes started with MMCACHE_PORTABLE=1 (or with the Linux-
only function removed from ``os`` before mmcache is imported, as on macOS).
``make test-portable`` runs the core, decorator and Django tests that way too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
from support.helpers import ROOT, run_py
from support.stress import small_tmpfs

from mmcache import NetworkFilesystemError, NetworkFilesystemWarning, _platform
from mmcache._core import fs as _fs

PORTABLE = {"MMCACHE_PORTABLE": "1", "MMCACHE_ASSUME_PAGE_SIZE": ""}
NATIVE = {"MMCACHE_PORTABLE": "", "MMCACHE_ASSUME_PAGE_SIZE": ""}
LINUX_ONLY = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="compares with Linux's answers")


def _import_error(prelude: str) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(prelude) + "\nimport mmcache\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize(
    "prelude",
    [
        "import sys; sys.modules['fcntl'] = None",  # no fcntl module, whatever the platform says
        "import sys; sys.modules['fcntl'] = None; sys.platform = 'win32'",  # Windows, as it is
        "import sys; sys.platform = 'win32'",  # Windows with an fcntl of some sort
    ],
)
def test_windows_import_is_one_clear_error(prelude: str) -> None:
    r = _import_error(prelude)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: mmcache runs on Linux, macOS and other POSIX systems"), r.stderr
    assert "Windows is not supported" in last
    # One error: no chained traceback of the fcntl import behind it.
    assert r.stderr.count("Traceback") == 1 and "During handling" not in r.stderr, r.stderr


@LINUX_ONLY
def test_portable_switch_turns_the_linux_answers_off(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """What MMCACHE_PORTABLE=1 turns off, and that the portable answers agree
    with Linux's where both can answer (mount types of real mounts)."""
    code = """
        import json, sys
        from mmcache import _platform as P
        print(json.dumps({"answers": P.describe(), "types": [P.mount_type(p) for p in sys.argv[1:]]}))
    """
    paths = [str(tmp_path / "t"), "/dev/shm/t"]
    native = json.loads(run_py(code, *paths, env=NATIVE))
    portable = json.loads(run_py(code, *paths, env=PORTABLE))
    assert native["answers"] == {
        "reserve space": "posix_fallocate",
        "page size": str(os.sysconf("SC_PAGE_SIZE")),
        "mount type of a path": "/proc/self/mountinfo",
        "mount type of an fd": "fstatfs(2)",
        "populate pages": "MADV_POPULATE_WRITE",
    }
    assert portable["answers"] == {
        "reserve space": "zeros written (pwrite)",
        "page size": str(os.sysconf("SC_PAGE_SIZE")),
        "mount type of a path": "statfs(2)",
        "mount type of an fd": "fstatfs(2)",
        "populate pages": "no",
    }
    assert native["types"][1] == portable["types"][1] == "tmpfs"  # statfs(2) names what mountinfo names
    known = _platform.LINUX_FS_MAGIC.values()
    assert portable["types"][0] == native["types"][0] or native["types"][0] not in known


@LINUX_ONLY
def test_portable_mode_never_reads_proc(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Opening, filling, growing and rebuilding a table and a decorated
    function read nothing under /proc with the portable answers (macOS has no
    /proc); natively the same work reads /proc/self/mountinfo (the probe works)."""
    code = """
        import sys
        opened = []
        def hook(event, args):
            if event == "open" and isinstance(args[0], (str, bytes)) and str(args[0]).startswith("/proc"):
                opened.append(str(args[0]))
        sys.addaudithook(hook)
        import os
        from mmcache import MmapCache, mmap_cached
        d = sys.argv[1]
        with MmapCache(os.path.join(d, "t"), size=1024) as c:
            for i in range(300):
                c.put(f"k{i}", bytes([i % 256]) * 10_000)  # 3 MB: the heap grows
            c.atomic_rebuild(4096)  # populates the new files where it can
            assert all(c.get(f"k{i}") == bytes([i % 256]) * 10_000 for i in range(300))
        os.environ["MMCACHE_DIR"] = d
        @mmap_cached
        def double(x):
            return 2 * x
        assert [double(i) for i in range(50)] == [double(i) for i in range(50)]
        print(sorted(set(opened)))
    """
    for name in ("p", "n"):
        (tmp_path / name).mkdir()
    assert run_py(code, str(tmp_path / "p"), env=PORTABLE).strip() == "[]"
    assert "/proc/self/mountinfo" in run_py(code, str(tmp_path / "n"), env=NATIVE)


def _allocated(path: str) -> bool:
    st = os.stat(path)
    return st.st_blocks * 512 >= st.st_size


@pytest.mark.parametrize("how", ["no posix_fallocate", "MMCACHE_PORTABLE"])
def test_tables_work_without_posix_fallocate(tmp_path, how: str) -> None:  # type: ignore[no-untyped-def]
    """As on macOS, where os has no posix_fallocate (this once failed with
    AttributeError at table creation): every file's space is still really
    allocated (written zeros), not a sparse hole a full disk turns into SIGBUS."""
    code = """
        import os, sys
        if sys.argv[2] == "no posix_fallocate":
            del os.posix_fallocate
        from mmcache import MmapCache
        with MmapCache(sys.argv[1], size=2048, max_segment_bytes=1 << 22) as c:
            for i in range(400):
                c.put(f"k{i}", bytes([i % 256]) * 20_000)  # 8 MB: segments grow and roll over
            c.atomic_rebuild(4096)
            c.put("after", b"rebuild")
        print("ok")
    """
    t = str(tmp_path / "t")
    assert run_py(code, t, how, env=PORTABLE if how == "MMCACHE_PORTABLE" else NATIVE).strip() == "ok"
    files = [os.path.join(tmp_path, f) for f in os.listdir(tmp_path)]
    assert len([f for f in files if ".heap." in f]) >= 2
    assert all(_allocated(f) for f in files), [(f, os.stat(f)) for f in files if not _allocated(f)]
    check = """
        import sys
        from mmcache import MmapCache
        with MmapCache(sys.argv[1], size=4096, max_segment_bytes=1 << 22) as c:
            ok = all(c.get(f"k{i}") == bytes([i % 256]) * 20_000 for i in range(400))
            print(ok, c.get("after"), c.verify())
    """
    assert run_py(check, t).strip() == "True b'rebuild' []"  # read natively, in another process


def test_full_disk_without_posix_fallocate_is_an_error_not_sigbus() -> None:
    """A full disk with zeros written instead of fallocate: DiskFullError,
    everything stored before it readable, the process alive."""
    code = """
        import os, sys
        del os.posix_fallocate
        from mmcache import DiskFullError, MmapCache
        stored, refused = 0, 0
        with MmapCache(os.path.join(sys.argv[1], "t"), size=1024, max_segment_bytes=1 << 20) as c:
            for i in range(10_000):
                try:
                    c.put(f"k{i}", bytes([i % 256]) * 20_000)
                    stored = i + 1
                except DiskFullError:
                    refused += 1
                    break
            ok = all(c.get(f"k{i}") == bytes([i % 256]) * 20_000 for i in range(stored))
            print(stored, refused, ok, c.verify())
    """
    with small_tmpfs("2m") as d:
        if d is None:
            pytest.skip("mounting a tmpfs needs root and mount permission here")
        stored, refused, ok, problems = run_py(code, d, env=NATIVE).split(maxsplit=3)
    assert int(stored) > 10 and refused == "1" and ok == "True" and problems.strip() == "[]"


@LINUX_ONLY
def test_fd_mount_type_is_asked_of_the_descriptor(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """fstatfs on the descriptor (no /proc/self/fd): tmpfs and the test disk,
    named as /proc/self/mountinfo names them."""
    for directory in (str(tmp_path), "/dev/shm"):
        fd = os.open(directory, os.O_RDONLY)
        try:
            got = _platform.fd_mount_type(fd)
        finally:
            os.close(fd)
        with open("/proc/self/mountinfo") as f:
            expected = _platform.mountinfo_type(os.path.join(directory, "x"), f.read())
        assert got == expected or (got is None and expected not in _platform.LINUX_FS_MAGIC.values())
    fd = os.open("/dev/shm", os.O_RDONLY)
    os.close(fd)
    assert _platform.fd_mount_type(fd) is None  # a closed descriptor: unknown, no exception


MOUNTINFO = """\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
40 22 0:35 / /srv/cache rw,relatime shared:20 - nfs4 server:/export rw,vers=4.2
41 40 0:36 / /srv/cache/local\\040disk rw,relatime shared:21 - tmpfs tmpfs rw
"""


def test_mount_type_from_mountinfo_and_the_network_warning(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The longest mount point holding the path wins; escaped spaces are read;
    a network type warns, refuses or stays quiet as asked."""
    assert _fs.mount_type("/srv/cache/t", MOUNTINFO) == "nfs4"
    assert _fs.mount_type("/srv/cache/local disk/t", MOUNTINFO) == "tmpfs"
    assert _fs.mount_type("/srv/cachet/t", MOUNTINFO) == "ext4"  # a prefix of the name is not inside
    with pytest.warns(NetworkFilesystemWarning, match="nfs4"):
        _fs.check_network_fs("/srv/cache/t", None, MOUNTINFO)
    with pytest.raises(NetworkFilesystemError):
        _fs.check_network_fs("/srv/cache/t", False, MOUNTINFO)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _fs.check_network_fs("/srv/cache/t", True, MOUNTINFO)
        _fs.check_network_fs("/srv/cache/local disk/t", None, MOUNTINFO)


@pytest.mark.parametrize("bad", ["1024", "12345", "16k", "0"])
def test_assumed_page_size_must_be_a_valid_alignment(bad: str) -> None:
    with pytest.raises(AssertionError, match="MMCACHE_ASSUME_PAGE_SIZE=.*power of two"):
        run_py("import mmcache", env={"MMCACHE_ASSUME_PAGE_SIZE": bad})


@LINUX_ONLY
@pytest.mark.parametrize("page", [4096, 16384])
def test_populate_aligns_to_the_assumed_page_size(page: int) -> None:
    """populate() faults pages in from the start of the (assumed) page that
    holds ``start``: seen with mincore(2) on a tmpfs file, whose fallocated
    pages are not resident until stored into or populated, page by page
    (on ext4, large folios make a whole small file resident at once)."""
    if _platform.mount_type("/dev/shm/x") != "tmpfs":
        pytest.skip("needs a tmpfs at /dev/shm")
    code = """
        import ctypes, json, mmap, os, sys, tempfile
        from mmcache import _platform
        from mmcache._core import fs as _fs
        fd, path = tempfile.mkstemp(dir="/dev/shm")
        os.unlink(path)
        os.posix_fallocate(fd, 0, 1 << 16)
        mm = mmap.mmap(fd, 1 << 16)
        libc = ctypes.CDLL(None, use_errno=True)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(mm))
        def resident():
            vec = (ctypes.c_ubyte * 16)()
            assert libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(1 << 16), vec) == 0
            return [b & 1 for b in vec]
        before = resident()
        _fs.populate(mm, 5 * 4096 + 100, 9 * 4096)
        print(json.dumps([_platform.PAGE_SIZE, before, resident()]))
    """
    out = run_py(code, env={"MMCACHE_ASSUME_PAGE_SIZE": str(page), "MMCACHE_PORTABLE": ""})
    size, before, after = json.loads(out)
    assert size == page and before == [0] * 16
    first = (5 * 4096) // page * page // 4096  # the first 4 KiB page populated: 5, or 4 with 16 KiB
    assert after == [0] * first + [1] * (9 - first) + [0] * 7, after
