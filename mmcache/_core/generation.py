"""One generation of a table's files, mapped into this process.

A generation is an index, a roster and heap segments that were written
together and refer only to each other. ``create`` writes a new one (the
caller decides where the index goes: a temporary name during a rebuild);
``open`` maps an existing one and checks that it is what it claims to be.
"""

from __future__ import annotations

import array
import mmap
import os
import struct
import sys
import time
from dataclasses import dataclass

from ..errors import CorruptCacheError, FormatVersionError
from . import layout
from .fs import open_checked, reserve
from .heap import Heap

if sys.byteorder != "little" or array.array("I").itemsize != 4:  # pragma: no cover
    raise ImportError("mmcache's roster snapshot needs little-endian 32-bit array('I')")


@dataclass(frozen=True)
class Params:
    """What fixes the shape of the files (stored in the index header)."""

    size: int
    slot_size: int
    key_size: int
    max_segment_bytes: int


class Generation:
    """The mapped files of one generation."""

    def __init__(
        self, path: str, heap_path: str, params: Params, gen: int,
        idx: mmap.mmap, roster: mmap.mmap, ino: int, mode: int,
        foreign_ok: bool = False, writable: bool = True,
    ) -> None:  # fmt: skip
        self.path = path
        self.heap_path = heap_path
        self.params = params
        self.gen = gen
        self.idx = idx
        self.roster = roster
        self.ino = ino
        self.writable = writable  # False: every map is read-only (a read-only cache)
        self.heap = Heap(heap_path, gen, params.max_segment_bytes, mode, foreign_ok, writable)
        self.nslots = params.size - 1  # data slots are numbered 1 .. size-1
        self.slot_size = params.slot_size  # plain attributes for the hot paths
        self.key_size = params.key_size
        self.needs_repair = False  # set by a writer that met a damaged roster link
        self.caps: tuple[int, int] | None = None  # (live, load) caps, set by _write
        self.index_bytes = layout.index_bytes(params.size, params.slot_size)
        # A whole slot (key, then SLOT_HEAD's fields) as one struct: a put of
        # a new key and a rebuild write a slot with one call.
        self.slot_struct = struct.Struct(f"<{params.key_size}s" + layout.SLOT_HEAD.format[1:])
        # The roster file's u64 view: roster entries, then one recency stamp
        # per slot; slot s (1-based) has its stamp at rec_base + s - 1.
        self.recency = memoryview(roster).cast("Q")
        self.rec_base = layout.recency_index(params.size, 1)
        # What MmapCache's probe loads as one tuple.
        self.hot = (idx, self.nslots, self.slot_size, self.rec_base, self.recency, self.heap.maps)

    # ---------------------------------------------------------------- create
    @staticmethod
    def create(index_dest: str, path: str, heap_path: str, p: Params, gen: int, mode: int) -> None:
        """Write the roster, heap segment 0 and the index (at ``index_dest``).

        Every byte is reserved with fallocate first: the index and roster are
        fully allocated up front, so the hot path never stores into a hole.
        """
        rname = layout.roster_name(path, gen)
        created: list[str] = []
        try:
            Heap.create_segment(heap_path, gen, 0, layout.MIN_SEGMENT_BYTES, mode)
            created.append(layout.segment_name(heap_path, gen, 0))
            rbytes = layout.roster_bytes(p.size)
            _write_file(
                rname,
                rbytes,
                layout.ROSTER_HEADER.pack(layout.ROSTER_MAGIC, layout.FORMAT_VERSION, 0, gen, p.size),
                mode,
            )
            created.append(rname)
            header = layout.HEADER.pack(
                layout.INDEX_MAGIC, layout.FORMAT_VERSION, 0, p.size, p.slot_size, p.key_size,
                p.max_segment_bytes, gen, 0, 0, 0, 0, 0, layout.SEG_HEADER_BYTES, 0, 0,
                time.time_ns(), 0,
            )  # fmt: skip
            _write_file(index_dest, layout.index_bytes(p.size, p.slot_size), header, mode)
        except BaseException:
            for name in created:
                _unlink(name)
            raise

    # ------------------------------------------------------------------ open
    @classmethod
    def open(cls, path: str, heap_path: str, mode: int, name: str | None = None, *,
             foreign_ok: bool = False, writable: bool = True) -> Generation:  # fmt: skip
        """Map the index at ``path``, the roster it names and its heap segments.

        ``name`` is the table's path when the index is still at a temporary
        name (during a rebuild); the roster is named after the table. Every
        file goes through ``_fs.open_checked``; ``writable=False`` opens and
        maps them read-only.

        Raises FileNotFoundError if a rebuild replaced the files while we were
        opening them (the caller retries), CorruptCacheError for a damaged or
        foreign file, IncompatibleCacheError for another format version,
        UnsafePathError for a symlink or another user's file,
        ReadOnlyCacheError if ``writable`` and the files can only be read.
        """
        flags = os.O_RDWR if writable else os.O_RDONLY
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        fd = open_checked(path, flags, "mmcache index", mode=mode, foreign_ok=foreign_ok)
        try:
            st = os.fstat(fd)
            if st.st_size < layout.HEADER_BYTES:
                raise CorruptCacheError(f"{path!r} is too short to be an mmcache index")
            idx = mmap.mmap(fd, st.st_size, access=access)
        finally:
            os.close(fd)
        p, gen = read_header(idx, path)
        if st.st_size != layout.index_bytes(p.size, p.slot_size):
            raise CorruptCacheError(
                f"{path!r} is {st.st_size} bytes; its header says "
                f"{layout.index_bytes(p.size, p.slot_size)} (truncated or damaged)"
            )
        rname = layout.roster_name(name or path, gen)
        # FileNotFoundError: raced a rebuild
        rfd = open_checked(rname, flags, "mmcache roster", mode=mode, foreign_ok=foreign_ok)
        try:
            rsize = os.fstat(rfd).st_size
            if rsize != layout.roster_bytes(p.size):
                raise CorruptCacheError(f"roster {rname!r} has the wrong size ({rsize} bytes)")
            roster = mmap.mmap(rfd, rsize, access=access)
        finally:
            os.close(rfd)
        magic, _v, _pad, rgen, cap = layout.ROSTER_HEADER.unpack_from(roster, 0)
        if magic != layout.ROSTER_MAGIC or rgen != gen or cap != p.size:
            raise CorruptCacheError(f"{rname!r} is not the roster of generation {gen}")
        g = cls(name or path, heap_path, p, gen, idx, roster, st.st_ino, mode, foreign_ok, writable)
        g.heap.map_existing(layout.U32.unpack_from(idx, layout.OFF_HEAP_SEG)[0])
        return g

    def touch_recency(self, slot: int, mono_ns: int) -> None:
        """Stamp ``slot`` as used at ``mono_ns`` (time.monotonic_ns(), which
        every process on the host shares; see _layout's roster)."""
        self.recency[self.rec_base + slot - 1] = mono_ns

    @property
    def retired(self) -> bool:
        return bool(self.idx[layout.OFF_FLAGS] & layout.FLAG_RETIRED)

    def files(self) -> list[str]:
        return [self.path, layout.roster_name(self.path, self.gen), *self.heap.segment_files()]

    def close(self) -> None:
        # Maps are dropped rather than closed: another thread of this process
        # may be mid-read; refcounting unmaps them once nobody uses them.
        self.heap.close()


def read_header(idx: mmap.mmap | bytes, path: str) -> tuple[Params, int]:
    """Validate the index header and return its parameters and generation."""
    head = layout.HEADER.unpack_from(idx, 0)
    (magic, version, _flags, size, slot_size, key_size, max_seg, gen, *_rest) = head
    if magic != layout.INDEX_MAGIC:
        raise CorruptCacheError(f"{path!r} is not an mmcache index (bad magic {magic!r})")
    if version != layout.FORMAT_VERSION:
        age = "an older" if version < layout.FORMAT_VERSION else "a newer"
        raise FormatVersionError(
            f"{path!r} has format version {version} (written by {age} mmcache); this mmcache reads "
            f"version {layout.FORMAT_VERSION}. If it holds a cache, remove its files (the index, .lock, "
            ".roster.*, .heap.*) once no process of that version has it open, and a new table is "
            "created; else open it with the mmcache that wrote it",
            path,
            version,
        )
    ok = (
        2 <= size <= layout.MAX_SIZE
        and layout.MIN_KEY_SIZE <= key_size <= layout.MAX_KEY_SIZE
        and key_size + layout.SLOT_FIXED <= slot_size <= MAX_SLOT_SIZE
        and layout.MIN_SEGMENT_BYTES <= max_seg <= layout.MAX_SEGMENT_LIMIT
        and 1 <= gen < GEN_LIMIT
    )
    if not ok:
        raise CorruptCacheError(f"{path!r} has an impossible header (damaged)")
    return Params(size, slot_size, key_size, max_seg), gen


# Bounds of plausible numbers in a header (anything past them is damage):
GEN_LIMIT = 1 << 48  # generation numbers (a rebuild every microsecond for 8 years)
PID_LIMIT = 1 << 22  # process ids (Linux's largest pid_max)
NUM_LIMIT = 1 << 62  # byte counts and the write sequence
MAX_SLOT_SIZE = 1 << 16


def numbers_sane(g: Generation) -> bool:
    """The header's numbers that are not counters (see _maintenance's
    counters_sane, which asks this too): byte counts, the write sequence and
    the rebuild fields, each in a range it can really take. Out of range is
    damage that ``heal_numbers`` (via repair) resets; used as they are, they
    were an OverflowError or a struct.error on a later put."""
    live, dead = layout.BYTES.unpack_from(g.idx, layout.OFF_BYTES)
    seq: int = layout.U64.unpack_from(g.idx, layout.OFF_WRITE_SEQ)[0]
    return bool(live < NUM_LIMIT and dead < NUM_LIMIT and seq < NUM_LIMIT) and build_sane(g)


def build_sane(g: Generation) -> bool:
    """The rebuild fields: next_gen, the builder's pid and generation."""
    # (any nonce is plausible)
    next_gen, bpid, _nonce, bgen = layout.BUILD.unpack_from(g.idx, layout.OFF_BUILD)
    return bool(next_gen < GEN_LIMIT and bpid < PID_LIMIT and bgen < GEN_LIMIT)


def heal_numbers(g: Generation) -> None:
    """Reset what ``numbers_sane`` refuses. Under the writer lock, from
    repair (which recomputes the byte counts itself). Implausible rebuild
    fields name no real builder: they are cleared, with the change log."""
    if layout.U64.unpack_from(g.idx, layout.OFF_WRITE_SEQ)[0] >= NUM_LIMIT:
        layout.U64.pack_into(g.idx, layout.OFF_WRITE_SEQ, 0)
    if not build_sane(g):
        layout.BUILD.pack_into(g.idx, layout.OFF_BUILD, g.gen, 0, 0, 0)
        g.idx[layout.OFF_LOGGING] = 0


def _write_file(name: str, nbytes: int, head: bytes, mode: int) -> None:
    fd = open_checked(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, "mmcache file", mode=mode)
    try:
        reserve(fd, 0, nbytes, name)
        os.pwrite(fd, head, 0)
    except BaseException:
        os.close(fd)
        _unlink(name)
        raise
    os.close(fd)


def _unlink(name: str) -> None:
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass


def roster_snapshot(g: Generation, occ: int, strict: bool = False) -> array.array[int]:
    """The live slot numbers; with ``strict=False`` numbers outside the table
    (a damaged roster) are dropped rather than trusted."""
    occ = max(0, min(occ, g.params.size))
    a = array.array("I")
    a.frombytes(g.roster[layout.ROSTER_HEADER_BYTES : layout.ROSTER_HEADER_BYTES + 4 * occ])
    if not strict and a and (min(a) < 1 or max(a) > g.nslots):
        a = array.array("I", (x for x in a if 1 <= x <= g.nslots))
    return a


def counters_sane(g: Generation, heap: bool = True) -> bool:
    """Cheap plausibility check of the header counters (a damaged header or a
    writer killed mid-update makes the next writer repair first); with
    ``heap``, a heap segment known damaged fails it too."""
    occ, dele, hwm = layout.COUNTERS.unpack_from(g.idx, layout.OFF_COUNTERS)
    seg, _dirty, tail = layout.HEAP_POS.unpack_from(g.idx, layout.OFF_HEAP_SEG)
    return bool(
        occ + dele <= g.nslots
        and hwm <= g.nslots
        and layout.SEG_HEADER_BYTES <= tail <= g.params.max_segment_bytes
        and seg < 1 << 20
        and numbers_sane(g)
        and not (heap and g.heap.damaged)
    )
