"""A concurrent rebuild catches up with writes made while it copies.

Writers log the slots they change while a rebuild copies (the change log in
the index header); the rebuild recopies what the log names, in passes
without the lock and a last one under it, or rescans every slot when the
log overflowed. These tests make real writes at each of those moments (from
inside the rebuild's own steps, so the interleaving is exact) and compare
the rebuilt table with a dict of what was written, for both ways of filling
the new generation: a full rebuild (Builder) and a compaction that keeps
every slot in place (HeapCopier).
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from mmcache import MmapCache, _native
from mmcache._core import layout as L
from mmcache._core import rebuild as R
from mmcache._core import record as record


def _fill(c: MmapCache, n: int) -> dict[str, bytes]:
    model = {f"k{i}": f"v{i}".encode() * 3 for i in range(n)}
    for k, v in model.items():
        c.put(k, v)
    return model


def _mutate(c: MmapCache, model: dict[str, bytes], n: int, rng: random.Random, tag: str) -> None:
    """``n`` random writes of every kind: overwrite, delete, new key, re-put."""
    for i in range(n):
        kind = rng.randrange(4)
        key = rng.choice(sorted(model)) if model else f"new-{tag}-{i}"
        if kind == 0:
            model[key] = f"over-{tag}-{i}".encode()
            c.put(key, model[key])
        elif kind == 1:
            c.delete(key)
            model.pop(key, None)
        elif kind == 2:
            model[f"new-{tag}-{i}"] = f"fresh-{tag}-{i}".encode()
            c.put(f"new-{tag}-{i}", model[f"new-{tag}-{i}"])
        else:  # delete and put back: the key may land in another slot
            c.delete(key)
            model[key] = f"back-{tag}-{i}".encode()
            c.put(key, model[key])


def _check(c: MmapCache, model: dict[str, bytes]) -> None:
    assert dict(c.list_items()) == model, "an entry was lost, stale or resurrected by the rebuild"
    assert all(c.get(k) == v for k, v in model.items())
    assert c.verify() == []


BUILDERS = {"builder": R.Builder, "heap": R.HeapCopier}


@pytest.fixture(params=sorted(BUILDERS))
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(R, "FULL_EVERY", 1 << 30)  # no forced full rebuild in these tests
    return str(request.param)


class _Hooks:
    """Calls ``during`` after the phase-1 copy and after each catch-up pass
    made without the lock (the moments another process's writes can land),
    and records what each take of the log returned and which builder ran."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, c: MmapCache, during: Callable[[int], None]) -> None:
        self.takes: list[Any] = []
        self.used: list[str] = []
        self.moments = 0
        for name, cls in BUILDERS.items():
            self._wrap(monkeypatch, cls, "copy_all", name, c, during)
            self._wrap(monkeypatch, cls, "catch_up", name, c, during)
        orig = R._take_log

        def take(g: Any) -> Any:
            r = orig(g)
            self.takes.append(None if r is None else list(r))
            return r

        monkeypatch.setattr(R, "_take_log", take)

    def _wrap(self, monkeypatch: pytest.MonkeyPatch, cls: type, meth: str, name: str, c: MmapCache,
              during: Callable[[int], None]) -> None:  # fmt: skip
        orig = getattr(cls, meth)
        hooks = self

        def wrapper(b: Any, slots: Any) -> None:
            orig(b, slots)
            if meth == "copy_all" and b.__class__ is R.Builder and hooks.used:
                return  # a Builder's catch-up copies through copy_all too: not a new moment
            hooks.used.append(name)
            if not c._shared().lock.held:  # never while the rebuild holds the lock
                hooks.moments += 1
                during(hooks.moments)

        monkeypatch.setattr(cls, meth, wrapper)


def _rebuild(c: MmapCache, mode: str) -> bool:
    return R.rebuild_concurrently(c, c._shared(), compact=mode == "heap")


def test_writes_during_the_copy_are_caught_up(path: str, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    c = MmapCache(path, size=8192)
    model = _fill(c, 1500)
    rng = random.Random(1)
    hooks = _Hooks(monkeypatch, c, lambda n: _mutate(c, model, 300, rng, "p1") if n == 1 else None)
    gen = c.get_stats()["generation"]
    assert _rebuild(c, mode)
    assert set(hooks.used) == {mode}
    assert c.get_stats()["generation"] > gen
    # the writes came back through the log (not a rescan of every slot)
    assert hooks.takes and hooks.takes[0] is not None and len(hooks.takes[0]) >= 300
    _check(c, model)
    c.close()


@pytest.mark.skipif(not _native.AVAILABLE, reason="the compiled extension is not in use")
def test_compiled_writes_during_the_copy_log_their_slots(
    path: str, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """The compiled put and delete answer while a rebuild copies (they log the
    slots they change, as the pure path does) and the rebuild catches up."""
    c = MmapCache(path, size=8192)
    model = _fill(c, 1500)
    rng = random.Random(3)
    puts, deletes = c.put.counts()[0], c.delete.counts()[0]  # type: ignore[attr-defined]
    hooks = _Hooks(monkeypatch, c, lambda n: _mutate(c, model, 300, rng, "n1") if n == 1 else None)
    assert _rebuild(c, mode)
    puts = c.put.counts()[0] - puts  # type: ignore[attr-defined]
    deletes = c.delete.counts()[0] - deletes  # type: ignore[attr-defined]
    assert puts >= 200 and deletes >= 120, (puts, deletes)  # of ~225 and ~150: the C's, not handed on
    assert hooks.takes and hooks.takes[0] is not None and len(hooks.takes[0]) >= 300
    _check(c, model)
    c.close()


def test_writes_between_catch_up_passes(path: str, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """Writes land after each lock-free pass too, including on slots a pass
    has just recopied; the last pass, under the lock, sees the rest."""
    c = MmapCache(path, size=8192)
    model = _fill(c, 1500)
    rng = random.Random(2)

    def during(n: int) -> None:
        if n <= 4:  # after the phase-1 copy and three catch-up passes
            _mutate(c, model, 200 - 40 * n, rng, f"p{n}")

    hooks = _Hooks(monkeypatch, c, during)
    assert _rebuild(c, mode)
    assert len(hooks.takes) >= 4, "expected several catch-up passes"
    _check(c, model)
    c.close()


def test_an_overflowing_log_falls_back_to_a_full_scan(
    path: str, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    c = MmapCache(path, size=16384)
    model = _fill(c, 2000)
    rng = random.Random(3)
    hooks = _Hooks(
        monkeypatch, c, lambda n: _mutate(c, model, L.LOG_CAP + 500, rng, "big") if n == 1 else None
    )
    assert _rebuild(c, mode)
    assert hooks.takes[0] is None, "more changes than the log holds must read as an overflow"
    _check(c, model)
    c.close()


def test_evictions_during_the_copy_are_caught_up(
    path: str, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    c = MmapCache(path, size=8192, max_entries=1000)
    model = _fill(c, 1000)

    def during(n: int) -> None:
        if n == 1:
            for i in range(300):  # each put evicts one old entry (a swap in the roster)
                c.put(f"late{i}", b"L")

    _Hooks(monkeypatch, c, during)
    assert _rebuild(c, mode)
    items = dict(c.list_items())
    assert len(items) == 1000, "evicted entries must not come back"
    assert all(items[f"late{i}"] == b"L" for i in range(300))
    assert all(v == model[k] for k, v in items.items() if not k.startswith("late"))
    assert c.verify() == []
    c.close()


def test_a_repair_during_the_copy_forces_a_full_scan(
    path: str, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """A writer killed mid-update leaves the dirty flag; the next lock holder
    repairs, which may touch any slot: the rebuild must rescan them all."""
    c = MmapCache(path, size=8192)
    model = _fill(c, 1000)

    def during(n: int) -> None:
        if n == 1:
            c.put("k1", b"changed")
            model["k1"] = b"changed"
            c._shared().gen.idx[L.OFF_DIRTY] = 1  # as a writer killed mid-update leaves it

    hooks = _Hooks(monkeypatch, c, during)
    assert _rebuild(c, mode)
    assert hooks.takes[0] is None
    _check(c, model)
    c.close()


def test_a_damaged_record_makes_the_next_compaction_a_full_rebuild(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compaction that keeps slots in place cannot drop an entry: on a
    record that does not check out it gives up, and the next one is a full
    rebuild, which drops the damaged entry and keeps the rest."""
    monkeypatch.setattr(R, "FULL_EVERY", 1 << 30)
    c = MmapCache(path, size=4096)
    model = _fill(c, 300)
    g = c._shared().gen
    K = g.key_size
    o = next(o for o in range(L.HEADER_BYTES, g.index_bytes, g.slot_size) if g.idx[o + K] == L.OCCUPIED)
    seg, off = L.SLOT_LOC.unpack_from(g.idx, o + K + L.OFF_SLOT_LOC)
    g.heap.views[seg][off + 27] ^= 0xFF  # the record's magic byte
    assert not _rebuild(c, "heap")
    assert c._shared().gen is g, "nothing may change when the compaction gives up"
    assert _rebuild(c, "heap")  # asked for a compaction: a full rebuild this time
    items = dict(c.list_items())
    assert len(items) == len(model) - 1 and all(model[k] == v for k, v in items.items())
    assert c.verify() == []
    c.close()


def test_no_log_is_kept_once_the_rebuild_is_done(path: str) -> None:
    c = MmapCache(path, size=4096)
    _fill(c, 200)
    g = c._shared().gen
    assert R.rebuild_concurrently(c, c._shared())
    assert not g.idx[L.OFF_LOGGING], "the retired generation's writers were still asked to log"
    assert not c._shared().gen.idx[L.OFF_LOGGING]
    c.put("k1", b"x")
    assert L.U32.unpack_from(c._shared().gen.idx, L.OFF_LOG)[0] == 0
    c.close()


def test_another_live_builder_is_left_alone(path: str) -> None:
    """While another process holds the rebuild lock, a rebuild here gives
    way (without waiting); once that process is killed, it goes ahead."""
    c = MmapCache(path, size=4096)
    _fill(c, 100)
    other = subprocess.Popen(
        [sys.executable, "-c", "import os, sys, time\n"
         "from mmcache._core import layout as L, lock as K\n"
         f"fd = os.open({L.lock_name(path)!r}, os.O_RDWR)\n"
         "assert K.try_own(fd, L.LOCK_REBUILD)\n"
         "print('held', flush=True)\n"
         "time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert other.stdout is not None and other.stdout.readline() == "held\n"
        s = c._shared()
        g = s.gen
        assert not R.rebuild_concurrently(c, s)
        assert s.gen is g
    finally:
        other.kill()
        other.wait()
    assert R.rebuild_concurrently(c, s)
    assert c.get_stats()["generation"] > g.gen
    c.close()


def test_record_length_in_the_slot_is_checked_and_repaired(path: str) -> None:
    c = MmapCache(path, size=4096)
    _fill(c, 50)
    g = c._shared().gen
    K = g.params.key_size
    o = next(o for o in range(L.HEADER_BYTES, len(g.idx), g.slot_size) if g.idx[o + K] == L.OCCUPIED)
    right = L.U32.unpack_from(g.idx, o + K + L.OFF_SLOT_RECLEN)[0]
    assert right == record.slot_record_size(g, o) > 0  # the field agrees with the record's own header
    L.U32.pack_into(g.idx, o + K + L.OFF_SLOT_RECLEN, right + 800)
    assert any("record length" in p for p in c.verify())
    c.repair()
    assert L.U32.unpack_from(g.idx, o + K + L.OFF_SLOT_RECLEN)[0] == right
    assert c.verify() == []
    c.close()
