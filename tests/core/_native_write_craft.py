"""A damaged-table workbench for the compiled put, add and delete, shared by
their fuzzer (tests/core/fuzz_native_write.py) and its fixed-seed sweep in
tests/core/test_native_put.py.

A real table's mapped index (header with its hot counters, flags, dirty and
log; slots), heap and roster are overwritten where and with what a provider
says (atheris' FuzzedDataProvider, or RandomProvider below), then one
compiled write runs. The writes are made on a stand-in handle whose pure-path
methods only answer PURE, so each input runs the C alone and the maps can be
put back byte for byte after it (the pure path would repair or rebuild).
"""

from __future__ import annotations

import os
import random
from typing import Any, Protocol

from mmcache import MmapCache, _native
from mmcache._core import layout

PURE = object()
HB, NSLOTS, SS, KEY_SIZE = layout.HEADER_BYTES, 31, 96, 16  # the table DamagedTable makes
KEYS: tuple[str | bytes, ...] = ("k0", "k1", "k7", b"k2", "absent", "x" * 16, "k3")


class Provider(Protocol):
    """The part of atheris' FuzzedDataProvider that `one` uses."""

    def ConsumeIntInRange(self, lo: int, hi: int) -> int: ...  # noqa: N802
    def ConsumeBool(self) -> bool: ...  # noqa: N802
    def ConsumeBytes(self, n: int) -> bytes: ...  # noqa: N802
    def ConsumeFloatInRange(self, lo: float, hi: float) -> float: ...  # noqa: N802


class RandomProvider:
    """A Provider drawing from a seeded random.Random (the sweep's)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def ConsumeIntInRange(self, lo: int, hi: int) -> int:  # noqa: N802
        return self.rng.randint(lo, hi)

    def ConsumeBool(self) -> bool:  # noqa: N802
        return self.rng.random() < 0.5

    def ConsumeBytes(self, n: int) -> bytes:  # noqa: N802
        return self.rng.randbytes(n)

    def ConsumeFloatInRange(self, lo: float, hi: float) -> float:  # noqa: N802
        return self.rng.uniform(lo, hi)


class Stand:
    """What a Putter reads of a handle, with pure-path methods that do nothing."""

    def __init__(self, c: MmapCache) -> None:
        self._s, self._opts, self._key_size = c._s, c._opts, c._key_size  # type: ignore[attr-defined]

    def _put_pure(self, *args: Any, **kwargs: Any) -> object:
        return PURE

    _add_pure = _delete_pure = _put_pure

    def _compact(self, s: Any) -> None:
        s.compact_wanted = False


class DamagedTable:
    """A small table (a tombstone, expiring entries, a bytes key) in `directory`,
    its maps as they were, and the compiled writes on a stand-in handle."""

    def __init__(self, directory: str) -> None:
        c = self.cache = MmapCache(os.path.join(directory, "t"), size=32, key_size=16)
        for i in range(8):
            c.put(f"k{i}", b"v%d" % i * (i * 7), 1000.0 if i % 3 == 0 else None, flags=i)
        c.delete("k5")
        c.put(b"k2", b"bytes key")
        stand = Stand(c)
        self.put, self.add = _native.Putter(stand), _native.Putter(stand, add=True)
        self.delete = _native.Putter(stand, delete=True)
        gen = c._s.gen  # type: ignore[union-attr]
        assert gen.hot[1:3] == (NSLOTS, SS), gen.hot[1:3]
        self.maps = [gen.hot[0], gen.heap.views[0], gen.roster]
        self.pristine = [bytes(m) for m in self.maps]

    def one(self, fdp: Provider) -> object:
        """Damage the maps as `fdp` says, run one compiled write, check its
        answer's type (AssertionError if wrong); the answer."""
        s = self.cache._s  # type: ignore[union-attr]
        for m, b in zip(self.maps, self.pristine, strict=True):
            m[:] = b
        s.compact_wanted, s.grow_to = False, None
        s.next_check = s.flush_due = 1 << 62  # no staleness check or stats flush: the C runs
        for _ in range(fdp.ConsumeIntInRange(0, 8)):
            which = fdp.ConsumeIntInRange(0, 3)
            m = self.maps[min(which, 2)]
            if which == 3:  # a slot's fields (state, flags, roster position, seg, offset, length)
                at = HB + fdp.ConsumeIntInRange(0, NSLOTS - 1) * SS + KEY_SIZE + fdp.ConsumeIntInRange(0, 31)
            else:  # anywhere, or the index's header and first slots
                hi = len(m) - 1 if fdp.ConsumeBool() else min(len(m) - 1, HB + 8 * SS)
                at = fdp.ConsumeIntInRange(0, hi)
            chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 8))[: len(m) - at]
            m[at : at + len(chunk)] = chunk
        key = KEYS[fdp.ConsumeIntInRange(0, len(KEYS) - 1)]
        op = fdp.ConsumeIntInRange(0, 2)
        if op == 2:
            r = self.delete(key)
            ok = r is PURE or type(r) is bool
        else:
            value = b"w" * fdp.ConsumeIntInRange(0, 300)
            ttl = fdp.ConsumeFloatInRange(-1.0, 1e6) if fdp.ConsumeBool() else None
            if op == 0:
                r = self.put(key, value, ttl, flags=fdp.ConsumeIntInRange(0, 0xFFFF))
                ok = r is PURE or r is None
            else:
                r = self.add(key, value, ttl)
                ok = r is PURE or type(r) is bool
        if not ok:
            raise AssertionError(f"compiled write answered {r!r}")
        return r

    def close(self) -> None:
        for m, b in zip(self.maps, self.pristine, strict=True):
            m[:] = b
        self.cache.close()
