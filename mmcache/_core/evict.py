"""Which entries an eviction removes (the removing is ``writer.evict``'s).

Two ways to choose, by the size of the batch:

- ``sampled``: each victim from ``SAMPLES`` random roster positions, the
  expired one if any, else the least recently used (``"lru"``) or oldest
  (``"fifo"``): Redis's approximated LRU. Sampling keeps no global order
  that every reader would have to update under a lock, and costs the same
  at any table size, which suits the put that makes room for itself.
- ``oldest``: for a batch that is a good part of the table (Django's cull
  removes a third), one pass over the roster ranks every entry, expired ones
  first, and returns exactly the ``n`` to go. ``n * SAMPLES`` random looks
  would cost more than reading every entry once, and be less exact.
"""

from __future__ import annotations

import heapq
import random
import struct
from typing import TYPE_CHECKING

from . import generation, layout, record

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from .generation import Generation

SAMPLES = 8  # candidates looked at per sampled eviction (Redis uses 5)
_HB = layout.HEADER_BYTES
_U32 = layout.U32.unpack_from
_U64 = layout.U64.unpack_from
_EXPIRE = record.EXPIRE.unpack_from
_OFF_EXPIRE = record.OFF_EXPIRE
_MASK = layout.STAMP_MASK  # ages modulo 2**64: a stamp in the future is the oldest


def expired_fast(g: Generation, o: int, now: int) -> bool:
    """``record.is_expired`` for the eviction choosers: the record's expiry field
    read straight from the mapped heap when it is mapped (the common case)."""
    seg, off = layout.SLOT_LOC.unpack_from(g.idx, o + g.params.key_size + layout.OFF_SLOT_LOC)
    try:
        exp: int = _EXPIRE(g.heap.views[seg], off + _OFF_EXPIRE)[0]
    except (IndexError, TypeError, struct.error):
        return record.is_expired(g, o, now)
    return bool(exp) and exp <= now


def _age_of(g: Generation, lru: bool, now: int, stamp_now: int) -> Callable[[int, int], int]:
    """``age(slot, o)``: how long since the entry was used (lru) or written
    (fifo), in ns (lru ages modulo 2**64, see _layout's roster)."""
    mm, mtime_at = g.idx, g.params.key_size + layout.OFF_SLOT_MTIME
    rec, rb = g.recency, g.rec_base - 1
    if lru:
        return lambda slot, o: (stamp_now - rec[rb + slot]) & _MASK
    return lambda slot, o: now - _U64(mm, o + mtime_at)[0]


def _live(g: Generation, slot: int) -> int:
    """The slot's offset, or -1 (and a repair due) if the roster named a
    slot that is outside the table or not occupied: a damaged roster."""
    o = _HB + (slot - 1) * g.params.slot_size
    if not 1 <= slot <= g.nslots or g.idx[o + g.params.key_size] != layout.OCCUPIED:
        g.needs_repair = True  # repaired when this eviction ends
        return -1
    return o


def sampled(g: Generation, n: int, lru: bool, now: int, stamp_now: int) -> Iterator[tuple[int, bool]]:
    """(slot offset, expired) of up to ``n`` victims, one at a time, each the
    best of ``SAMPLES`` random live entries of the roster as it is then: the
    caller removes each before asking for the next."""
    age_of, roster, rnd = _age_of(g, lru, now, stamp_now), g.roster, random.random
    for _ in range(n):
        occ = layout.COUNTERS.unpack_from(g.idx, layout.OFF_COUNTERS)[0]
        best, best_age, expired = -1, -1, False
        for _ in range(min(SAMPLES, occ)):
            slot = _U32(roster, layout.ROSTER_HEADER_BYTES + 4 * int(rnd() * occ))[0]
            o = _live(g, slot)
            if o < 0:
                continue
            if expired_fast(g, o, now):
                best, expired = o, True
                break
            age = age_of(slot, o)
            if age > best_age:
                best, best_age = o, age
        if best < 0:
            return
        yield best, expired


def oldest(g: Generation, n: int, lru: bool, now: int, stamp_now: int) -> list[tuple[int, bool]]:
    """(slot offset, expired) of the ``n`` entries to evict: every expired
    one first, then the least recently used (or oldest) of the rest."""
    # One pass over every entry, so the per-entry work is written out
    # (expired_fast, _live and the age inline).
    mm, K, ss, nslots, views = g.idx, g.params.key_size, g.params.slot_size, g.nslots, g.heap.views
    loc_at, mtime_at, occupied = K + layout.OFF_SLOT_LOC, K + layout.OFF_SLOT_MTIME, layout.OCCUPIED
    rec, rb, loc = g.recency, g.rec_base - 1, layout.SLOT_LOC.unpack_from
    expired: list[int] = []
    ranked: list[tuple[int, int]] = []
    occ = layout.COUNTERS.unpack_from(mm, layout.OFF_COUNTERS)[0]
    for slot in generation.roster_snapshot(g, occ, strict=True):
        o = _HB + (slot - 1) * ss
        if not 1 <= slot <= nslots or mm[o + K] != occupied:
            g.needs_repair = True  # a damaged roster: repaired when this eviction ends
            continue
        seg, off = loc(mm, o + loc_at)
        try:
            exp = _EXPIRE(views[seg], off + _OFF_EXPIRE)[0]
        except (IndexError, TypeError, struct.error):
            exp = now if record.is_expired(g, o, now) else 0
        if exp and exp <= now:
            expired.append(o)
        elif lru:
            ranked.append(((stamp_now - rec[rb + slot]) & _MASK, o))
        else:
            ranked.append((now - _U64(mm, o + mtime_at)[0], o))
    chosen = [(o, True) for o in expired[:n]]
    if len(chosen) < n:
        chosen += [(o, False) for _, o in heapq.nlargest(n - len(chosen), ranked)]
    return chosen
