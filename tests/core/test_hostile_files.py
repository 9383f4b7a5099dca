"""Hostile and damaged files in the cache directory (issue 16 items 4-6).

Every file of a table is untrusted: whoever can write the directory can plant
a FIFO, a symlink, a file of their own, or damage any number on disk. These
tests plant real FIFOs, sockets, devices, directories and symlinks, chown
files to a second uid (as root), and let a forked child that dropped to that
uid plant files itself. Anything that could hang runs in a subprocess with a
generous timeout as a hang guard.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _users import IS_ROOT, NOBODY, in_child_as
from _users import needs_root as needs_root_for

from mmcache import CorruptCacheError, MmapCache, UnsafePathError
from mmcache._core import layout as L

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
needs_root = needs_root_for("a second uid (chown, setuid)")
HANG_GUARD = 60  # seconds; a refused file answers at once, a FIFO opened for reading never does
OFF_GENERATION = 40  # the index header's u64 generation, per docs/FORMAT.md (code never reads it alone)


def run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=ENV, timeout=HANG_GUARD
    )


def filled(path: str, n: int = 20, **kw: object) -> None:
    with MmapCache(path, size=64, **kw) as c:  # type: ignore[arg-type]
        for i in range(n):
            c.put(f"k{i}", b"v%d" % i)


def gen_of(path: str) -> int:
    with open(path, "rb") as f:
        return int(L.U64.unpack_from(f.read(L.HEADER_BYTES), OFF_GENERATION)[0])


def segment(path: str, seg: int = 0) -> str:
    return L.segment_name(path + ".heap", gen_of(path), seg)


def plant(kind: str, name: str) -> None:
    """Replace ``name`` (if present) by a FIFO, socket, directory or device."""
    if os.path.lexists(name):
        os.unlink(name)
    if kind == "fifo":
        os.mkfifo(name)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(name)
        s.close()
    elif kind == "directory":
        os.mkdir(name)
    elif kind == "device":
        if not IS_ROOT:
            pytest.skip("mknod of a device needs root")
        os.mknod(name, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
    else:
        raise AssertionError(kind)


KINDS = ["fifo", "socket", "directory", "device"]
KIND_WORDS = {"fifo": "FIFO", "socket": "socket", "directory": "directory", "device": "device"}


# ------------------------------------------------ item 4: not a regular file
@pytest.mark.parametrize("kind", KINDS)
def test_non_regular_index_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    """MmapCache.open and MmapCache() on a FIFO (socket, device, directory)
    at the index path: a CorruptCacheError naming the path, not a hang (the
    FIFO: open() for reading blocks until a writer comes) nor an OSError."""
    path = str(tmp_path / "t")
    plant(kind, path)
    p = run(
        "import sys\nfrom mmcache import MmapCache, CorruptCacheError\n"
        "for how in (lambda: MmapCache.open(sys.argv[1]), lambda: MmapCache(sys.argv[1], size=64)):\n"
        "    try:\n        how()\n    except CorruptCacheError as e:\n        print(e)\n",
        path,
    )
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 2, p.stdout
    for line in lines:
        assert path in line and KIND_WORDS[kind] in line


@pytest.mark.parametrize("which", ["lock", "roster", "segment"])
def test_fifo_among_the_other_files_is_refused_or_damage(tmp_path: Path, which: str) -> None:
    """A FIFO as the lock/control file or the roster: a clear CorruptCacheError
    at open. As a heap segment: damage (its entries are misses; the open
    repairs by rebuilding, see test_numbers_on_disk), never a hang."""
    path = str(tmp_path / "t")
    filled(path)
    name = {"lock": L.lock_name(path), "roster": L.roster_name(path, gen_of(path)), "segment": segment(path)}
    plant("fifo", name[which])
    code = """if 1:
        import sys
        from mmcache import MmapCache, CorruptCacheError
        try:
            c = MmapCache(sys.argv[1], size=64)
        except CorruptCacheError as e:
            print("refused", e)
        else:
            print("opened", c.get("k1"), c.verify())
    """
    p = run(code, path)
    assert p.returncode == 0, p.stderr
    if which == "segment":
        assert p.stdout.startswith("opened None"), p.stdout
    else:
        assert p.stdout.startswith("refused") and name[which] in p.stdout and "FIFO" in p.stdout, p.stdout


def test_django_backend_refuses_a_fifo_table(tmp_path: Path) -> None:
    pytest.importorskip("django", reason="Django is not installed")
    location = tmp_path / "cache"
    location.mkdir(mode=0o700)
    os.mkfifo(location / "mmcache")
    code = """if 1:
        import sys
        import django
        from django.conf import settings
        backend = "mmcache.contrib.django.MmapCacheBackend"
        settings.configure(CACHES={"default": {"BACKEND": backend, "LOCATION": sys.argv[1]}})
        django.setup()
        from django.core.cache import cache
        from mmcache import CorruptCacheError
        try:
            cache.get("k")
        except CorruptCacheError as e:
            print(e)
    """
    p = run(code, str(location))
    assert p.returncode == 0, p.stderr
    assert str(location / "mmcache") in p.stdout and "FIFO" in p.stdout


def test_cli_refuses_a_fifo_table(tmp_path: Path) -> None:
    path = str(tmp_path / "t")
    os.mkfifo(path)
    for cmd in ("stats", "ls", "verify"):
        argv = [sys.executable, "-m", "mmcache", cmd, path]
        p = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=HANG_GUARD)
        assert p.returncode == (2 if cmd == "verify" else 1), (cmd, p.stdout, p.stderr)  # 2: "damaged"
        assert "Traceback" not in p.stderr and path in p.stderr and "FIFO" in p.stderr


# ------------------------------------------ item 5: symlinks, other owners
def test_symlinked_heap_segment_is_never_extended(tmp_path: Path) -> None:
    """A heap segment replaced by a symlink: a put that must grow the segment
    refuses (UnsafePathError) instead of zero-extending the link's target, and
    a fresh open refuses the table, naming the segment."""
    path = str(tmp_path / "t")
    victim = tmp_path / "victim"
    victim.write_bytes(b"123456789")
    with MmapCache(path, size=64) as c:
        c.put("small", b"s")
        seg = segment(path)
        os.unlink(seg)
        os.symlink(victim, seg)
        with pytest.raises(UnsafePathError, match="symlink"):
            c.put("big", b"x" * (L.MIN_SEGMENT_BYTES * 2))  # past the mapped 64 KiB: growth
        assert c.get("small") == b"s"  # entries already mapped still read
    assert victim.read_bytes() == b"123456789"
    with pytest.raises(UnsafePathError, match=f"heap segment '{seg}'.*symlink"):
        MmapCache(path, size=64)
    assert victim.read_bytes() == b"123456789"


def test_swapped_heap_segment_is_not_extended(tmp_path: Path) -> None:
    """A heap segment replaced by another regular file of ours (not the one
    mapped): growth refuses it as damage rather than extending it."""
    path = str(tmp_path / "t")
    with MmapCache(path, size=64) as c:
        c.put("small", b"s")
        seg = segment(path)
        shutil.copyfile(seg, seg + ".copy")
        os.chmod(seg + ".copy", 0o600)
        os.replace(seg + ".copy", seg)
        with pytest.raises(CorruptCacheError, match="replaced"):
            c.put("big", b"x" * (L.MIN_SEGMENT_BYTES * 2))


@pytest.mark.parametrize("which", ["roster", "segment", "lock"])
def test_group_or_world_writable_files_are_refused(tmp_path: Path, which: str) -> None:
    path = str(tmp_path / "t")
    filled(path)
    name = {"lock": L.lock_name(path), "roster": L.roster_name(path, gen_of(path)), "segment": segment(path)}
    os.chmod(name[which], 0o666)
    with pytest.raises(UnsafePathError, match="writable by group and others"):
        MmapCache(path, size=64)
    with MmapCache(path, size=64, mode=0o666) as c:  # the table's mode allows it
        assert c.get("k1") == b"v1"


@needs_root
@pytest.mark.parametrize("which", ["roster", "segment"])
def test_roster_and_heap_of_another_user_are_refused(tmp_path: Path, which: str) -> None:
    path = str(tmp_path / "t")
    filled(path)
    name = {"roster": L.roster_name(path, gen_of(path)), "segment": segment(path)}[which]
    os.chown(name, NOBODY, NOBODY)
    with pytest.raises(UnsafePathError, match=f"'{name}' is owned by uid {NOBODY}"):
        MmapCache(path, size=64)
    with MmapCache(path, size=64, allow_foreign_owner=True) as c:
        assert c.get("k1") == b"v1"


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A world-writable directory (no sticky bit) that other users can reach
    (pytest's tmp_path lies under a root-only directory)."""
    d = Path(tempfile.mkdtemp(prefix="mmcache-shared-"))
    os.chmod(d, 0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@needs_root
def test_files_planted_by_another_user_are_refused(tmp_path: Path, shared_dir: Path) -> None:
    """In a directory another user can write (a shared /tmp-like place), that
    user replaces a heap segment with a file of their own, then with a
    symlink to a file of ours: root refuses both and extends nothing."""
    path = str(shared_dir / "t")
    filled(path)
    seg = segment(path)
    ours = tmp_path / "ours"
    ours.write_bytes(b"123456789")

    def replace_with_own_copy() -> None:
        data = Path(seg).read_bytes()
        tmp = seg + ".x"
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, seg)  # the directory is writable: rename over root's file

    os.chmod(seg, 0o644)  # readable by the planter (the refusal must be the owner's)
    in_child_as(NOBODY, replace_with_own_copy)
    assert os.stat(seg).st_uid == NOBODY
    with pytest.raises(UnsafePathError, match=f"owned by uid {NOBODY}"):
        MmapCache(path, size=64)

    def symlink_it() -> None:
        os.unlink(seg)
        os.symlink(ours, seg)

    in_child_as(NOBODY, symlink_it)
    with pytest.raises(UnsafePathError, match="symlink"), MmapCache(path, size=64) as c:
        c.put("big", b"x" * (L.MIN_SEGMENT_BYTES * 2))
    assert ours.read_bytes() == b"123456789"


# ------------------------------------------- item 6: every number on disk
U64_MAX, U32_MAX = 2**64 - 1, 2**32 - 1


def _poke(name: str, off: int, st: object, value: int) -> None:
    with open(name, "r+b") as f:
        f.seek(off)
        f.write(st.pack(value))  # type: ignore[attr-defined]


def _bump(name: str, off: int, st: object, by: int) -> None:
    """A number made slightly wrong (still in range): ``by`` added to it."""
    with open(name, "rb") as f:
        f.seek(off)
        value = st.unpack(f.read(st.size))[0]  # type: ignore[attr-defined]
    _poke(name, off, st, value + by)


def _slots(path: str, field: int, st: object, value: int) -> None:
    for slot in range(1, 64):
        _poke(path, L.slot_offset(slot, 96) + 64 + field, st, value)


DAMAGE: dict[str, Callable[[str], None]] = {
    "next_gen": lambda p: _poke(p, L.OFF_BUILD, L.U64, U64_MAX),
    "builder_pid": lambda p: _poke(p, L.OFF_BUILD + 8, L.U32, U32_MAX),
    "builder_gen": lambda p: _poke(p, L.OFF_BUILD + 16, L.U64, U64_MAX),
    "write_seq": lambda p: _poke(p, L.OFF_WRITE_SEQ, L.U64, U64_MAX),
    "occupied": lambda p: _poke(p, L.OFF_COUNTERS, L.U64, U64_MAX),
    "deleted": lambda p: _poke(p, L.OFF_COUNTERS + 8, L.U64, U64_MAX),
    "high_water_mark": lambda p: _poke(p, L.OFF_COUNTERS + 16, L.U64, U64_MAX),
    "heap_seg": lambda p: _poke(p, L.OFF_HEAP_SEG, L.U32, U32_MAX),
    "heap_seg_plus_one": lambda p: _bump(p, L.OFF_HEAP_SEG, L.U32, 1),  # a segment never made
    "heap_seg_plus_two": lambda p: _bump(p, L.OFF_HEAP_SEG, L.U32, 2),
    "heap_tail": lambda p: _poke(p, L.OFF_HEAP_SEG + 8, L.U64, U64_MAX),
    "live_bytes": lambda p: _poke(p, L.OFF_BYTES, L.U64, U64_MAX),
    "dead_bytes": lambda p: _poke(p, L.OFF_BYTES + 8, L.U64, U64_MAX),
    "log_count": lambda p: _poke(p, L.OFF_LOG, L.U32, U32_MAX),
    "stripe_pids": lambda p: [
        _poke(L.lock_name(p), L.OFF_STATS + i * L.STATS_STRIPE_BYTES + L.STATS_PID, L.U32, U32_MAX)
        for i in range(L.STATS_STRIPES)
    ],
    "stripe_counts": lambda p: [
        _poke(L.lock_name(p), L.OFF_STATS + i * L.STATS_STRIPE_BYTES + 8 * f, L.U64, U64_MAX)
        for i in range(L.STATS_STRIPES)
        for f in range(7)
    ],
    "slot_record_lengths": lambda p: _slots(p, L.OFF_SLOT_RECLEN, L.U32, U32_MAX),
    "slot_roster_positions": lambda p: _slots(p, L.OFF_SLOT_ROSTER, L.U32, U32_MAX),
    "slot_mtimes": lambda p: _slots(p, L.OFF_SLOT_MTIME, L.U64, U64_MAX),
}
LOSSY = {  # damage that makes records unreachable: those entries are misses (never wrong)
    "slot_segments": lambda p: _slots(p, L.OFF_SLOT_LOC, L.U32, U32_MAX),
    "slot_offsets": lambda p: _slots(p, L.OFF_SLOT_LOC + 4, L.U32, U32_MAX),
    "record_lengths": lambda p: [_poke(segment(p), L.SEG_HEADER_BYTES + i, L.U32, U32_MAX) for i in (16, 20)],
    "record_expiry": lambda p: _poke(segment(p), L.SEG_HEADER_BYTES + 8, L.U64, U64_MAX),
}


def _workload(c: MmapCache) -> None:
    """Every path that reads the damaged numbers: writes, reads, eviction,
    listing, stats, a compaction and a rebuild."""
    for i in range(60):
        c.put(f"w{i}", b"y" * 300)
        c.get(f"w{i}")
    c.delete("w0")
    c.evict(2)
    c.get_entry("w59")
    c.list_items()
    c.get_stats()
    c.atomic_rebuild()
    c.put("last", b"z")
    assert c.get("last") == b"z"


def _open_damaged(path: str) -> MmapCache:
    return MmapCache(path, size=64, compact_min_bytes=1, compact_threshold=0.01, max_entries=20)


@pytest.mark.parametrize("field", sorted(DAMAGE) + sorted(LOSSY))
@pytest.mark.parametrize("when", ["closed", "open"])
def test_damaged_numbers_are_healed_not_raised(path: str, field: str, when: str) -> None:
    """A number on disk out of its range, damaged while no process had the
    table open or under a process using it: no OverflowError / struct.error
    from any operation; the table repairs; entries read back right (or, for
    damage to where a record is, as misses)."""
    damage = DAMAGE.get(field) or LOSSY[field]
    with _open_damaged(path) as c:
        for i in range(10):
            c.put(f"k{i}", b"v%d" % i)
        if when == "open":
            damage(path)
            for i in range(10):
                assert c.get(f"k{i}") in (b"v%d" % i, None)
            _workload(c)
    if when == "closed":
        damage(path)
    with _open_damaged(path) as c:
        if when == "closed":
            for i in range(10):
                got = c.get(f"k{i}")
                assert got == b"v%d" % i or (field in LOSSY and got is None), (i, got)
        _workload(c)
        c.repair()
        assert c.verify() == []


def test_heap_segment_that_is_a_directory_is_a_miss_then_repaired(path: str) -> None:
    """A directory where heap segment 0 was: gets are misses (not
    IsADirectoryError each time), the next write repairs (a rebuild without
    the lost records) and the table works on; the directory is not followed."""
    with MmapCache(path, size=64) as c:
        c.put("k", b"v")
    plant("directory", segment(path))
    with MmapCache(path, size=64) as c:
        assert c.get("k") is None and c.get_entry("k") is None and "k" not in c
        c.put("n", b"new")
        assert c.get("n") == b"new" and c.verify() == []
    with MmapCache(path, size=64) as c:
        assert c.get("n") == b"new"


def test_an_older_damaged_segment_makes_the_next_put_rebuild(path: str) -> None:
    """A heap segment another process wrote, damaged before this one maps it
    and not the one written to (so appending still works): a read finds it,
    and the next put past the staleness check rebuilds the table (the writer
    answers Room(PURGE), the table acts) rather than writing on beside it."""
    opts = {"size": 1024, "max_segment_bytes": 1 << 16, "staleness_check_interval": 0.01}
    with MmapCache(path, **opts) as c:  # type: ignore[arg-type]
        c.put("first", b"1")  # segment 0, mapped here
        writes = f"with MmapCache({path!r}, **{opts!r}) as o:\n"
        writes += " for i in range(30): o.put(f'k{i}', b'x' * 5000)"
        subprocess.run([sys.executable, "-c", "from mmcache import MmapCache\n" + writes], check=True)
        assert c.get_stats()["heap_segments"] >= 3
        plant("directory", segment(path, 1))  # never mapped here
        gen = c.get_stats()["generation"]
        assert c.get("k20") is None  # in segment 1: a miss, and the damage is known
        time.sleep(0.05)  # past the staleness interval: the put checks the generation
        c.put("n", b"new")
        assert c.get_stats()["generation"] > gen
        assert c.verify() == []
        assert c.get("n") == b"new" and c.get("first") == b"1" and c.get("k29") == b"x" * 5000


def test_generation_out_of_range_is_a_clear_error(path: str) -> None:
    filled(path)
    old = L.roster_name(path, gen_of(path))
    _poke(path, OFF_GENERATION, L.U64, U64_MAX)
    os.rename(old, L.roster_name(path, U64_MAX))
    with pytest.raises(CorruptCacheError, match="impossible header"):
        MmapCache(path, size=64)
