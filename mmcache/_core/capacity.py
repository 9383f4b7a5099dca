"""How full a generation may get: the capacity rule in numbers.

Pure functions (no I/O, no lock): the writer asks ``room`` whether a put
must first evict, grow or purge and acts on the answer; rebuild and stats ask how
many entries a size holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from .generation import Generation

# Live entries per data slot before eviction or growth. Linear probing with
# tombstones needs room between this and LOAD_FRACTION: a table kept full by
# eviction turns every eviction into a tombstone, and only a rebuild clears
# them, so the gap sets how often (every 35 % of the slots, here).
LIVE_FRACTION = 0.5
LOAD_FRACTION = 0.85  # live + tombstones per data slot before a put must rebuild
EARLY_FRACTION = (LIVE_FRACTION + LOAD_FRACTION) / 2  # ask for a concurrent rebuild from here


def live_cap(g: Generation) -> int:
    return caps(g)[0]


def caps(g: Generation) -> tuple[int, int]:
    """(live cap, load cap) of ``g``, computed once per generation: the live
    entries it may hold, and the live + tombstone slots before a put must
    rebuild (at least one slot stays EMPTY so that every probe terminates)."""
    c = g.caps
    if c is None:
        live = live_cap_for(g, None)
        c = g.caps = (live, max(live, min(int(g.nslots * LOAD_FRACTION), g.nslots - 1)))
    return c


def live_cap_for(g: Generation, size: int | None) -> int:
    """Live entries a table of ``size`` slots (default: g's) may hold."""
    n = (size or g.params.size) - 1
    return min(int(n * LIVE_FRACTION), n - 1)


GROW, EVICT, PURGE = "grow", "evict", "purge"


class Room(NamedTuple):
    """What a write must have done before it can go ahead: ``grow`` (rebuild
    at ``n`` slots), ``evict`` (``n`` entries; ``limit`` names the
    cap, for the error if nothing can go), or ``purge`` (rebuild at the same
    size, dropping tombstones)."""

    action: str
    n: int = 0
    limit: str = ""


def room(occ: int, dele: int, live: int, caps: tuple[int, int], *, new_key: bool, free_empty: bool,
         rec_len: int, old_len: int, size: int, max_size: int | None, max_entries: int | None,
         max_bytes: int | None) -> Room | None:  # fmt: skip
    """The capacity rule: None if a write of ``rec_len`` bytes may go ahead
    in a generation of ``size`` slots holding ``occ`` live entries, ``dele``
    tombstones and ``live`` record bytes; else what must happen first.
    ``new_key``: the key has no slot yet; ``free_empty``: the slot it would
    take is EMPTY (not a tombstone); ``old_len``: the record it replaces."""
    cap, load = caps
    if new_key:
        if occ + 1 > cap and max_size is not None and size < max_size:
            return Room(GROW, min(max_size, size * 2))
        limit = cap if max_entries is None else min(cap, max_entries)
        if occ + 1 > limit:
            return Room(EVICT, occ + 1 - limit, "entries")
        if free_empty and occ + dele + 1 > load:
            return Room(PURGE)
    if max_bytes is not None and live - old_len + rec_len > max_bytes:
        return Room(EVICT, 1, "bytes")
    return None


def rebuild_wanted(occ: int, dele: int, live: int, dead: int, nslots: int, index_bytes: int, size: int,
                   cap: int, compact_threshold: float, compact_min_bytes: int,
                   max_size: int | None) -> tuple[bool, int | None]:  # fmt: skip
    """After a write: (ask for a concurrent rebuild?, the size to grow to or
    None), before a put would have to rebuild under the lock:
    - dead bytes pass the threshold fraction of the heap and are at least the
      size of the index (a rebuild rewrites the index, so its cost stays a
      small fraction of the bytes written meanwhile);
    - tombstones bring the table near the load at which a put must purge;
    - live entries near capacity, in a table that may still grow."""
    if (dead > compact_threshold * (live + dead) and dead >= max(compact_min_bytes, index_bytes)) or (
        dele and occ + dele > EARLY_FRACTION * nslots
    ):
        return True, None
    if max_size is not None and size < max_size and occ > 0.9 * cap:
        return True, min(max_size, size * 2)
    return False, None
