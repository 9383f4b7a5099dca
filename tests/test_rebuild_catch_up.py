"""A concurrent rebuild catches up with writes made while it copies.

Writers log the slots they change while a rebuild copies (the change log in
the index header); the rebuild recopies what the log names, in passes
without the lock and a last one under it, or rescans every slot when the
log overflowed. These tests make real writes at each of those moments (from
inside the rebuild's own steps, so the interleaving is exact) and compare
the rebuilt table with a dict of what was written.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from mmcache import MmapCache
from mmcache import _layout as L
from mmcache import _maintenance as M
from mmcache import _rebuild as R


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


class _Spy:
    """Wraps a function of _rebuild, calling ``before``/``after`` hooks and
    recording what the log takes returned."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.takes: list[Any] = []
        self.monkeypatch = monkeypatch

    def wrap(self, name: str, after: Callable[[int], None]) -> None:
        orig = getattr(R, name)
        calls = [0]

        def wrapper(*a: Any, **k: Any) -> Any:
            r = orig(*a, **k)
            calls[0] += 1
            after(calls[0])
            return r

        self.monkeypatch.setattr(R, name, wrapper)

    def record_takes(self) -> None:
        orig = R._take_log

        def take(g: Any) -> Any:
            r = orig(g)
            self.takes.append(None if r is None else list(r))
            return r

        self.monkeypatch.setattr(R, "_take_log", take)


def test_writes_during_the_copy_are_caught_up(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    c = MmapCache(path, size=8192)
    model = _fill(c, 1500)
    rng = random.Random(1)
    spy = _Spy(monkeypatch)
    spy.record_takes()
    orig_copy = R.Builder.copy_all
    first = [True]

    def copy_all(self: R.Builder, slots: Any) -> None:
        orig_copy(self, slots)
        if first[0]:  # phase 1 has copied the snapshot: now others write
            first[0] = False
            _mutate(c, model, 300, rng, "p1")

    monkeypatch.setattr(R.Builder, "copy_all", copy_all)
    gen = c.get_stats()["generation"]
    assert R.rebuild_concurrently(c, c._shared())
    assert c.get_stats()["generation"] > gen
    # the writes came back through the log (not a rescan of every slot)
    assert spy.takes and spy.takes[0] is not None and len(spy.takes[0]) >= 300
    _check(c, model)
    c.close()


def test_writes_between_catch_up_passes(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes land after each lock-free pass too, including on slots a pass
    has just recopied; the last pass, under the lock, sees the rest."""
    c = MmapCache(path, size=8192)
    model = _fill(c, 1500)
    rng = random.Random(2)
    spy = _Spy(monkeypatch)
    spy.record_takes()
    orig_copy = R.Builder.copy_all
    calls = [0]

    def copy_all(self: R.Builder, slots: Any) -> None:
        orig_copy(self, slots)
        calls[0] += 1
        if calls[0] <= 4:  # the snapshot copy and three catch-up passes
            _mutate(c, model, 200 - 40 * calls[0], rng, f"p{calls[0]}")

    monkeypatch.setattr(R.Builder, "copy_all", copy_all)
    assert R.rebuild_concurrently(c, c._shared())
    assert len(spy.takes) >= 4, "expected several catch-up passes"
    _check(c, model)
    c.close()


def test_an_overflowing_log_falls_back_to_a_full_scan(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    c = MmapCache(path, size=16384)
    model = _fill(c, 2000)
    rng = random.Random(3)
    spy = _Spy(monkeypatch)
    spy.record_takes()
    orig_copy = R.Builder.copy_all
    first = [True]

    def copy_all(self: R.Builder, slots: Any) -> None:
        orig_copy(self, slots)
        if first[0]:
            first[0] = False
            _mutate(c, model, L.LOG_CAP + 500, rng, "big")

    monkeypatch.setattr(R.Builder, "copy_all", copy_all)
    assert R.rebuild_concurrently(c, c._shared())
    assert spy.takes[0] is None, "more changes than the log holds must read as an overflow"
    _check(c, model)
    c.close()


def test_evictions_during_the_copy_are_caught_up(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    c = MmapCache(path, size=8192, max_entries=1000)
    model = _fill(c, 1000)
    orig_copy = R.Builder.copy_all
    first = [True]

    def copy_all(self: R.Builder, slots: Any) -> None:
        orig_copy(self, slots)
        if first[0]:
            first[0] = False
            for i in range(300):  # each put evicts one old entry
                c.put(f"late{i}", b"L")

    monkeypatch.setattr(R.Builder, "copy_all", copy_all)
    assert R.rebuild_concurrently(c, c._shared())
    items = dict(c.list_items())
    assert len(items) == 1000, "evicted entries must not come back"
    assert all(items[f"late{i}"] == b"L" for i in range(300))
    assert all(v == model[k] for k, v in items.items() if not k.startswith("late"))
    assert c.verify() == []
    c.close()


def test_a_repair_during_the_copy_forces_a_full_scan(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer killed mid-update leaves the dirty flag; the next lock holder
    repairs, which may touch any slot: the rebuild must rescan them all."""
    c = MmapCache(path, size=8192)
    model = _fill(c, 1000)
    spy = _Spy(monkeypatch)
    spy.record_takes()
    orig_copy = R.Builder.copy_all
    first = [True]

    def copy_all(self: R.Builder, slots: Any) -> None:
        orig_copy(self, slots)
        if first[0]:
            first[0] = False
            c.put("k1", b"changed")
            model["k1"] = b"changed"
            self.g.idx[L.OFF_DIRTY] = 1  # as a writer killed mid-update leaves it

    monkeypatch.setattr(R.Builder, "copy_all", copy_all)
    assert R.rebuild_concurrently(c, c._shared())
    assert spy.takes[0] is None
    _check(c, model)
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
    """While another process's rebuild is registered and alive, a rebuild here
    gives way (without waiting); once that process is gone, it goes ahead."""
    c = MmapCache(path, size=4096)
    _fill(c, 100)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        s = c._shared()
        g = s.gen
        with s.lock.hold():
            nxt = L.BUILD.unpack_from(g.idx, L.OFF_BUILD)[0]
            L.BUILD.pack_into(g.idx, L.OFF_BUILD, nxt, other.pid, nxt + 1)
        assert not R.rebuild_concurrently(c, s)
        assert s.gen is g
    finally:
        other.kill()
        other.wait()
    s.builder_seen = ((0, 0), 0)  # forget the last look (it is trusted for one interval)
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
    assert right == M.slot_record_size(g, o) > 0  # the field agrees with the record's own header
    L.U32.pack_into(g.idx, o + K + L.OFF_SLOT_RECLEN, right + 800)
    assert any("record length" in p for p in c.verify())
    c.repair()
    assert L.U32.unpack_from(g.idx, o + K + L.OFF_SLOT_RECLEN)[0] == right
    assert c.verify() == []
    c.close()
