"""How full a generation may get: the capacity rule in numbers.

Pure functions of a generation's size (no I/O, no lock): the writer asks
them whether a put must evict, grow or rebuild; rebuild and stats ask how
many entries a size holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._generation import Generation

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
