"""A handle's policy, fixed when it is opened: one frozen object.

``MmapCache.__init__`` checks its arguments (``args``) and builds an
``Options``; the writer, the listings and the general read path are given
it instead of the handle, so that they read policy, never the handle's
state. A policy change on an open handle (the public attributes stay
readable, the compaction knobs settable) replaces the whole object.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

Policy = Literal["lru", "fifo", "none"]


@dataclass(frozen=True, slots=True)
class Options:
    """The policy fields of one handle (see ``MmapCache`` for each)."""

    max_size: int | None
    max_entries: int | None
    max_bytes: int | None
    eviction: Policy
    compact_threshold: float
    compact_min_bytes: int
    max_segment_bytes: int
    verify_checksums: bool
    secret: bytes | None  # with it, records are signed and unsigned ones are misses
    track_recency: bool  # LRU stamps: eviction "lru" on a writable table


class OptionsView:
    """MmapCache's policy attributes, read from (and replacing) its Options."""

    _opts: Options

    @property
    def max_size(self) -> int | None:
        return self._opts.max_size

    @property
    def max_entries(self) -> int | None:
        return self._opts.max_entries

    @property
    def max_bytes(self) -> int | None:
        return self._opts.max_bytes

    @property
    def eviction(self) -> Policy:
        return self._opts.eviction

    @property
    def verify_checksums(self) -> bool:
        return self._opts.verify_checksums

    @property
    def compact_threshold(self) -> float:
        """Dead share of the heap (0 to 1) from which a write asks for a compaction."""
        return self._opts.compact_threshold

    @compact_threshold.setter
    def compact_threshold(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            raise ValueError("compact_threshold must be in (0, 1]")
        self._opts = replace(self._opts, compact_threshold=value)

    @property
    def compact_min_bytes(self) -> int:
        """Dead heap bytes below which no compaction is asked for."""
        return self._opts.compact_min_bytes

    @compact_min_bytes.setter
    def compact_min_bytes(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError("compact_min_bytes must be an int >= 0")
        self._opts = replace(self._opts, compact_min_bytes=value)
