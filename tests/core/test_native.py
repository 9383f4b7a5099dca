"""The compiled get (mmcache._native) against the pure-Python reference.

Our XXH3-64 against the xxhash package; the build and the fallbacks (forced
pure, missing extension: one warning); a native and a pure-Python process
driving one table through the same random operations and agreeing on every
read while a native thread reads beside them; and hand-made hostile buffers
fed straight to the C get (every offset and length out of range).
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import xxhash

from mmcache import MmapCache, _native

ROOT = Path(__file__).resolve().parents[2]
FORCED_PURE = os.environ.get("MMCACHE_PURE_PYTHON", "") not in ("", "0")
needs_native = pytest.mark.skipif(not _native.AVAILABLE, reason="the compiled extension is not in use")


def test_the_extension_is_built_and_used_unless_pure_python_is_forced(path: str) -> None:
    # This machine has a compiler and Python's headers: `pip install -e .` built it.
    assert _native.AVAILABLE is (not FORCED_PURE), _native.REASON
    with MmapCache(path, size=64) as c:
        assert (type(c.get).__name__ == "Getter") is _native.AVAILABLE


@needs_native
def test_xxh3_64_matches_the_xxhash_package() -> None:
    assert _native.xxh3_64 is not None
    rng = random.Random(19)
    lengths = [*range(301), 319, 320, 512, 1023, 1024, 1025, 2047, 2048, 4096, 10_000, 100_003]
    seeds = [0, 1, 2**63, 2**64 - 1, *(rng.getrandbits(64) for _ in range(3))]
    for n in lengths:
        data = rng.randbytes(n)
        for seed in seeds:
            assert _native.xxh3_64(data, seed) == xxhash.xxh3_64_intdigest(data, seed), (n, seed)
    # any buffer, not only bytes (records are hashed straight from the map)
    data = rng.randbytes(400)
    assert _native.xxh3_64(memoryview(data)[3:]) == xxhash.xxh3_64_intdigest(data[3:])


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )  # fmt: skip


_USE_TABLE = """
import os, sys, tempfile, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as seen:
    {block}
    from mmcache import MmapCache, _native
    import mmcache._native, mmcache.table  # again: still one warning
with tempfile.TemporaryDirectory() as d, MmapCache(os.path.join(d, "t"), size=64) as c:
    c.put("k", b"v")
    assert c.get("k") == b"v" and c.get("nope") is None
    print(_native.AVAILABLE, c.get.__name__, len(seen), *(str(w.message) for w in seen), sep="|")
"""


def test_pure_python_forced_by_the_environment_is_silent() -> None:
    p = _python(_USE_TABLE.format(block="pass"), {"MMCACHE_PURE_PYTHON": "1"})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "False|get|0"


def test_a_missing_extension_warns_once_and_runs_pure_python() -> None:
    # A real failed import of the extension: a finder that refuses it.
    block = (
        "import importlib.abc\n"
        "    class Refuse(importlib.abc.MetaPathFinder):\n"
        "        def find_spec(self, name, path=None, target=None):\n"
        "            if name == 'mmcache._native._speedups':\n"
        "                raise ImportError('no compiled extension here')\n"
        "    sys.meta_path.insert(0, Refuse())"
    )
    p = _python(_USE_TABLE.format(block=block), {"MMCACHE_PURE_PYTHON": ""})
    assert p.returncode == 0, p.stderr
    fields = p.stdout.strip().split("|")
    assert fields[:3] == ["False", "get", "1"], p.stdout
    assert "without its compiled fast path" in fields[3] and "MMCACHE_PURE_PYTHON=1" in fields[3]


# ------------------------------------------------------------- differential
class Peer:
    """The pure-Python process of the comparison (tests/core/_native_peer.py)."""

    def __init__(self, path: str, options: dict[str, Any]) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MMCACHE_PURE_PYTHON": "1"}
        self.p = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "core" / "_native_peer.py"), path, json.dumps(options)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip

    def __call__(self, *cmd: Any) -> Any:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        assert line, "the pure-Python peer died"
        return json.loads(line)

    def close(self) -> None:
        assert self.p.stdin is not None
        self.p.stdin.close()
        assert self.p.wait(timeout=60) == 0


def _wire(k: str | bytes) -> list[str]:
    return ["s", k] if isinstance(k, str) else ["b", k.hex()]


def _prefix(k: str | bytes) -> bytes:
    return repr(k).encode("utf-8", "backslashreplace")[:40] + b"|"


def _keys(rng: random.Random) -> list[str | bytes]:
    keys: list[str | bytes] = [f"k{i}" for i in range(40)]
    keys += [f"ключ-{i}" for i in range(10)]  # non-ASCII str
    keys += [b"k%d" % i for i in range(10)]  # bytes equal to str keys' encodings: different keys
    keys += [bytes([i, 0, 255]) for i in range(1, 6)]  # bytes with NULs inside
    keys += ["L" * (rng.randrange(33, 120)) + str(i) for i in range(10)]  # longer than key_size: hashed
    keys += ["sur\udc80rogate"]  # not UTF-8 encodable strictly: the pure path's
    return keys


@needs_native
@pytest.mark.parametrize(
    ("seed", "options"),
    [
        (1, {"size": 512, "key_size": 32}),  # no eviction: reads must equal the model exactly
        (2, {"size": 512, "key_size": 32}),
        (3, {"size": 256, "key_size": 32, "max_entries": 30}),  # LRU evictions, rebuilds
        (4, {"size": 1024, "key_size": 32, "max_bytes": 20_000, "compact_min_bytes": 4096}),
    ],
)
def test_native_and_pure_processes_agree_on_random_operations(
    path: str, seed: int, options: dict[str, Any]
) -> None:
    rng = random.Random(seed)
    keys = _keys(rng)
    exact = "max_entries" not in options and "max_bytes" not in options
    native = MmapCache(path, **options)
    assert type(native.get).__name__ == "Getter" and type(native.put).__name__ == "Putter"
    assert type(native.delete).__name__ == "Putter"
    pure = Peer(path, options)
    assert pure("mode") == "pure"
    model: dict[str | bytes, tuple[bytes, int, float | None]] = {}
    stop = threading.Event()
    errors: list[str] = []

    def reader() -> None:
        # A second thread of the native process: whatever it reads must be
        # some value written for that key (never another key's, never torn).
        r = random.Random(seed + 100)
        while not stop.is_set():
            k = r.choice(keys)
            got = native.get(k)
            if got is not None and not got.startswith(_prefix(k)):
                errors.append(f"{k!r}: {got[:60]!r}")

    t = threading.Thread(target=reader)
    t.start()

    def check(k: str | bytes) -> None:
        mine = native.get(k, with_flags=True)
        theirs = pure("get", _wire(k))
        theirs = None if theirs is None else (bytes.fromhex(theirs[0]), theirs[1])
        want = model.get(k)
        if want is not None and want[2] is not None and abs(want[2] - time.time()) < 0.2:
            return  # expiring right now: either answer is right, for each reader
        assert mine == theirs, (k, mine, theirs)
        live = want is not None and (want[2] is None or want[2] > time.time())
        if exact:
            assert mine == (want[:2] if live else None), (k, mine, want)
        elif mine is not None:
            assert live and want is not None and mine == want[:2], (k, mine, want)

    try:
        for step in range(900):
            k = rng.choice(keys)
            by_native = rng.random() < 0.5
            op = rng.random()
            if op < 0.6:
                n = rng.choice([0, 1, 7, 100, 300, rng.randrange(2000, 9000)])
                value = _prefix(k) + rng.randbytes(n)
                flags = rng.randrange(1 << 16)
                ttl = rng.choice([None] * 8 + [0.3, 1000.0])
                if by_native:
                    native.put(k, value, ttl, flags=flags)
                else:
                    pure("put", _wire(k), value.hex(), flags, ttl)
                model[k] = (value, flags, None if ttl is None else time.time() + ttl)
            elif op < 0.75:
                if by_native:
                    native.delete(k)
                else:
                    pure("delete", _wire(k))
                model.pop(k, None)
            check(k)
            check(rng.choice(keys))
            if step % 300 == 299:
                time.sleep(0.35)  # let the short ttls pass
                for k2 in keys:
                    check(k2)
        # The compiled put answered the common puts (a byte cap, eviction,
        # hashed keys and the rest went to the pure path, in this process too).
        answered, passed = native.put.counts()  # type: ignore[attr-defined]
        # With a byte cap it passes every put; otherwise it answers a good share
        # (at max_entries=30 most puts evict and pass: ~100 of ~300 answered,
        # varying with the short ttls' timing, hence the wide margin).
        if "max_bytes" in options:
            assert answered == 0, (answered, passed)
        else:
            assert answered >= 40, (answered, passed)
        assert native.delete.counts()[0] > 20  # type: ignore[attr-defined]
    finally:
        stop.set()
        t.join(timeout=60)
        pure.close()
        native.close()
    assert not errors, errors[:5]


# -------------------------------------------------- hostile bytes, in the C get
@needs_native
def test_native_get_on_a_well_formed_buffer_hits_counts_and_stamps() -> None:
    from _native_craft import call, table

    idx, heap, roster, i = table(b"key", b"value", flags=7)
    local = [0] * 7
    before = time.monotonic_ns()
    hit = call(_native.get, idx, [memoryview(heap)], roster, b"key", local=local, with_flags=True)
    assert hit == (b"value", 7)
    assert call(_native.get, idx, [memoryview(heap)], roster, b"other", local=local) == "MISS"
    assert call(_native.get, idx, [memoryview(heap)], roster, "key", local=local) == "MISS"  # str != bytes
    assert local[:2] == [1, 2]
    assert memoryview(roster).cast("Q")[8 + i] >= before  # the LRU stamp
    expired, h2, r2, _ = table(b"key", b"value", expire=time.time_ns() - 1)
    assert call(_native.get, expired, [memoryview(h2)], r2, b"key") == "MISS"


@needs_native
def test_native_get_falls_back_on_every_out_of_range_field() -> None:
    from _native_craft import HB, KEY_SIZE, NSLOTS, SLOT_SIZE, call, table

    F = _native.FALLBACK
    idx, heap, roster, i = table(b"key", b"v" * 50)
    o = HB + i * SLOT_SIZE + KEY_SIZE
    ok = call(_native.get, idx, [memoryview(heap)], roster, b"key")
    assert ok == b"v" * 50

    def get_with(idx: bytearray = idx, heap: Any = heap, **kw: Any) -> Any:
        return call(_native.get, idx, [heap if heap is None else memoryview(heap)], roster, b"key", **kw)

    short = idx[: HB + (NSLOTS - 1) * SLOT_SIZE]  # the header claims more slots than the map has
    assert call(_native.get, short, [memoryview(heap)], roster, b"key") is F
    retired = bytearray(idx)
    retired[12] = 1
    assert get_with(retired) is F
    assert get_with(next_check=time.monotonic_ns() - 1) is F  # a staleness check is due
    # due a nanosecond after now: the coarse clock (which lags by up to its
    # resolution) must not hide it; due in 2 s: answered
    assert get_with(next_check=time.monotonic_ns() + 1) is F
    assert get_with(next_check=time.monotonic_ns() + 2 * 10**9) == b"v" * 50
    assert get_with(heap=None) is F  # segment not mapped
    for field, value in [(8, 1), (8, 2**32 - 1), (12, len(heap)), (12, len(heap) - 8), (12, 2**32 - 8)]:
        bad = bytearray(idx)
        struct.pack_into("<I", bad, o + field, value)  # segment, offset out of range
        assert get_with(bad) is F, (field, value)
    for at, value in [(16, 2**32 - 1), (20, 2**32 - 1), (20, 51), (16, 2), (27, 0xA6)]:
        bad = bytearray(heap)
        struct.pack_into("<I" if at < 24 else "<B", bad, 64 + at, value)  # klen, vlen, magic
        assert get_with(heap=bad) is F, (at, value)
    flipped = bytearray(heap)
    flipped[64 + 32 + 3 + 10] ^= 1  # a value byte: the checksum no longer matches
    assert get_with(heap=flipped) is F
    # a stamp index past the roster is not stored, the hit still answered
    assert get_with(rec_base=2**40) == b"v" * 50
    assert call(_native.get, idx, [memoryview(heap)], bytearray(8), b"key") == b"v" * 50


@needs_native
def test_native_get_probe_ends_on_an_index_with_no_empty_slot() -> None:
    from _native_craft import HB, KEY_SIZE, NSLOTS, SLOT_SIZE, call, table

    idx, heap, roster, _ = table(b"key", b"v")
    for s in range(NSLOTS):
        o = HB + s * SLOT_SIZE
        if idx[o + KEY_SIZE] == 0:
            idx[o : o + 4] = b"zzz%d" % s
            idx[o + KEY_SIZE : o + KEY_SIZE + 3] = bytes((2, 0, 4))  # tombstones everywhere
    assert call(_native.get, idx, [memoryview(heap)], roster, b"absent") == "MISS"
    assert call(_native.get, idx, [memoryview(heap)], roster, b"key") == b"v"


@needs_native
def test_native_get_survives_random_damage_to_slot_and_record() -> None:
    # A fixed-seed sweep of what the fuzzer (tests/core/fuzz_native.py) explores:
    # every answer is the default, FALLBACK, or the intact value.
    from _native_craft import HB, call, table

    rng = random.Random(5)
    idx0, heap0, roster, _ = table(b"key", b"value" * 20)
    for _ in range(20_000):
        idx, heap = bytearray(idx0), bytearray(heap0)
        for _ in range(rng.randrange(1, 6)):
            buf = rng.choice((idx, heap))
            at = rng.randrange(HB if buf is idx else 0, len(buf))
            buf[at] = rng.randrange(256)
        r = call(_native.get, idx, [memoryview(heap)], roster, rng.choice([b"key", "key", b"k"]))
        assert r == "MISS" or r is _native.FALLBACK or r == b"value" * 20, r


def test_get_keeps_its_signature_and_errors_native_or_pure(path: str) -> None:
    # Runs under both paths (make test-pure): the same answers and exceptions.
    from mmcache import ClosedCacheError

    c = MmapCache(path, size=64)
    c.put("a", b"1", flags=3)
    assert c.get("a") == b"1" and c.get(key="a") == b"1"
    assert c.get("b", "D") == "D" and c.get("b", default="E") == "E"
    assert c.get("a", with_flags=True) == (b"1", 3)
    assert c.get("a", None, with_flags=True) == (b"1", 3)
    assert c._get_view("a", None) == b"1" and c._get_view("b", 5) == 5
    for bad in ((), ("a", 1, 2), ("a", "x")):
        kw = {"default": "y"} if bad == ("a", "x") else {}
        with pytest.raises(TypeError):
            c.get(*bad, **kw)
    with pytest.raises(TypeError):
        c.get("a", foo=1)
    with pytest.raises(TypeError, match="str or bytes"):
        c.get(["unhashable"])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        c.get("")
    c.close()
    with pytest.raises(ClosedCacheError):
        c.get("a")
