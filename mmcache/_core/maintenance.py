"""Whole-table work: listing, rebuild, verify and repair, statistics.

Listing runs without the lock on a snapshot of the roster. Rebuild, verify
and repair run under the writer lock (the caller holds it).
"""

from __future__ import annotations

import array
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..keys import decode_key
from . import layout
from . import rebuild as rebuilder
from .capacity import live_cap
from .fs import total_size
from .generation import Generation, roster_snapshot
from .record import OFF_KEY, Entry, mac_ok, read_record, slot_record_size
from .repair import damaged_segments, fix, scan

if TYPE_CHECKING:
    from ..table import MmapCache
    from .options import Options
    from .process import SharedTable


# ------------------------------------------------------------------ listing
def _listing_snapshot(s: SharedTable) -> tuple[Generation, array.array[int]]:
    """The current generation and its live slots, read under the lock; a
    read-only table cannot take it and reads them as they are (exact on a
    read-only mount; with a writer busy meanwhile, an entry it moves may be
    missed or seen twice)."""
    if not s.writable:
        g = s.refresh()
        return g, roster_snapshot(g, layout.COUNTERS.unpack_from(g.idx, layout.OFF_COUNTERS)[0])
    with s.lock.hold():
        g = s.current_for_write()
        return g, roster_snapshot(g, layout.COUNTERS.unpack_from(g.idx, layout.OFF_COUNTERS)[0])


def iter_items(opts: Options, s: SharedTable, values: bool) -> Iterator[tuple[Any, Any]]:
    """Live (key, value-or-None) pairs from a roster snapshot taken under the
    lock (so no entry is seen twice or skipped by a concurrent swap-remove)."""
    g, slots = _listing_snapshot(s)
    ss = g.params.slot_size
    K = g.params.key_size
    now = time.time_ns()
    for slot in slots:
        o = layout.slot_offset(slot, ss)
        if g.idx[o + K] != layout.OCCUPIED:
            continue  # deleted since the snapshot
        r = read_record(g, o, verify=opts.verify_checksums)
        if r is None:
            continue
        seg, off, exp, klen, vlen, _flags, rkf, _ = r
        if exp and exp <= now:
            continue
        start = off + OFF_KEY
        if not mac_ok(g, seg, off, start + klen + vlen, rkf, opts.secret):
            continue
        mm = g.heap.mapped(seg, start + klen + vlen)  # (a generator: the table may have moved on)
        if mm is None:
            continue
        kb = mm[start : start + klen]
        yield decode_key(kb, rkf), (mm[start + klen : start + klen + vlen] if values else None)


def iter_entries(opts: Options, s: SharedTable) -> Iterator[tuple[Any, Any]]:
    """(key, Entry) pairs, like ``iter_items`` plus each slot's mtime."""
    g, slots = _listing_snapshot(s)
    K, now = g.params.key_size, time.time_ns()
    for slot in slots:
        o = layout.slot_offset(slot, g.slot_size)
        r = read_record(g, o, verify=opts.verify_checksums) if g.idx[o + K] == layout.OCCUPIED else None
        if r is None:
            continue
        seg, off, exp, klen, vlen, flags, rkf, _ = r
        start = off + OFF_KEY
        if (exp and exp <= now) or not mac_ok(g, seg, off, start + klen + vlen, rkf, opts.secret):
            continue
        mm = g.heap.mapped(seg, start + klen + vlen)
        if mm is None:
            continue
        mtime = layout.U64.unpack_from(g.idx, o + K + layout.OFF_SLOT_MTIME)[0]
        value = mm[start + klen : start + klen + vlen]
        yield decode_key(mm[start : start + klen], rkf), Entry(value, flags, mtime, exp or None)


# ------------------------------------------------------------------ rebuild
# ------------------------------------------------------------ verify, repair
def verify(c: MmapCache | None, s: SharedTable) -> list[str]:
    """Every invariant of the current generation checked against its slots:
    header counters, roster links, byte counts, heap segment headers."""
    g = s.current_for_write()
    live, dele, hwm, problems, _bad = scan(g)
    occ, hdel, hhwm = layout.COUNTERS.unpack_from(g.idx, layout.OFF_COUNTERS)
    if g.idx[layout.OFF_DIRTY]:
        problems.append("header: a writer died mid-update (dirty flag set)")
    if occ != len(live):
        problems.append(f"header: occupied_count {occ}, slots say {len(live)}")
    if hdel != dele:
        problems.append(f"header: deleted_count {hdel}, slots say {dele}")
    if hhwm < hwm:
        problems.append(f"header: high_water_mark {hhwm} below highest used slot {hwm}")
    return problems + _roster_problems(g, occ, live) + _size_problems(g, live) + damaged_segments(g)


def _roster_problems(g: Generation, occ: int, live: list[int]) -> list[str]:
    """The roster holds exactly the live slots, each linked back to its position."""
    problems = []
    K, ss = g.params.key_size, g.params.slot_size
    roster = set(roster_snapshot(g, occ, strict=True))
    want = {(o - layout.HEADER_BYTES) // ss + 1 for o in live}
    if roster != want:
        problems.append(f"roster: {len(roster ^ want)} slots differ from the live slots")
    for pos, slot in enumerate(roster_snapshot(g, occ, strict=True)):
        o = layout.slot_offset(slot, ss) if 1 <= slot <= g.nslots else -1
        if o < 0 or layout.U32.unpack_from(g.idx, o + K + layout.OFF_SLOT_ROSTER)[0] != pos:
            problems.append(f"roster: position {pos} (slot {slot}) is not linked back")
            break
    return problems


def _size_problems(g: Generation, live: list[int]) -> list[str]:
    """live_bytes and each slot's record length field match the records."""
    problems = []
    K = g.params.key_size
    sizes = [slot_record_size(g, o) for o in live]
    if layout.BYTES.unpack_from(g.idx, layout.OFF_BYTES)[0] != sum(sizes):
        problems.append("header: live_bytes does not match the records")
    recorded = (layout.U32.unpack_from(g.idx, o + K + layout.OFF_SLOT_RECLEN)[0] for o in live)
    wrong = sum(r not in (0, n) for r, n in zip(recorded, sizes, strict=True))
    if wrong:
        problems.append(f"slots: {wrong} record length fields do not match their records")
    return problems


def repair(c: MmapCache | None, s: SharedTable, g: Generation) -> list[str]:
    """Make counters, roster and bytes match the slots; drop damaged slots;
    rebuild past a damaged heap segment; remove leftover files."""
    problems = verify(c, s) if g is s.gen else []
    if fix(g):
        # The writer cannot append to a damaged segment: copy what is still
        # readable into a fresh generation (entries in damaged parts are lost).
        rebuilder.rebuild(c, s, None)
        g = s.gen
    removed = rebuilder.remove_orphans(s, g.gen)
    return problems + [f"removed leftover file {os.path.basename(n)}" for n in removed]


# --------------------------------------------------------------------- stats
def stats(opts: Options, s: SharedTable) -> dict[str, Any]:
    g = s.gen
    p = g.params
    occ, dele, hwm = layout.COUNTERS.unpack_from(g.idx, layout.OFF_COUNTERS)
    live, dead = layout.BYTES.unpack_from(g.idx, layout.OFF_BYTES)
    seg = layout.HEAP_POS.unpack_from(g.idx, layout.OFF_HEAP_SEG)[0]
    files = g.files()
    out: dict[str, Any] = {
        "path": s.path,
        "generation": g.gen,
        "size": p.size,
        "slot_size": p.slot_size,
        "key_size": p.key_size,
        "capacity": live_cap(g),
        "occupied_count": occ,
        "deleted_count": dele,
        "high_water_mark": hwm,
        "heap_live_bytes": live,
        "heap_dead_bytes": dead,
        "heap_segments": seg + 1,
        "disk_bytes": total_size(files),
        "max_entries": opts.max_entries,
        "max_bytes": opts.max_bytes,
        "eviction": opts.eviction,
    }
    out.update(s.total_stats())
    looked = out["hits"] + out["misses"]
    out["hit_rate"] = out["hits"] / looked if looked else 0.0
    return out
