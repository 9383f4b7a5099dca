"""One generation of a table's files, mapped into this process.

A generation is an index, a roster and heap segments that were written
together and refer only to each other. ``create`` writes a new one (the
caller decides where the index goes: a temporary name during a rebuild);
``open`` maps an existing one and checks that it is what it claims to be.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from dataclasses import dataclass

from . import _layout as L
from ._fs import reserve
from ._heap import Heap
from .errors import CorruptCacheError, FormatVersionError


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
    ) -> None:  # fmt: skip
        self.path = path
        self.heap_path = heap_path
        self.params = params
        self.gen = gen
        self.idx = idx
        self.roster = roster
        self.ino = ino
        self.heap = Heap(heap_path, gen, params.max_segment_bytes, mode)
        self.nslots = params.size - 1  # data slots are numbered 1 .. size-1
        self.slot_size = params.slot_size  # plain attributes for the hot paths
        self.key_size = params.key_size
        self.needs_repair = False  # set by a writer that met a damaged roster link
        self.caps: tuple[int, int] | None = None  # (live, load) caps, set by _write
        self.index_bytes = L.index_bytes(params.size, params.slot_size)
        # A whole slot (key, then SLOT_HEAD's fields) as one struct: a put of
        # a new key and a rebuild write a slot with one call.
        self.slot_struct = struct.Struct(f"<{params.key_size}s" + L.SLOT_HEAD.format[1:])
        # The roster file's u64 view: roster entries, then one recency stamp
        # per slot; slot s (1-based) has its stamp at rec_base + s - 1.
        self.recency = memoryview(roster).cast("Q")
        self.rec_base = L.recency_index(params.size, 1)
        # What MmapCache's probe loads as one tuple.
        self.hot = (idx, self.nslots, self.slot_size, self.rec_base, self.recency, self.heap.maps)

    # ---------------------------------------------------------------- create
    @staticmethod
    def create(index_dest: str, path: str, heap_path: str, p: Params, gen: int, mode: int) -> None:
        """Write the roster, heap segment 0 and the index (at ``index_dest``).

        Every byte is reserved with fallocate first: the index and roster are
        fully allocated up front, so the hot path never stores into a hole.
        """
        rname = L.roster_name(path, gen)
        created: list[str] = []
        try:
            Heap.create_segment(heap_path, gen, 0, L.MIN_SEGMENT_BYTES, mode)
            created.append(L.segment_name(heap_path, gen, 0))
            rbytes = L.roster_bytes(p.size)
            _write_file(
                rname,
                rbytes,
                L.ROSTER_HEADER.pack(L.ROSTER_MAGIC, L.FORMAT_VERSION, 0, gen, p.size),
                mode,
            )
            created.append(rname)
            header = L.HEADER.pack(
                L.INDEX_MAGIC, L.FORMAT_VERSION, 0, p.size, p.slot_size, p.key_size,
                p.max_segment_bytes, gen, 0, 0, 0, 0, 0, L.SEG_HEADER_BYTES, 0, 0,
                time.time_ns(), 0,
            )  # fmt: skip
            _write_file(index_dest, L.index_bytes(p.size, p.slot_size), header, mode)
        except BaseException:
            for name in created:
                _unlink(name)
            raise

    # ------------------------------------------------------------------ open
    @classmethod
    def open(cls, path: str, heap_path: str, mode: int, name: str | None = None) -> Generation:
        """Map the index at ``path`` and the roster it names.

        ``name`` is the table's path when the index is still at a temporary
        name (during a rebuild); the roster is named after the table.

        Raises FileNotFoundError if a rebuild replaced the files while we were
        opening them (the caller retries), CorruptCacheError for a damaged or
        foreign file, IncompatibleCacheError for another format version.
        """
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if st.st_size < L.HEADER_BYTES:
                raise CorruptCacheError(f"{path!r} is too short to be an mmcache index")
            idx = mmap.mmap(fd, st.st_size)
        finally:
            os.close(fd)
        p, gen = read_header(idx, path)
        if st.st_size != L.index_bytes(p.size, p.slot_size):
            raise CorruptCacheError(
                f"{path!r} is {st.st_size} bytes; its header says "
                f"{L.index_bytes(p.size, p.slot_size)} (truncated or damaged)"
            )
        rname = L.roster_name(name or path, gen)
        rfd = os.open(rname, os.O_RDWR | os.O_CLOEXEC)  # FileNotFoundError: raced a rebuild
        try:
            rsize = os.fstat(rfd).st_size
            if rsize != L.roster_bytes(p.size):
                raise CorruptCacheError(f"roster {rname!r} has the wrong size ({rsize} bytes)")
            roster = mmap.mmap(rfd, rsize)
        finally:
            os.close(rfd)
        magic, _v, _pad, rgen, cap = L.ROSTER_HEADER.unpack_from(roster, 0)
        if magic != L.ROSTER_MAGIC or rgen != gen or cap != p.size:
            raise CorruptCacheError(f"{rname!r} is not the roster of generation {gen}")
        return cls(name or path, heap_path, p, gen, idx, roster, st.st_ino, mode)

    def touch_recency(self, slot: int, mono_ns: int) -> None:
        """Stamp ``slot`` as used at ``mono_ns`` (time.monotonic_ns(), which
        every process on the host shares; see _layout's roster)."""
        self.recency[self.rec_base + slot - 1] = mono_ns

    @property
    def retired(self) -> bool:
        return bool(self.idx[L.OFF_FLAGS] & L.FLAG_RETIRED)

    def files(self) -> list[str]:
        return [self.path, L.roster_name(self.path, self.gen), *self.heap.segment_files()]

    def close(self) -> None:
        # Maps are dropped rather than closed: another thread of this process
        # may be mid-read; refcounting unmaps them once nobody uses them.
        self.heap.close()


def read_header(idx: mmap.mmap | bytes, path: str) -> tuple[Params, int]:
    """Validate the index header and return its parameters and generation."""
    (magic, version, _flags, size, slot_size, key_size, max_seg, gen, *_rest) = L.HEADER.unpack_from(idx, 0)
    if magic != L.INDEX_MAGIC:
        raise CorruptCacheError(f"{path!r} is not an mmcache index (bad magic {magic!r})")
    if version != L.FORMAT_VERSION:
        age = "an older" if version < L.FORMAT_VERSION else "a newer"
        raise FormatVersionError(
            f"{path!r} has format version {version} (written by {age} mmcache); this mmcache reads "
            f"version {L.FORMAT_VERSION}. If it holds a cache, remove its files (the index, .lock, "
            ".roster.*, .heap.*) once no process of that version has it open, and a new table is "
            "created; else open it with the mmcache that wrote it",
            path,
            version,
        )
    ok = (
        2 <= size <= L.MAX_SIZE
        and L.MIN_KEY_SIZE <= key_size <= L.MAX_KEY_SIZE
        and slot_size >= key_size + L.SLOT_FIXED
        and L.MIN_SEGMENT_BYTES <= max_seg <= L.MAX_SEGMENT_LIMIT
        and gen >= 1
    )
    if not ok:
        raise CorruptCacheError(f"{path!r} has an impossible header (damaged)")
    return Params(size, slot_size, key_size, max_seg), gen


def _write_file(name: str, nbytes: int, head: bytes, mode: int) -> None:
    fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
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
