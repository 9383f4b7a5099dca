"""The per-process hit memo of a table: keys found before, with what their
record check learnt, and the rule that admits keys into it.

A mixin of ``SharedTable``: ``MmapCache.get`` reads ``s.memo`` as a plain
attribute of that object (see there for what an entry holds and why it is
sound). The generation switch replaces the memo (``SharedTable._switch``).
"""

from __future__ import annotations

from typing import Any

from . import layout


class HitMemo:
    """The memo and its admission (a full memo that served too few hits
    stays empty for a while)."""

    local: list[int]  # StatsStripes': the hits not yet flushed
    flushed_hits: int

    def init_memo(self) -> None:
        # Keys this process has found, with what their last hit learnt (see
        # MmapCache.get): valid while their slot's bytes are unchanged.
        self.memo: dict[str | bytes, tuple[Any, ...]] = {}
        self.memo_skip = 0  # first reads before admit() is asked again (see there)
        self.memo_fails = 0  # full memos in a row that served too few hits
        self.first_reads = 0  # hits that had to probe (the rest came from the memo)
        self._memo_mark = (0, 0)  # (hits, first_reads) when the memo last started afresh

    def admit(self, entries: int) -> bool:
        """May a first read add its key to the memo (of at most ``entries``)?

        Asked on a first read once ``memo_skip`` (counted down by the caller)
        is 0. A memo that is not full fills. A full one means a working set
        larger than the memo, or one that moved: it starts afresh. If it
        served at least as many hits as it holds keys since it last did, at
        once; if not, keys come at random from a set much larger than the
        memo, where a memo hit costs as much as a first read (its entries
        are cache misses too) and filling it is pure cost: the next 4, 8 ...
        64 x ``entries`` first reads (more each time in a row) leave it empty.
        """
        if len(self.memo) < entries:
            return True
        hits = self.flushed_hits + self.local[layout.HITS]
        mark_hits, mark_first = self._memo_mark
        served = (hits - mark_hits) - (self.first_reads - mark_first)  # memo hits since the mark
        self.memo.clear()
        self._memo_mark = (hits, self.first_reads)
        if served >= entries:
            self.memo_fails = 0
            return True
        self.memo_fails += 1
        self.memo_skip = entries << min(self.memo_fails + 1, 6)
        return False
