"""Segmented, append-only heap of self-checking records.

Each generation of a table has segments ``<heap_path>.<gen>.<seg>``. Records
are written once, at the tail of the current segment, under the writer lock,
and never rewritten: a reader that holds an old (segment, offset) always finds
either that complete record or, if it raced a writer, one whose checksum or
key does not match, which it treats as "try again".

Segments grow in place by reserving blocks (posix_fallocate) before mapping
them, never by ftruncate into a sparse hole: a store into an unallocated page
on a full disk is a SIGBUS, a failed fallocate is an exception. On ext4 the
reserved space is then zero-filled with write() (``_fs.reserve``): stores
into it cost a plain page fault instead of an extent conversion each. Files
only ever grow; a reader whose map is shorter than a record remaps.
"""

from __future__ import annotations

import mmap
import os
from typing import cast

from ..errors import CorruptCacheError, DiskFullError, ValueTooLargeError
from . import layout
from .fs import open_checked, populate, reserve


class Heap:
    """The heap segments of one generation, as seen by one process."""

    def __init__(self, heap_path: str, gen: int, max_segment_bytes: int, mode: int,
                 foreign_ok: bool = False, writable: bool = True) -> None:  # fmt: skip
        self.heap_path = heap_path
        self.gen = gen
        self.max_segment_bytes = max_segment_bytes
        self.mode = mode
        self.foreign_ok = foreign_ok  # segments of another user are used (allow_foreign_owner)
        self.writable = writable  # False: opened and mapped read-only (a read-only cache)
        # Per segment: the map, a memoryview of it (for zero-copy checksums),
        # and the (device, inode) mapped, which growth checks it extends.
        # Index = segment number.
        self.maps: list[mmap.mmap | None] = []
        self.views: list[memoryview | None] = []
        self.ids: list[tuple[int, int] | None] = []
        # Segments found there but unusable (not a regular file, too short, a
        # wrong header): their records are misses; a writer repairs (rebuilds).
        self.damaged: set[int] = set()
        # Fault grown space in at once (see _fs.populate): set by rebuilds,
        # which fill it at once; a put's growth under the writer lock does
        # not, so as not to make other writers wait for it.
        self.prefault = False

    # ------------------------------------------------------------- creation
    @staticmethod
    def create_segment(heap_path: str, gen: int, seg: int, initial: int, mode: int) -> None:
        """Write a new segment file with its header and ``initial`` reserved bytes."""
        name = layout.segment_name(heap_path, gen, seg)
        fd = open_checked(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, "heap segment", mode=mode)
        try:
            reserve(fd, 0, max(initial, layout.SEG_HEADER_BYTES), f"heap segment {name}", fill=True)
            os.pwrite(fd, layout.SEG_HEADER.pack(layout.SEG_MAGIC, layout.FORMAT_VERSION, seg, gen), 0)
        except BaseException:
            os.close(fd)
            os.unlink(name)
            raise
        os.close(fd)

    # -------------------------------------------------------------- mapping
    def view(self, seg: int, need: int) -> memoryview | None:
        """A view of segment ``seg`` at least ``need`` bytes long, or None.

        Called only off the fast path: when a segment is not mapped yet or a
        record lies past the end of our (older, shorter) map of it. A segment
        that is not a regular file is damage (None: a miss, which repair
        heals); a symlink or another user's file raises UnsafePathError.
        """
        cur = self.views[seg] if seg < len(self.views) else None
        if cur is not None and len(cur) >= need:
            return cur
        if not 0 <= seg < 1 << 32:
            return None  # a damaged slot's bogus segment number
        name = layout.segment_name(self.heap_path, self.gen, seg)
        flags = os.O_RDWR if self.writable else os.O_RDONLY
        try:
            fd = open_checked(name, flags, "heap segment", mode=self.mode, foreign_ok=self.foreign_ok)
        except FileNotFoundError:
            return None  # unlinked by a rebuild, or a damaged slot's bogus segment number
        except CorruptCacheError:
            self.damaged.add(seg)  # a directory, FIFO ... planted or left there
            return None
        try:
            st = os.fstat(fd)
            size = st.st_size
            if size < layout.SEG_HEADER_BYTES:
                self.damaged.add(seg)
            if size < max(need, layout.SEG_HEADER_BYTES):
                return None
            access = mmap.ACCESS_WRITE if self.writable else mmap.ACCESS_READ
            mm = mmap.mmap(fd, size, access=access)
        finally:
            os.close(fd)
        magic, version, number, gen = layout.SEG_HEADER.unpack_from(mm, 0)
        if magic != layout.SEG_MAGIC or number != seg or gen != self.gen:
            self.damaged.add(seg)
            return None  # damaged: its records are unreadable (verify() reports it)
        return self._install(seg, mm, (st.st_dev, st.st_ino))

    def _install(self, seg: int, mm: mmap.mmap, ident: tuple[int, int]) -> memoryview:
        """Record a new map of segment ``seg``; its view."""
        # Threads of this process map segments side by side, and a generation
        # switch in another one may replace these lists (close): each list is
        # taken once and grown on its own, so no index can run past its end.
        maps, views, ids = self.maps, self.views, self.ids
        for lst in (maps, views, ids):
            while len(lst) <= seg:
                lst.append(None)
        # Older maps are dropped, not closed: another thread may still be
        # slicing them; refcounting unmaps them when the last user lets go.
        view = memoryview(mm)
        maps[seg] = mm
        views[seg] = view
        ids[seg] = ident
        return view

    def mapped(self, seg: int, need: int) -> mmap.mmap | None:
        """The map of segment ``seg`` reaching ``need`` bytes, to slice bytes
        from; None as ``view``. Readers slice from this, never ``maps[seg]``:
        a generation switch in another thread empties the old heap's lists
        (``close``) while a read of that generation goes on."""
        mv = self.view(seg, need)
        return None if mv is None else cast(mmap.mmap, mv.obj)

    def map_existing(self, last: int) -> None:
        """Map segments 0 .. ``last`` (the header's current one) now, so that
        a planted or foreign segment is refused when the table is opened,
        not at some later get. Stops at the first missing one."""
        for seg in range(min(last, 1 << 16) + 1):
            if self.view(seg, layout.SEG_HEADER_BYTES) is None:
                break

    # -------------------------------------------------------------- writing
    def append(self, seg: int, tail: int, rec_len: int) -> tuple[int, int, memoryview]:
        """Find room for ``rec_len`` bytes at (seg, tail), growing or rolling over.

        Returns (segment, offset, view) where the caller writes the record.
        Raises DiskFullError before anything is published if the disk is full.
        """
        if not (0 <= seg < 1 << 20 and layout.SEG_HEADER_BYTES <= tail <= self.max_segment_bytes):
            raise CorruptCacheError(f"heap position ({seg}, {tail}) of {self.heap_path!r} is damaged")
        if rec_len > self.max_segment_bytes - layout.SEG_HEADER_BYTES:
            raise ValueTooLargeError(
                f"a record of {rec_len} bytes does not fit in a heap segment of "
                f"{self.max_segment_bytes} bytes (raise max_segment_bytes)"
            )
        if tail + rec_len > self.max_segment_bytes:
            seg, tail = seg + 1, layout.SEG_HEADER_BYTES
            initial = min(self.max_segment_bytes, max(layout.MIN_SEGMENT_BYTES, rec_len * 2))
            try:
                Heap.create_segment(self.heap_path, self.gen, seg, initial, self.mode)
            except FileExistsError:
                # Left by a writer killed before it published the segment (the
                # header still names the previous one), so nothing refers to it.
                os.unlink(layout.segment_name(self.heap_path, self.gen, seg))
                Heap.create_segment(self.heap_path, self.gen, seg, initial, self.mode)
        end = tail + rec_len
        mv = self.views[seg] if seg < len(self.views) else None
        if mv is None or len(mv) < end:
            mv = self._grow(seg, end)
        return seg, tail, mv

    def _grow(self, seg: int, end: int) -> memoryview:
        name = layout.segment_name(self.heap_path, self.gen, seg)
        # Extended only through a checked descriptor (never a symlink, never
        # another user's file), and only if it is the file we have mapped:
        # a segment swapped for another file since is damage, not space.
        try:
            fd = open_checked(name, os.O_RDWR, "heap segment", mode=self.mode, foreign_ok=self.foreign_ok)
        except FileNotFoundError:
            # The header names a segment that was never made: its heap position
            # is damaged (the writer repairs and rebuilds on this error).
            raise CorruptCacheError(f"heap segment {name} is missing (damaged heap position)") from None
        try:
            st = os.fstat(fd)
            known = self.ids[seg] if seg < len(self.ids) else None
            if known is not None and known != (st.st_dev, st.st_ino):
                raise CorruptCacheError(f"heap segment {name} was replaced by another file (damaged)")
            size = st.st_size
            if size < end:
                # Grow by a quarter (1 MiB .. 16 MiB steps): few fallocate
                # calls, at most ~25 % of a segment reserved but unused, and
                # the zero fill (see reserve) under the writer lock bounded
                # to ~2-8 ms.
                step = min(max(size // 4, 1 << 20), 16 << 20)
                new = min(self.max_segment_bytes, max(end, size + step))
                try:
                    reserve(fd, size, new - size, f"heap segment {name}", fill=True)
                except DiskFullError:
                    if new == end:
                        raise
                    reserve(fd, size, end - size, f"heap segment {name}", fill=True)  # just enough
        finally:
            os.close(fd)
        mv = self.view(seg, end)
        if mv is None:
            raise CorruptCacheError(f"heap segment {name} is damaged (repair() rebuilds the table)")
        if self.prefault:
            populate(self.maps[seg], size, len(mv))  # type: ignore[arg-type]
        return mv

    def segment_files(self) -> list[str]:
        """Names of this generation's segment files that exist on disk."""
        out, seg = [], 0
        while os.path.exists(name := layout.segment_name(self.heap_path, self.gen, seg)):
            out.append(name)
            seg += 1
        return out

    def close(self) -> None:
        self.maps = []
        self.views = []
        self.ids = []
        self.damaged = set()
