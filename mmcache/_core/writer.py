"""The write path: put, add, delete and making room (eviction), under the lock.

Every function here is called with the writer lock held. A mutation of the
index runs between ``dirty = 1`` and ``dirty = 0`` in the header; a writer
killed in between leaves dirty set, and the next lock holder fixes the
counters and roster before doing anything else (``repair.fix``). A damaged
heap segment needs a rebuild, which sits above the writer: ``write`` answers
``Room(PURGE)`` and its caller rebuilds (escalation by return value).

Publication order (what a lock-free reader may observe): the record is
written in full, then the slot's location, then, for a new entry, its state
byte. A reader that sees a half-updated slot finds a record whose key or
checksum does not match, retries, and at worst reports a miss.
"""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING

from ..errors import CacheFullError, CorruptCacheError, ValueTooLargeError
from . import evict as evicting
from . import generation, layout, record, repair
from .capacity import EVICT, PURGE, Room, caps, live_cap, rebuild_wanted, room
from .slots import bump_seq, find, log_change, recorded_size, remove_slot

if TYPE_CHECKING:
    from .generation import Generation
    from .options import Options
    from .process import SharedTable

_HOT = layout.HOT.unpack_from
_OFF_HOT = layout.OFF_HOT
_HB = layout.HEADER_BYTES
_U32 = layout.U32.unpack_from
_HOT_PACK = layout.HOT.pack_into
_LOC_MTIME_LEN_PACK = layout.SLOT_LOC_MTIME_LEN.pack_into
_OFF_RECLEN = layout.OFF_SLOT_RECLEN
_OFF_LOC = layout.OFF_SLOT_LOC
_OFF_FLAGS = layout.OFF_FLAGS
_OFF_DIRTY = layout.OFF_DIRTY
_SETS = layout.SETS
_OFF_LOGGING = layout.OFF_LOGGING
_U32_PACK = layout.U32.pack_into
_OCC_DEL = struct.Struct("<QQ").unpack_from  # occupied, deleted (the start of HOT)
# A record's parts as record.build made them: the checksum, the checked
# bytes from OFF_CHECKED on, the value (if apart), the MAC.
_CHECKSUM_PACK = record.CHECKSUM.pack_into
_OFF_CHECKED = record.OFF_CHECKED
_MAC = record.MAC_BYTES
_EMPTY, _OCCUPIED, _DELETED = layout.EMPTY, layout.OCCUPIED, layout.DELETED
_ROSTER_HB = layout.ROSTER_HEADER_BYTES
_monotonic_ns = time.monotonic_ns


def begin(s: SharedTable) -> Generation:
    """The generation to write to; its numbers fixed first if a writer died
    mid-update. A damaged heap segment stays in ``g.heap.damaged`` after the
    fix (``write`` answers ``Room(PURGE)`` for it: the caller rebuilds)."""
    g = s.current_for_write()
    # (runs on every staleness check, so numbers damaged on disk since the
    # open are healed within an interval)
    if g.idx[layout.OFF_DIRTY] or not generation.counters_sane(g, heap=False):
        repair.fix(g)
    return g


def write(opts: Options, s: SharedTable, kb: bytes, kf: int, probe: bytes, h: int,
          body: bytes, value: bytes | memoryview, csum: int, mac: bytes | None, rec_len: int,
          only_if_absent: bool) -> bool | Room:  # fmt: skip
    """Store the record ``record.build`` made for ``kb``; False only for
    ``add`` on a live key. A ``Room`` (grow or purge; purge too past a
    damaged heap segment) means the table must be rebuilt first: the caller
    rebuilds, still holding the lock, and calls again (escalation by return
    value: the writer sits below the rebuild).

    Every put runs this, so its common case (an overwrite: the staleness
    test, place the record, the test before asking for a rebuild) is written
    out rather than called; anything else first goes through ``_room_for``."""
    g = s.gen
    idx = g.idx
    # One clock read serves the staleness check, the LRU stamp and the stats
    # flush below (taken under the writer lock: no put or evict comes between).
    mono = _monotonic_ns()
    if idx[_OFF_FLAGS] or idx[_OFF_DIRTY] or mono >= s.next_check:  # begin()'s common case
        g = begin(s)
        if g.heap.damaged:
            return Room(PURGE)  # a rebuild copies what is readable (the caller's to do)
    found, free = find(g, kb, kf, probe, h)
    if found < 0 or only_if_absent or opts.max_bytes is not None:
        # A new key, an add, or a byte cap: the put may need room first.
        g, found, free, answer = _room_for(opts, s, g, kb, kf, probe, h, found, free, rec_len, only_if_absent)
        if answer is not None:
            return answer
    try:
        occ, dele, live, dead = _publish(s, g, found, free, probe, body, value, csum, mac, rec_len, mono)
    except (struct.error, OverflowError, CorruptCacheError):
        # A header number damaged on disk since the last check (out of its
        # field's range once added to, or a heap position past the files), or
        # a heap segment found damaged: fix recounts everything from the
        # slots; past a damaged segment the caller rebuilds; else the put once more.
        if repair.fix(g):
            return Room(PURGE)
        found, free = find(g, kb, kf, probe, h)
        occ, dele, live, dead = _publish(s, g, found, free, probe, body, value, csum, mac, rec_len, mono)
    s.local[_SETS] += 1
    if mono >= s.flush_due:
        # Writes flush their counts at once after a quiet spell (at most once
        # per staleness interval), so a worker that writes and then idles
        # does not leave its counts out of everyone's stats.
        s.flush_due = mono + s.interval_ns
        s.flush_stats()
    # Ask for a rebuild (done by the caller once it has released the lock,
    # writers waiting only for its start and commit) before a put would have
    # to do one under the lock (capacity.rebuild_wanted says when; the test
    # before the call is a necessary condition of its answer, so that most
    # puts skip the call).
    if dele or dead > opts.compact_threshold * (live + dead) or opts.max_size is not None:
        _ask_rebuild(opts, s, g, occ, dele, live, dead)
    return True


def _room_for(opts: Options, s: SharedTable, g: Generation, kb: bytes, kf: int, probe: bytes, h: int,
              found: int, free: int, rec_len: int,
              only_if_absent: bool) -> tuple[Generation, int, int, bool | Room | None]:  # fmt: skip
    """``write``'s way for what is not an overwrite: (generation, found,
    free, None) to place the record there, else the answer ``write``
    returns. A new key with room to spare (``capacity.room``'s common case)
    is written out; a byte cap, an add or a full table go to ``_make_room``."""
    max_bytes = opts.max_bytes
    if max_bytes is not None and rec_len > max_bytes:
        raise ValueTooLargeError(f"a record of {rec_len} bytes exceeds max_bytes={max_bytes}")
    if found < 0 and free >= 0 and not only_if_absent and max_bytes is None:
        idx = g.idx
        occ, dele = _OCC_DEL(idx, _OFF_HOT)
        cap, load = g.caps or caps(g)
        max_entries = opts.max_entries
        if (
            occ < cap
            and (max_entries is None or occ < max_entries)
            and (occ + dele < load or idx[free + g.key_size] != _EMPTY)
        ):
            return g, found, free, None
    return _make_room(opts, s, g, kb, kf, probe, h, found, free, rec_len, only_if_absent)


def _make_room(opts: Options, s: SharedTable, g: Generation, kb: bytes, kf: int, probe: bytes, h: int,
               found: int, free: int, rec_len: int,
               only_if_absent: bool) -> tuple[Generation, int, int, bool | Room | None]:  # fmt: skip
    """Evict until capacity.room lets the write go ahead: (generation, found,
    free, None) to place it there; else the answer ``write`` returns: False
    (an add on a live key) or a Room for a rebuild (grow, purge)."""
    for _ in range(100_000):
        if found >= 0 and only_if_absent and not record.is_expired(g, found):
            return g, found, free, False
        need = _room(opts, g, found, free, rec_len)
        if need is None:
            return g, found, free, None
        if need.action != EVICT:
            return g, found, free, need
        _evict_or_raise(opts, s, need.n, need.limit)
        g = s.gen
        found, free = find(g, kb, kf, probe, h)
    raise CacheFullError("could not make room for the entry")  # pragma: no cover - eviction frees


def _ask_rebuild(opts: Options, s: SharedTable, g: Generation,
                 occ: int, dele: int, live: int, dead: int) -> None:  # fmt: skip
    """Flag a concurrent rebuild (and the size to grow to) if capacity wants one."""
    wanted, grow_to = rebuild_wanted(
        occ, dele, live, dead, g.nslots, g.index_bytes, g.params.size, live_cap(g),
        opts.compact_threshold, opts.compact_min_bytes, opts.max_size,
    )  # fmt: skip
    if wanted:
        s.compact_wanted = True
        if grow_to is not None:
            s.grow_to = grow_to


def _room(opts: Options, g: Generation, found: int, free: int, rec_len: int) -> Room | None:
    """``capacity.room`` asked with this generation's numbers."""
    if found >= 0 and opts.max_bytes is None:
        return None  # an overwrite needs no room
    occ, dele, _hwm, _seg, _dirty, _tail, live, _dead, _c, _s = _HOT(g.idx, _OFF_HOT)
    return room(
        occ, dele, live, g.caps or caps(g), new_key=found < 0,
        free_empty=free >= 0 and g.idx[free + g.key_size] == layout.EMPTY, rec_len=rec_len,
        old_len=recorded_size(g, found) if found >= 0 and opts.max_bytes is not None else 0,
        size=g.params.size, max_size=opts.max_size, max_entries=opts.max_entries, max_bytes=opts.max_bytes,
    )  # fmt: skip


def _evict_or_raise(opts: Options, s: SharedTable, n: int, what: str) -> None:
    if opts.eviction == "none":
        if purge_expired(opts, s):
            return
        raise CacheFullError(f"the table is full ({what}) and eviction is 'none'; nothing was changed")
    if evict(opts, s, n) == 0:
        raise CacheFullError(f"the table is full ({what}) and nothing could be evicted")


def _publish(s: SharedTable, g: Generation, found: int, free: int, probe: bytes, body: bytes,
             value: bytes | memoryview, csum: int, mac: bytes | None,
             rec_len: int, mono: int) -> tuple[int, int, int, int]:  # fmt: skip
    """Append the record and point a slot at it; returns the header's
    (occupied, deleted, live bytes, dead bytes) after it."""
    # Every put runs this: module constants are bound to globals, the heap's
    # and the record-size helpers' common cases are written out.
    mm = g.idx
    K = g.key_size
    occ, dele, hwm, heap_seg, _dirty, tail, live, dead, created, seq = _HOT(mm, _OFF_HOT)
    # Reserve and write the record first: a full disk fails here, before
    # anything is published or marked dirty.
    heap = g.heap
    views = heap.views
    end = tail + rec_len
    if heap_seg < len(views) and (mv := views[heap_seg]) is not None and end <= len(mv) \
            and end <= heap.max_segment_bytes:  # fmt: skip
        seg, off = heap_seg, tail
    else:
        seg, off, mv = heap.append(heap_seg, tail, rec_len)
    end = off + _OFF_CHECKED + len(body)
    _CHECKSUM_PACK(mv, off, csum)
    mv[off + _OFF_CHECKED : end] = body
    if value:
        mv[end : end + len(value)] = value
        end += len(value)
    if mac:
        mv[end : end + _MAC] = mac
    now = time.time_ns()

    mm[_OFF_DIRTY] = 1
    if found >= 0:
        o = found
        old = _U32(mm, o + K + _OFF_RECLEN)[0]
        if not 0 < old <= heap.max_segment_bytes:  # 0: not recorded; past a segment: damage
            old = record.size_at(g, o)
        _LOC_MTIME_LEN_PACK(mm, o + K + _OFF_LOC, seg, off, now, rec_len)
        live, dead = live + rec_len - old, dead + old
    else:
        o = free
        slot = (o - _HB) // g.slot_size + 1
        state = mm[o + K]
        if state == _DELETED:
            dele -= 1
        # key and fields in one store, the state as it was (EMPTY / DELETED)
        kflags, klen = probe[K + 1], probe[K + 2]
        g.slot_struct.pack_into(mm, o, probe, state, kflags, klen, occ, seg, off, now, rec_len, 0)
        _U32_PACK(g.roster, _ROSTER_HB + 4 * occ, slot)
        mm[o + K] = _OCCUPIED  # publish: the last store a reader depends on
        occ += 1
        if slot > hwm:
            hwm = slot
        live += rec_len
    # A put is a use, for LRU (see Generation.touch_recency).
    g.recency[g.rec_base + (o - _HB) // g.slot_size] = mono
    if mm[_OFF_LOGGING]:
        log_change(mm, (o - _HB) // g.slot_size + 1)
    # dirty stays 1 in this store; it is cleared by a store of its own after
    # everything else, so a writer killed mid-copy leaves it set.
    _HOT_PACK(mm, _OFF_HOT, occ, dele, hwm, seg, 1, off + rec_len, live, dead, created, seq + 1)
    if g.needs_repair:
        done(s, g)
    else:
        mm[_OFF_DIRTY] = 0
    return occ, dele, live, dead


def delete(opts: Options, s: SharedTable, kb: bytes, kf: int, probe: bytes, h: int) -> bool:
    g = begin(s)
    found, _free = find(g, kb, kf, probe, h)
    if found < 0:
        return False
    live = not record.is_expired(g, found)
    g.idx[layout.OFF_DIRTY] = 1
    remove_slot(g, found)
    done(s, g)
    s.local[layout.DELETES] += 1
    return live


def done(s: SharedTable, g: Generation) -> None:
    """End a mutation: bump the write sequence, clear dirty (or fix the
    numbers; a damaged heap segment found so is rebuilt past by the next put)."""
    bump_seq(g.idx)
    if g.needs_repair:
        g.needs_repair = False
        repair.fix(g)
    g.idx[layout.OFF_DIRTY] = 0


def evict(opts: Options, s: SharedTable, n: int) -> int:
    """Evict up to ``n`` entries: expired ones first, else the least recently
    used (``"lru"``) or oldest (``"fifo"``); ``evict`` says how each batch
    size chooses them."""
    g = begin(s)
    lru = opts.eviction == "lru"
    now = time.time_ns()
    stamp_now = time.monotonic_ns()  # see layout's roster
    g.idx[layout.OFF_DIRTY] = 1
    occ = layout.COUNTERS.unpack_from(g.idx, layout.OFF_COUNTERS)[0]
    choose = evicting.oldest if n * evicting.SAMPLES >= occ else evicting.sampled
    evicted = 0
    for o, expired in choose(g, n, lru, now, stamp_now):
        remove_slot(g, o)  # before a sampled choice looks for the next one
        s.local[layout.EXPIRATIONS if expired else layout.EVICTIONS] += 1
        evicted += 1
    done(s, g)
    return evicted


def purge_expired(opts: Options | None, s: SharedTable) -> int:
    """Remove every expired entry (one pass over the roster)."""
    g = begin(s)
    mm = g.idx
    now = time.time_ns()
    occ = layout.COUNTERS.unpack_from(mm, layout.OFF_COUNTERS)[0]
    slots = generation.roster_snapshot(g, occ)
    ss = g.params.slot_size
    doomed = [o for o in (layout.slot_offset(x, ss) for x in slots) if record.is_expired(g, o, now)]
    if not doomed:
        return 0
    mm[layout.OFF_DIRTY] = 1
    for o in doomed:
        remove_slot(g, o)
    done(s, g)
    s.local[layout.EXPIRATIONS] += len(doomed)
    return len(doomed)
