"""One process's share of a table's statistics: counts kept locally, added
to a stripe of the control file now and then (see ``layout``'s stats).

A mixin of ``SharedTable``: its fields are plain attributes of that object,
so the hot read path counts with one list store (``s.local[0] += 1``).
"""

from __future__ import annotations

import mmap
import os
import random
import threading
from typing import Any

from . import layout
from .lock import try_own

_U64_MAX = (1 << 64) - 1


class StatsStripes:
    """Local counts, this process's stripe, flushing and the sums."""

    ctl: mmap.mmap | bytes  # the control file's map (SharedTable's)
    writable: bool
    native: Any  # SharedTable's: the compiled get's Table (counts hits and misses in C), or None

    def owner(self) -> int:  # pragma: no cover - SharedTable's
        raise NotImplementedError

    def init_stats(self) -> None:
        # This process's counts not yet added to its stats stripe (see layout).
        self.local = [0] * len(layout.STATS_FIELDS)
        self.stripe: int | None = None
        self.flushed_hits = 0  # hits already added to the stats stripe
        self.flush_due = 0  # monotonic_ns when a write next flushes the stats (see writer)
        self._flushing = threading.Lock()  # one flushing thread at a time (the others skip)

    def forget_stats(self) -> None:
        """In a forked child: counts made before the fork belong to the
        parent's stripe and were not ours to flush; start from zero."""
        self.local = [0] * len(self.local)
        if self.native is not None:
            self.native.take_counts()  # (the parent's too)
        self.stripe = None
        self._flushing = threading.Lock()

    def flush_stats(self) -> None:
        """Add local counts into this process's stripe.

        Each process owns a stripe while it holds that stripe's OFD lock
        (see _layout), so counts are exact while at most STATS_STRIPES
        processes are alive; past that, processes share stripes and an
        increment can be lost in a race (the sums are then approximate).
        Never waits: readers flush too. A thread that finds another one
        flushing leaves its counts for the next flush.
        """
        self.take_native_counts()
        local = self.local
        if not any(local) or not self.writable:
            return  # (read-only: the counts stay local, total_stats adds them)
        if not self._flushing.acquire(blocking=False):
            return
        try:
            if self.stripe is None:
                self.stripe = self._claim_stripe()
            local, self.local = self.local, [0] * len(local)
            self.flushed_hits += local[layout.HITS]
            off = layout.OFF_STATS + self.stripe * layout.STATS_STRIPE_BYTES
            cur = layout.STATS.unpack_from(self.ctl, off)
            # (wrapping at 2**64: a damaged count must not make every flush fail)
            summed = ((a + b) & _U64_MAX for a, b in zip(cur, local, strict=True))
            layout.STATS.pack_into(self.ctl, off, *summed)
        finally:
            self._flushing.release()

    def take_native_counts(self) -> None:
        """Add the compiled get's hits and misses to ``local`` (it counts in
        C integers; taken at every flush and stats read, so ``stats()`` is
        exact in one thread)."""
        n = self.native
        if n is not None:
            hits, misses = n.take_counts()
            if hits or misses:
                local = self.local
                local[layout.HITS] += hits
                local[layout.MISSES] += misses

    def _claim_stripe(self) -> int:
        """The first stripe whose lock we can take (free, or its owner died:
        its counts stay and ours add to them); with none free, a shared one."""
        fd = self.owner()
        for i in range(layout.STATS_STRIPES):
            if try_own(fd, layout.LOCK_STRIPES + i):
                at = layout.OFF_STATS + i * layout.STATS_STRIPE_BYTES + layout.STATS_OWNER
                layout.OWNER.pack_into(self.ctl, at, random.getrandbits(32), os.getpid())
                return i
        return os.getpid() % layout.STATS_STRIPES

    def total_stats(self) -> dict[str, int]:
        self.take_native_counts()
        tot = list(self.local)
        for i in range(layout.STATS_STRIPES):
            row = layout.STATS.unpack_from(self.ctl, layout.OFF_STATS + i * layout.STATS_STRIPE_BYTES)
            tot = [a + b for a, b in zip(tot, row, strict=True)]
        return dict(zip(layout.STATS_FIELDS, tot, strict=True))
