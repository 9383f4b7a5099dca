"""MmapCache's per-key writes: put, add, touch, delete, transaction.

A mixin of ``MmapCache``: the record is prepared before the writer lock is
taken (``record.build``), placed under it (``writer.write``), and the
writer's answers (a rebuild to grow or purge) are acted on here, one layer
above the writer; a compaction a write asked for runs after the lock is let go.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from ..errors import CacheFullError, ClosedCacheError
from . import args as argcheck
from . import capacity, record, writer
from . import rebuild as rebuilder
from .capacity import Room

if TYPE_CHECKING:
    from ..table import Key, MmapCache
    from .options import Options
    from .process import SharedTable
    from .record import Entry


class TableWrites:
    """The write half of ``MmapCache``'s per-key API."""

    _s: SharedTable | None
    _opts: Options

    if TYPE_CHECKING:  # MmapCache's and TableLookup's

        def _prep(self, key: Key) -> tuple[bytes, int, bytes, int]: ...
        def _shared(self) -> SharedTable: ...
        def contains(self, key: Key) -> bool: ...
        def get_entry(self, key: Key) -> Entry | None: ...

    def _native_writes(self, s: SharedTable, secret: bytes | None, putter: Callable[..., Any] | None) -> None:
        """Install the compiled put, add and delete (``putter``: mmcache._native's
        Putter, a layer above, or None) on this handle where they apply: no
        secret (the MAC is not native), a writable table. They hand what they
        do not answer to ``_put_pure``, ``_add_pure`` and ``_delete_pure``,
        the methods below."""
        if secret is None and s.writable and putter is not None:
            self.put = putter(self)  # type: ignore[method-assign]
            self.add = putter(self, add=True)  # type: ignore[method-assign]
            self.delete = putter(self, delete=True)  # type: ignore[method-assign]

    def put(self, key: Key, value: bytes | bytearray | memoryview, expire: float | None = None,
            *, flags: int = 0, expire_at_ns: int | None = None) -> None:  # fmt: skip
        """Store ``value`` under ``key``, replacing any previous value.

        ``expire`` is seconds from now (None: never; 0 or less: the key is
        removed at once; NaN: ValueError; an expiry past what the format
        holds, April 2262, is "never"); ``expire_at_ns`` is the same as an absolute time
        (ns since the epoch, as ``Entry.expire_ns``), for keeping an
        entry's expiry across a read-modify-write. ``flags`` is a 16-bit tag kept with the record
        (the faces store their codec there). Raises CacheFullError when the
        table is full and the eviction policy is ``"none"``.
        """
        s = self._s
        if s is None:
            raise ClosedCacheError("operation on a closed MmapCache")
        kb, kf, probe, h = self._prep(key)
        data = value if type(value) is bytes else argcheck.as_buffer(value)
        if flags and not 0 <= flags < 1 << 16:
            raise ValueError("flags must fit in 16 bits")
        exp = 0 if expire is None and expire_at_ns is None else argcheck.expire_ns(expire, expire_at_ns)
        if exp < 0:
            self.delete(key)
            return
        # The record and its checksum are made before the lock is taken,
        # which is then held only to place them.
        opts = self._opts
        body, apart, csum, mac, rec_len = record.build(opts.secret, kb, kf, data, exp, flags)
        lock = s.lock
        lock.acquire()
        try:
            done = writer.write(opts, s, kb, kf, probe, h, body, apart, csum, mac, rec_len, False)
            if done is not True:
                self._rebuild_and_write(done, s, kb, kf, probe, h, body, apart, csum, mac, rec_len, False)
        finally:
            lock.release()
        if s.compact_wanted:
            self._compact(s)

    # The pure put under another name: a handle's compiled put (_native.Putter,
    # installed as ``put`` on the handle) hands it what it does not answer.
    _put_pure = put

    def _compact(self, s: SharedTable) -> None:
        """Reclaim dead heap space after a write asked for it, with the lock
        released (unless the caller holds it in a transaction: later then)."""
        if s.lock.held:
            return
        s.compact_wanted = False
        size, s.grow_to = s.grow_to, None
        rebuilder.rebuild_concurrently(None, s, size, compact=size is None)

    def add(self, key: Key, value: bytes | bytearray | memoryview, expire: float | None = None,
            *, flags: int = 0, expire_at_ns: int | None = None) -> bool:  # fmt: skip
        """Store only if ``key`` has no live entry; True if stored. Atomic."""
        s = self._shared()
        kb, kf, probe, h = self._prep(key)
        data = argcheck.as_buffer(value)
        if flags and not 0 <= flags < 1 << 16:
            raise ValueError("flags must fit in 16 bits")
        exp = argcheck.expire_ns(expire, expire_at_ns)
        if exp < 0:
            return not self.contains(key)
        body, apart, csum, mac, rec_len = record.build(self._opts.secret, kb, kf, data, exp, flags)
        with s.lock.hold():
            done = writer.write(self._opts, s, kb, kf, probe, h, body, apart, csum, mac, rec_len, True)
            stored = self._rebuild_and_write(done, s, kb, kf, probe, h, body, apart, csum, mac, rec_len,
                                             True)  # fmt: skip
        if s.compact_wanted:
            self._compact(s)
        return stored

    _add_pure = add  # (what a handle's compiled add hands on, as _put_pure)

    def _rebuild_and_write(self, need: bool | Room, s: SharedTable, kb: bytes, kf: int, probe: bytes, h: int,
                           body: bytes, apart: bytes | memoryview, csum: int, mac: bytes | None,
                           rec_len: int, only_if_absent: bool) -> bool:  # fmt: skip
        """The writer's answer acted on, lock held: while it asks for a
        rebuild (``Room`` grow or purge), rebuild and write again."""
        for _ in range(1000):
            if isinstance(need, bool):
                return need
            rebuilder.rebuild(None, s, need.n if need.action == capacity.GROW else None)
            need = writer.write(self._opts, s, kb, kf, probe, h, body, apart, csum, mac, rec_len,
                                only_if_absent)  # fmt: skip
        raise CacheFullError("could not make room for the entry")  # pragma: no cover - a rebuild frees room

    def touch(self, key: Key, expire: float | None = None) -> bool:
        """Give a live entry a new expiry; True if it existed. Atomic."""
        s = self._shared()
        with s.lock.hold():
            e = self.get_entry(key)
            if e is None:
                return False
            self.put(key, e.value, expire, flags=e.flags)
            return True

    def delete(self, key: Key) -> bool:
        """Remove ``key``; True if it had a live entry."""
        s = self._shared()
        kb, kf, probe, h = self._prep(key)
        with s.lock.hold():
            return writer.delete(self._opts, s, kb, kf, probe, h)

    _delete_pure = delete  # (what a handle's compiled delete hands on, as _put_pure)

    @contextmanager
    def transaction(self) -> Iterator[MmapCache]:
        """Hold the writer lock: puts and deletes inside are atomic as a group
        with respect to other writers (readers still see each step)."""
        s = self._shared()
        with s.lock.hold():
            yield cast("MmapCache", self)
        if s.compact_wanted:
            self._compact(s)
