"""MmapCache's whole-table operations: listing, rebuild, purge, eviction,
verify / repair and statistics.

A mixin of ``MmapCache`` (which keeps the per-key paths in ``table``): these
run over the roster or the whole files and are never on a hot path.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from . import args as argcheck
from . import maintenance, writer
from . import rebuild as rebuilder

if TYPE_CHECKING:
    from ..table import Key, MmapCache
    from .record import Entry


class TableMaintenance:
    """The whole-table half of ``MmapCache``'s public API."""

    def _me(self) -> MmapCache:
        return cast("MmapCache", self)

    # -------------------------------------------------------------- listing
    def list(self) -> builtins.list[Key]:
        """The live keys, as they were given (str or bytes). O(occupied)."""
        c = self._me()
        return [k for k, _ in maintenance.iter_items(c._opts, c._shared(), values=False)]

    def list_items(self) -> builtins.list[tuple[Key, bytes]]:
        """(key, value) pairs of the live entries, via the roster. O(occupied)."""
        c = self._me()
        return builtins.list(maintenance.iter_items(c._opts, c._shared(), values=True))

    def entries(self) -> Iterator[tuple[Key, Entry]]:
        """(key, Entry) of every live entry, with codec flags, mtime and
        expiry; counts no hits (for tools that inspect a table)."""
        c = self._me()
        return maintenance.iter_entries(c._opts, c._shared())

    def items(self) -> Iterator[tuple[Key, bytes]]:
        c = self._me()
        return maintenance.iter_items(c._opts, c._shared(), values=True)

    def keys(self) -> builtins.list[Key]:
        return self.list()

    # ---------------------------------------------------------- maintenance
    def atomic_rebuild(self, new_size: int | None = None) -> None:
        """Compact the heap, drop tombstones and expired entries, optionally
        resize: new files are written beside the old ones and renamed into
        place; other processes switch over by themselves and keep reading."""
        c = self._me()
        s = c._shared()
        if new_size is not None:
            argcheck.check_size(new_size)
        if s.lock.held:  # inside a transaction: the lock cannot be let go
            rebuilder.rebuild(c, s, new_size)
            return
        while not rebuilder.rebuild_concurrently(c, s, new_size):
            time.sleep(0.01)  # another process is rebuilding: wait, then rebuild ours

    def purge_expired(self) -> int:
        """Remove every expired entry now; returns how many."""
        c = self._me()
        s = c._shared()
        with s.lock.hold():
            return writer.purge_expired(c._opts, s)

    def evict(self, n: int) -> int:
        """Evict ``n`` entries by this handle's policy (expired ones first).

        Sampled, as the puts that make room do; a batch of at least an
        eighth of the entries ranks them all and takes exactly the least
        recently used (or oldest, for ``"fifo"``)."""
        c = self._me()
        s = c._shared()
        with s.lock.hold():
            return writer.evict(c._opts, s, n)

    def clear(self) -> None:
        """Remove every entry (by rebuilding into empty files)."""
        c = self._me()
        s = c._shared()
        with s.lock.hold():
            rebuilder.rebuild(c, s, None, keep=False)

    def verify(self) -> builtins.list[str]:
        """Check every invariant; returns the problems found (empty if none)."""
        c = self._me()
        s = c._shared()
        with s.lock.hold():
            return maintenance.verify(c, s)

    def repair(self) -> builtins.list[str]:
        """Fix counters, roster and damaged slots; returns what was fixed."""
        c = self._me()
        s = c._shared()
        with s.lock.hold():
            return maintenance.repair(c, s, s.current_for_write())

    def get_stats(self) -> dict[str, Any]:
        """Counters and sizes; hits, misses etc. are summed over processes."""
        c = self._me()
        return maintenance.stats(c._opts, c._shared())
