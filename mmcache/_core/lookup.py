"""MmapCache's general lookup: the read path for what the memo and the fast
probe do not answer (first reads of hashed keys, handles with a secret,
a racing writer, an index another process is replacing), and the reads
that return more than the value (``get_entry``).

A mixin of ``MmapCache`` (the hot path, ``get``, stays in ``table``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, cast

from xxhash import xxh3_64_intdigest

from . import layout, record
from .generation import Generation
from .record import Entry

if TYPE_CHECKING:
    from ..table import Key, MmapCache

_HB = layout.HEADER_BYTES
_HEAD = record.HEAD.unpack_from
_OFF_KEY = record.OFF_KEY
_OFF_CHECKED = record.OFF_CHECKED
_LOC = layout.SLOT_LOC.unpack_from
_time_ns = time.time_ns
_monotonic_ns = time.monotonic_ns
_MISS = object()


class TableLookup:
    """The general read path of ``MmapCache``."""

    def _me(self) -> MmapCache:
        return cast("MmapCache", self)

    def _get_slow(self, key: Key, default: Any, with_flags: bool) -> Any:
        c = self._me()
        s = c._shared()
        kb, kf, probe, h = c._prep(key)
        g = s.gen
        if g.idx[layout.OFF_FLAGS] or _monotonic_ns() >= s.next_check:
            g = s.refresh()
        for _ in range(3):
            r = c._lookup(g, kb, kf, probe, h)
            if r is None:
                break
            if r is not False:
                s.local[layout.HITS] += 1
                return (r[0], r[1]) if with_flags else r[0]
            # Unsure: a racing writer, or a retired generation whose files a
            # later rebuild has removed (its segments cannot be mapped now).
            g = s.refresh() if s.gen.retired else s.gen
        s.local[layout.MISSES] += 1
        return default

    def _lookup(self, g: Generation, kb: bytes, kf: int, probe: bytes, h: int) -> Any:
        """Probe for ``kb``: a tuple (value, flags, expire, slot offset) on a
        hit, None on a miss, False if a racing writer made the read unsure."""
        c = self._me()
        mm = g.idx
        n = g.nslots
        ss = g.params.slot_size
        K = c._key_size
        span = K + 3
        i = h % n
        o = _HB + i * ss
        for _ in range(n):
            if mm[o : o + span] == probe:
                break
            if mm[o + K] == layout.EMPTY:
                return None
            i += 1
            o += ss
            if i == n:
                i, o = 0, _HB
        else:
            return None
        return self._check_record(g, kb, kf, o)

    def _check_record(self, g: Generation, kb: bytes, kf: int, o: int) -> Any:
        """``_lookup``'s answer for the record slot ``o`` (which matched the
        probe) points at: checked (key, flags, checksum, MAC, expiry)."""
        c = self._me()
        K, ss = c._key_size, g.params.slot_size
        mm = g.idx
        seg, off = _LOC(mm, o + K + layout.OFF_SLOT_LOC)
        heap = g.heap
        mv = heap.view(seg, off + _OFF_KEY)  # the header (the mapped view if it reaches far enough)
        if mv is None:
            return False
        csum, exp, klen, vlen, flags, rkf, magic, _ = _HEAD(mv, off)
        start = off + _OFF_KEY
        end = start + klen + vlen
        if end > len(mv) and (mv := heap.view(seg, end)) is None:
            return False
        if (
            magic != record.MAGIC
            or klen != len(kb)
            or (rkf ^ kf) & layout.KF_STR
            or mv[start : start + klen] != kb
            or (c._opts.verify_checksums and xxh3_64_intdigest(mv[off + _OFF_CHECKED : end]) != csum)
        ):
            return False
        if (key := c._opts.secret) is not None and not record.mac_ok(g, seg, off, end, rkf, key):
            return None
        now = 0
        if exp:
            now = _time_ns()
            if exp <= now:
                return None
        if c._opts.track_recency:
            g.touch_recency((o - _HB) // ss + 1, _monotonic_ns())
        # Sliced from the map behind the view in hand (see Heap.mapped: not heap.maps).
        return mv.obj[start + klen : end], flags, exp, o  # type: ignore[index]

    def get_entry(self, key: Key) -> Entry | None:
        """The value with its codec flags, mtime and expiry, or None on a miss."""
        c = self._me()
        s = c._shared()
        kb, kf, probe, h = c._prep(key)
        g = s.refresh() if _monotonic_ns() >= s.next_check or s.gen.retired else s.gen
        for _ in range(3):
            r = c._lookup(g, kb, kf, probe, h)
            if r is None:
                break
            if r is not False:
                value, flags, exp, o = r
                mtime = layout.U64.unpack_from(g.idx, o + c._key_size + layout.OFF_SLOT_MTIME)[0]
                s.local[layout.HITS] += 1
                return Entry(value, flags, mtime, exp or None)
            g = s.refresh() if s.gen.retired else s.gen  # (see _get_slow)
        s.local[layout.MISSES] += 1
        return None

    def get_mtime(self, key: Key) -> int | None:
        """When ``key`` was last put (ns since the epoch), or None if absent."""
        c = self._me()
        e = c.get_entry(key)
        return None if e is None else e.mtime_ns

    def contains(self, key: Key) -> bool:
        """True if ``key`` holds a live (unexpired, intact) entry."""
        c = self._me()
        return c.get(key, _MISS) is not _MISS

    __contains__ = contains
