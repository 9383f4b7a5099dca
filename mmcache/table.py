"""MmapCache: a shared, persistent hash table in memory-mapped files.

Open addressing with linear probing over an index file, an append-only heap
of self-checking records, and a roster of live slots (see ``_core.layout`` for the
bytes and ``docs/FORMAT.md`` for the same in prose). Readers take no lock and
make no system call on a hit; writers hold one inter-process lock. The layers
below are in ``_core`` (docs/DESIGN.md lists them); this module holds the hot
read path written out and the entry points of the writes.
"""

from __future__ import annotations

import os
import struct
import time
from typing import Any

from xxhash import xxh3_64_intdigest

from . import _native
from ._core import args as argcheck
from ._core import capacity, generation, layout, maintenance, record, writer
from ._core import rebuild as rebuilder
from ._core.generation import Params
from ._core.lookup import TableLookup
from ._core.options import Options, OptionsView, Policy
from ._core.process import SharedTable, acquire, release
from ._core.table_maintenance import TableMaintenance
from ._core.table_writes import TableWrites
from .errors import ClosedCacheError
from .keys import encode_key, slot_key

DEFAULT_MAX_SEGMENT_BYTES = layout.DEFAULT_MAX_SEGMENT_BYTES
LIVE_FRACTION = capacity.LIVE_FRACTION  # live entries per slot: size a table at entries / LIVE_FRACTION
Key = str | bytes

_HB = layout.HEADER_BYTES
_HEAD = record.HEAD.unpack_from
_OFF_KEY = record.OFF_KEY
_OFF_CHECKED = record.OFF_CHECKED
_REC_MAGIC = record.MAGIC
# The hot reads test the index's flags byte (layout.OFF_FLAGS: RETIRED) as
# idx[12], a constant rather than a global's lookup; it must stay that offset.
if layout.OFF_FLAGS != 12:  # pragma: no cover - a format change must update them
    raise ImportError("table.py's idx[12] is no longer layout.OFF_FLAGS")
_time_ns = time.time_ns
_MISS = object()
_monotonic_ns = time.monotonic_ns
_SLOT_TAIL = struct.Struct("<xIII").pack  # a slot's pad, roster position, seg, off
_MEMO_TESTED = layout.OFF_SLOT_MTIME  # a memoised hit tests the slot's bytes up to here (past the key)
_COUNT = layout.U64.unpack_from
_OFF_COUNTERS = layout.OFF_COUNTERS  # the first counter: occupied slots
# The read paths below count in s.local[0] (layout.HITS) and s.local[1]
# (layout.MISSES) by literal index: a name would cost a global lookup per get.
assert (layout.HITS, layout.MISSES) == (0, 1)
_KF_STR = layout.KF_STR
# Keys a process memoises per table before starting afresh (about 300 bytes
# each): a working set up to this size is served from the memo.
_MEMO_ENTRIES = 1 << 15
# _get_view returns a view from this size on: below it, a copy costs less
# than making the memoryview (~0.15 us).
VIEW_MIN = 4096


class MmapCache(TableLookup, TableWrites, TableMaintenance, OptionsView):
    """A shared, persistent, process-safe key/value table in mapped files.

    Keys are ``str`` or ``bytes`` (a str and a bytes key are different keys,
    as in a dict); values are bytes-like and come back as ``bytes``. Any
    number of processes may open the same ``path``; in one process, handles
    on the same path share one set of maps.

    ``size`` is the number of slots (``size - 1`` hold entries; at most half
    of them (``LIVE_FRACTION``) are used before eviction, growth or
    ``CacheFullError``: the rest keeps probes short and deletions cheap; at
    least 4). With ``max_size`` the table starts at ``size`` and doubles by
    rebuilding when it fills, up to ``max_size``. Without ``size`` it starts
    at 4,096 slots and grows up to ``max_size`` (default 1,000,000, the seed's
    fixed size), and an existing table is opened at the size it has grown to.
    ``max_entries`` / ``max_bytes`` cap live entries / live heap bytes;
    ``eviction`` chooses what goes when a put would pass a cap: ``"lru"``
    (sampled), ``"fifo"`` or ``"none"`` (raise).

    Each process remembers, per table, up to 32,768 keys it has found (about
    300 bytes each), so that a repeat hit is one comparison of the slot's
    bytes instead of a probe and a record check; ``memo=False`` makes this
    handle neither use nor fill that memo (less memory, slower repeat hits).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        size: int | None = None,
        slot_size: int = 96,
        key_size: int = 64,
        heap_path: str | os.PathLike[str] | None = None,
        staleness_check_interval: float = 0.25,
        verify_checksums: bool = True,
        max_segment_bytes: int = DEFAULT_MAX_SEGMENT_BYTES,
        *,
        max_size: int | None = None,
        max_entries: int | None = None,
        max_bytes: int | None = None,
        eviction: Policy = "lru",
        compact_threshold: float = 0.5,
        compact_min_bytes: int = 1 << 20,
        mode: int = 0o600,
        allow_network_fs: bool | None = None,
        allow_symlink: bool = False,
        allow_foreign_owner: bool = False,
        secret: bytes | str | None = None,
        memo: bool = True,
    ) -> None:
        path = os.path.abspath(os.fspath(path))
        real = os.path.realpath(path)  # an allowed symlink: name the files after its target
        hp = os.path.abspath(os.fspath(heap_path)) if heap_path is not None else real + ".heap"
        adopt = size is None  # no size asked: an existing table keeps the size it has grown to
        size, max_size = argcheck.resolve_size(size, max_size)
        argcheck.check_args(size, slot_size, key_size, max_segment_bytes, max_size, max_entries,
                    max_bytes, eviction, compact_threshold, staleness_check_interval)  # fmt: skip
        key = argcheck.secret_key(secret)
        argcheck.check_files(path, hp, allow_symlink, allow_foreign_owner, allow_network_fs)
        params = Params(size, slot_size, key_size, max_segment_bytes)
        if not os.path.exists(path):
            argcheck.create(path, hp, params, mode)
        s = self._s = acquire(real, hp, mode, staleness_check_interval, allow_foreign_owner)
        if adopt and max_size is not None:
            params = Params(s.gen.params.size, slot_size, key_size, max_segment_bytes)
            max_size = max(max_size, s.gen.params.size)
        try:
            argcheck.check_params(s.gen, params, max_size)
        except BaseException:
            release(s)
            self._s = None
            raise
        self.path = path
        self.heap_path = hp
        self._key_size = key_size
        # The policy, one frozen object the writer and listings are given.
        # With a secret every record this handle writes is signed with a keyed
        # BLAKE2b MAC, and records without a valid MAC are misses for it. A
        # read-only table keeps no recency stamps: its maps cannot be written.
        self._opts = Options(
            max_size, max_entries, max_bytes, eviction, compact_threshold, compact_min_bytes,
            max_segment_bytes, verify_checksums, key, eviction == "lru" and s.writable,
        )  # fmt: skip
        self._install_gets(s, key, memo)
        self._native_writes(s, key, _native.Putter)
        if s.writable:
            self._heal_on_open(s)
        # probe tails: key padding + (state, kflags, klen), per kflags and klen,
        # so a probe is one slice compare against slot[0 : key_size + 3].
        self._tails = {
            kf: [b"\0" * (key_size - n) + bytes((layout.OCCUPIED, kf, n)) for n in range(key_size + 1)]
            for kf in (0, layout.KF_STR, layout.KF_HASHED, layout.KF_HASHED | layout.KF_STR)
        }
        # Handle constants the probe loads as one tuple. A handle with a
        # secret never takes the fast probe (key_size 0 sends every key to
        # the general path, which checks MACs).
        self._hot = (
            key_size if key is None else 0,
            self._tails,
            struct.Struct(f"<{key_size + 3}sxIII").unpack_from,
            self._opts.track_recency,
            bool(memo),
        )

    def _install_gets(self, s: SharedTable, secret: bytes | None, memo: bool) -> None:
        """Put this handle's get and _get_view in place: the class's (memo,
        then probe), the compiled ones, or the unmemoised probe."""
        if secret is not None:
            self.get = self._get_view = self._get_unmemoised  # type: ignore[method-assign]
        elif _native.Getter is not None and s.native is not None:
            # The compiled get answers what it can from the table's native
            # state (no memo); it calls _get_probe, the pure path, for the rest
            # (which memoises only if memo). memo=False: values as bytes, never
            # a view (which keeps its segment's map alive), as before.
            self.get = _native.Getter(self, s.native)  # type: ignore[method-assign]
            view_min = VIEW_MIN if memo else 0
            self._get_view = _native.Getter(self, s.native, view_min=view_min)  # type: ignore[method-assign]
        elif not memo:
            self.get = self._get_view = self._get_unmemoised  # type: ignore[method-assign]

    def _heal_on_open(self, s: SharedTable) -> None:
        """A writer died mid-update (or the header is damaged): repair now,
        under the lock, rather than at the next put; tidy a dead rebuild's files."""
        g = s.gen
        if g.idx[layout.OFF_DIRTY] or not generation.counters_sane(g):
            with s.lock.hold():
                g = writer.begin(s)
                if not generation.counters_sane(g):
                    maintenance.repair(self, s, g)
        rebuilder.cleanup_on_open(s)

    @classmethod
    def open(cls, path: str | os.PathLike[str], **options: Any) -> MmapCache:
        """Open an existing table with the parameters stored in its header."""
        p = os.path.abspath(os.fspath(path))
        prm = argcheck.stored_params(p, options)
        max_size = options.pop("max_size", None)
        if max_size is not None:
            max_size = max(max_size, prm.size)
        return cls(
            p, prm.size, prm.slot_size, prm.key_size,
            max_segment_bytes=prm.max_segment_bytes, max_size=max_size, **options,
        )  # fmt: skip

    # ----------------------------------------------------------------- keys
    def _prep(self, key: Key) -> tuple[bytes, int, bytes, int]:
        """(encoded key, kflags, probe bytes, hash): see ``keys`` for the rules."""
        t = type(key)
        if t is str:
            kb, kf = key.encode("utf-8", "surrogatepass"), layout.KF_STR  # type: ignore[union-attr]
        elif t is bytes:
            kb, kf = key, 0
        else:
            kb, kf = encode_key(key)
        n = len(kb)
        if n <= self._key_size:
            if n == 0:
                raise ValueError("mmcache keys must not be empty")
            return kb, kf, kb + self._tails[kf][n], xxh3_64_intdigest(kb)
        skey, hashed, h = slot_key(kb, self._key_size)
        kf |= hashed
        return kb, kf, skey + self._tails[kf][len(skey)], h

    def _shared(self) -> SharedTable:
        s = self._s
        if s is None:
            raise ClosedCacheError("operation on a closed MmapCache")
        return s

    # ---------------------------------------------------------------- reads
    def get(self, key: Key, default: Any = None, *, with_flags: bool = False) -> Any:
        """The value stored under ``key`` as bytes, or ``default`` on a miss.

        Lock-free: a few reads from mapped memory, no system call. An expired
        entry is a miss for every process at once. With ``with_flags=True`` a
        hit is ``(value, flags)`` (the tag given to ``put``), at the same cost.
        """
        # The hot path, written out in one function on purpose: every call
        # and attribute lookup shows up in the benchmark. A key this process
        # has found before is in the memo with its slot's bytes as they were
        # then (key, state, location) and what checking its record learnt
        # (value bounds, expiry, flags). Records are never rewritten within a
        # generation, so if the slot still holds exactly those bytes, it
        # still points at that same, already checked record: one slice
        # compare replaces hashing, probing and the record checks.
        # The memo only ever holds entries of the current generation: moving
        # to another replaces it (SharedTable._adopt), and a first read adds
        # to the memo it started with, not to one that replaced it since.
        s = self._s
        try:
            e = s.memo.get(key)  # type: ignore[union-attr]
        except (TypeError, AttributeError):  # an unhashable key; a closed handle
            return self._get_probe(key, default, with_flags)
        if e is None:
            return self._get_probe(key, default, with_flags)
        kt, idx, a, b, expect, m, vs, ve, exp, flags, rec, ri = e
        if (
            kt is type(key)  # a str subclass may compare equal to a str key
            and not idx[12]  # RETIRED: another process's rebuild replaced this index
            and (now := _monotonic_ns()) < s.next_check  # type: ignore[union-attr]
            and idx[a:b] == expect
        ):
            if exp and exp <= _time_ns():
                s.local[1] += 1  # type: ignore[union-attr]
                return default
            if rec is not None:
                # A racy store into a dense array no checksum covers (see
                # _core.layout): it only steers LRU eviction. The clock read of the
                # staleness test is the stamp: exact order, no extra call.
                rec[ri] = now
            s.local[0] += 1  # type: ignore[union-attr]
            if with_flags:
                return m[vs:ve], flags
            return m[vs:ve]
        return self._get_probe(key, default, with_flags)

    def _get_view(self, key: Key, default: Any = None) -> Any:
        """``get`` for a caller that only reads the value before its next call
        into mmcache (the decorator unpickles it): a value of at least
        ``VIEW_MIN`` bytes answered by the memo comes back as a memoryview of
        the mapped record instead of a copy. Sound for as long as the caller
        holds it: a record is never rewritten within a generation, and a map
        is never closed or shrunk, only dropped (an unlinked file stays
        mapped). Anything else is ``get``'s bytes."""
        # The memo test is get's, written out again: a helper both called
        # would be one more call on every hit.
        s = self._s
        try:
            e = s.memo.get(key)  # type: ignore[union-attr]
        except (TypeError, AttributeError):
            return self._get_probe(key, default, False)
        if e is None:
            return self._get_probe(key, default, False)
        kt, idx, a, b, expect, m, vs, ve, exp, _flags, rec, ri = e
        if (
            kt is type(key)
            and not idx[12]  # layout.OFF_FLAGS (RETIRED)
            and (now := _monotonic_ns()) < s.next_check  # type: ignore[union-attr]
            and idx[a:b] == expect
        ):
            if exp and exp <= _time_ns():
                s.local[1] += 1  # type: ignore[union-attr]
                return default
            if rec is not None:
                rec[ri] = now
            s.local[0] += 1  # type: ignore[union-attr]
            return memoryview(m)[vs:ve] if ve - vs >= VIEW_MIN else m[vs:ve]
        return self._get_probe(key, default, False)

    def _get_unmemoised(self, key: Key, default: Any = None, *, with_flags: bool = False) -> Any:
        # ``get`` of a handle with a secret (the memo is shared by every handle
        # on the table in this process and knows nothing of MACs) or memo=False.
        return self._get_probe(key, default, with_flags)

    def _get_probe(self, key: Key, default: Any, with_flags: bool) -> Any:
        """A get not answered by the memo: probe, check the record, memoise."""
        s = self._s
        if s is None:
            raise ClosedCacheError("operation on a closed MmapCache")
        kt = type(key)
        if kt is str:
            try:
                kb = key.encode()  # type: ignore[union-attr]
            except UnicodeEncodeError:
                kb = b""
            kf = 2  # KF_STR
        elif kt is bytes:
            kb, kf = key, 0
        else:
            kb = b""
        n = len(kb)
        # The memo before the generation: _adopt replaces them in the other
        # order, so a memo read here never belongs to an older generation.
        memo = s.memo
        g = s.gen
        key_size, tails, unpack_slot, track_recency, memoise = self._hot
        mm, nslots, ss, rec_base, recency, maps = g.hot
        if 0 < n <= key_size and not mm[12] and (now := _monotonic_ns()) < s.next_check:
            probe = kb + tails[kf][n]
            i = xxh3_64_intdigest(kb) % nslots
            o = _HB + i * ss
            # (key + state + kflags + klen, roster position, seg, off)
            sk, pos, seg, off = unpack_slot(mm, o)
            left = nslots  # a damaged or hostile index might have no EMPTY slot
            while sk != probe:
                if sk[-3] == 0 or not left:  # EMPTY
                    s.local[1] += 1
                    return default
                left -= 1
                i += 1
                o += ss
                if i == nslots:
                    i, o = 0, _HB
                sk, pos, seg, off = unpack_slot(mm, o)
            # The record checks (magic, key, STR flag, checksum), written out.
            heap = g.heap
            try:
                mv = heap.views[seg]
                csum, exp, klen, vlen, flags, rkf, magic, _ = _HEAD(mv, off)
            except (IndexError, TypeError, struct.error):
                mv = None  # segment not mapped yet, or mapped too short
            if mv is not None:
                vs = off + _OFF_KEY + klen
                ve = vs + vlen
                m = maps[seg]
                if (
                    ve <= len(mv)
                    and magic == _REC_MAGIC
                    and klen == n
                    and not (rkf ^ kf) & _KF_STR
                    and m[vs - n : vs] == kb
                    and xxh3_64_intdigest(mv[off + _OFF_CHECKED : ve]) == csum
                ):
                    # Memoise, with the slot as read above as the test (one
                    # read: a writer that changed it since makes the test fail).
                    s.first_reads += 1
                    if memoise:
                        if s.memo_skip:  # see SharedTable.admit
                            s.memo_skip -= 1
                        elif s.admit(_MEMO_ENTRIES):
                            memo[key] = (kt, mm, o, o + key_size + _MEMO_TESTED,
                                         sk + _SLOT_TAIL(pos, seg, off), m, vs, ve, exp, flags,
                                         recency if track_recency else None, rec_base + i)  # fmt: skip
                    if exp and exp <= _time_ns():
                        s.local[1] += 1
                        return default
                    if track_recency:
                        recency[rec_base + i] = now
                    s.local[0] += 1
                    if with_flags:
                        return m[vs:ve], flags
                    return m[vs:ve]
        return self._get_slow(key, default, with_flags)

    def __len__(self) -> int:
        # On every Django set (MAX_ENTRIES), so written out.
        s = self._s
        if s is None:
            raise ClosedCacheError("operation on a closed MmapCache")
        g = s.gen
        occupied: int = _COUNT(g.idx, _OFF_COUNTERS)[0]
        return min(occupied, g.nslots)  # a damaged counter must not break len()

    # ------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Release this handle; maps are unmapped when the last handle in the
        process closes. Idempotent."""
        s, self._s = self._s, None
        if s is not None:
            _native.detach(self.get, self._get_view)  # (a compiled get then raises ClosedCacheError)
            release(s)

    def __enter__(self) -> MmapCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._s is None else f"{len(self)} entries"
        return f"<MmapCache {self.path!r} {state}>"
