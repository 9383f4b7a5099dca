"""The compiled decorator hit (mmcache/_native/_decorator.c) against the pure one.

Keys are on disk in users' tables: for every call the compiled ``KeyFn``
must give the pure encoder's bytes exactly, and leave to the pure path (which
raises the TypeError naming the argument) everything it does not know. The
compiled ``Hit`` is the decorated function itself: it must behave as the
Python wrapper does (tests/test_decorator*.py run through it) and as a
function does (pickled by reference, bound as a method, weakly referenced).
"""

from __future__ import annotations

import atexit
import gc
import math
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import weakref
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmcache import _native, mmap_cached
from mmcache.decorators._argkey import ArgKeyer
from mmcache.decorators._encode import encode

native = pytest.mark.skipif(_native.KeyFn is None, reason=f"no compiled key ({_native.REASON})")


def f3(a: Any, b: Any, c: Any) -> Any:
    return a


def f1(a: Any) -> Any:
    return a


def keyers(func: Any, typed: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[ArgKeyer, ArgKeyer]:
    """(compiled, pure) keyers of ``func``: the pure one made with the extension's KeyFn hidden."""
    compiled = ArgKeyer(func, typed=typed)
    with monkeypatch.context() as m:
        m.setattr(_native, "KeyFn", None)
        pure = ArgKeyer(func, typed=typed)
    return compiled, pure


scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # past 64 bits too: the pure path's "I" form
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0.0, -0.0, 2.0**63, -(2.0**63), 2.0**63 - 1024, 1e300, 0.5])
    | st.text()  # lone surrogates included
    | st.binary()
)
values = st.recursive(
    scalars, lambda inner: st.tuples(inner, inner) | st.lists(inner, max_size=4), max_leaves=12
)


@native
def test_our_xxh3_128_is_the_xxhash_package_s() -> None:
    """The compiled key hashes 17 .. 240 bytes itself (xxh3.h): every length, random and
    patterned bytes, against the package (keys of other lengths are the package's)."""
    import random

    import xxhash

    from mmcache._native import _decorator

    rng = random.Random(19)
    for n in range(17, 241):
        for data in (rng.randbytes(n), bytes(n), b"\xff" * n, bytes(range(256))[:n]):
            assert _decorator.xxh3_128_mid(data) == xxhash.xxh3_128_digest(data), n
    for n in (0, 16, 241, 1000):
        with pytest.raises(ValueError):
            _decorator.xxh3_128_mid(bytes(n))


@native
def test_native_extensions_are_built_together() -> None:
    """A build that made the compiled get made the compiled key (a silent failure shows here)."""
    assert _native.Getter is not None and _native.KeyFn is not None


@native
@settings(max_examples=400, deadline=None)
@given(st.tuples(values, values, values), st.booleans())
def test_compiled_key_is_the_pure_key(args: tuple[Any, Any, Any], typed: bool) -> None:
    mp = pytest.MonkeyPatch()
    try:
        compiled, pure = keyers(f3, typed, mp)
    finally:
        mp.undo()
    assert type(compiled.key).__name__ == "KeyFn" and type(pure.key).__name__ != "KeyFn"
    assert compiled.key(args, {}) == pure.key(args, {}) == pure._key_bound(args, {})


@native
@settings(max_examples=300, deadline=None)
@given(values, st.booleans())
def test_compiled_encoding_is_the_pure_encoding(v: Any, typed: bool) -> None:
    from mmcache._native import _decorator

    got = _decorator.encode(v, typed)
    if got is not None:  # None: left to the pure encoder
        assert got == encode(v, typed=typed)


@native
@pytest.mark.parametrize("typed", [False, True])
def test_what_the_compiled_key_leaves_to_the_pure_path(typed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmcache._native import _decorator

    compiled, pure = keyers(f1, typed, monkeypatch)
    deep: Any = 1
    for _ in range(70):
        deep = (deep,)
    cases = [2**64, "\ud800", {"a": 1}, frozenset({1}), 3 + 4j, True.__class__, bytearray(b"x")]
    if not typed:
        cases.append(1e300)  # an integral float past 64 bits: the pure "I" form
    for v in cases:
        assert _decorator.encode(v, typed) is None
        assert compiled.key((v,), {}) == pure.key((v,), {})
    assert _decorator.encode(deep, typed) is None
    for k in (compiled, pure):  # nested past the limit: the same TypeError, naming the argument
        with pytest.raises(TypeError, match="argument 'a'"):
            k.key((deep,), {})
    # other call shapes go to the binder: keywords, wrong arity
    assert compiled.key((), {"a": 5}) == pure.key((5,), {}) == compiled.key((5,), {})
    with pytest.raises(TypeError):
        compiled.key((1, 2), {})

    # subclasses of the known types are not the known types
    class Int(int):
        pass

    assert compiled.key((Int(5),), {}) == pure.key((Int(5),), {})
    with pytest.raises(TypeError, match="cannot build a key from argument 'a'"):
        compiled.key((threading.Lock(),), {})  # no stable value


@native
def test_typed_and_untyped_keys_differ_as_the_pure_ones_do(monkeypatch: pytest.MonkeyPatch) -> None:
    cu, pu = keyers(f1, False, monkeypatch)
    ct, pt = keyers(f1, True, monkeypatch)
    for a, b in [(1, 1.0), (1, True), (0, -0.0), ((1,), [1])]:
        assert (cu.key((a,), {}) == cu.key((b,), {})) and (pu.key((a,), {}) == pu.key((b,), {}))
        assert (ct.key((a,), {}) != ct.key((b,), {})) and (pt.key((a,), {}) != pt.key((b,), {}))
    assert cu.key((math.nan,), {}) == cu.key((-math.nan,), {}) == pu.key((float("nan"),), {})


@native
def test_a_keyer_and_its_compiled_key_are_collected() -> None:
    """KeyFn holds its ArgKeyer's bound method (a cycle): the collector frees both."""
    k = ArgKeyer(f1)
    ref = weakref.ref(k)
    k.key((1,), {})
    del k
    gc.collect()
    assert ref() is None


def test_native_and_pure_processes_share_decorated_results() -> None:
    """One process with the compiled key, one pure (MMCACHE_PURE_PYTHON=1), one cache
    directory: each finds what the other stored, for every argument type the key knows."""
    script = textwrap.dedent(
        """
        import json, sys
        from mmcache import mmap_cached, _native
        calls = []
        @mmap_cached
        def f(a, b, c):
            calls.append(1)
            return repr((a, b, c))
        args = [(1, 2.5, "x"), (None, True, b"b"), ((1, (2, [3])), -0.0, "\\u20ac"), (2**70, 1e300, [])]
        out = [f(*a) for a in args]
        print(json.dumps([_native.KeyFn is not None, len(calls), out]))
        """
    )
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "MMCACHE_DIR": d}
        mod = os.path.join(d, "mod.py")
        with open(mod, "w") as fh:
            fh.write(script)
        first = subprocess.run([sys.executable, mod], env={**env, "MMCACHE_PURE_PYTHON": "1"},
                               capture_output=True, text=True, timeout=120)  # fmt: skip
        assert first.returncode == 0, first.stderr
        second = subprocess.run([sys.executable, mod], env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
    import json

    p, n = json.loads(first.stdout), json.loads(second.stdout)
    assert p[0] is False and p[1] == 4  # pure: computed all four
    assert n[0] is (_native.KeyFn is not None) and n[1] == 0  # compiled (if built): found all four
    assert p[2] == n[2]


_DIR = tempfile.mkdtemp(prefix="mmcache-hit-")  # module level: pickled by reference
atexit.register(shutil.rmtree, _DIR, True)


@mmap_cached(path=_DIR)
def module_level(x: int) -> int:
    """Doubles."""
    return 2 * x


@native
def test_the_decorated_function_is_function_like() -> None:
    import pickle

    assert type(module_level).__name__ == "Hit"
    assert module_level(4) == 8 and module_level(4) == 8
    assert pickle.loads(pickle.dumps(module_level)) is module_level  # by reference, as a function
    assert weakref.ref(module_level)() is module_level
    assert module_level.__name__ == "module_level" and module_level.__doc__ == "Doubles."
    assert "module_level" in repr(module_level)
    assert module_level.__wrapped__(5) == 10


@native
def test_hits_from_threads_are_all_counted(tmp_path: Any) -> None:
    """The compiled hit counts each hit (under the GIL): 4 threads x 3,000 hits, all in cache_info."""

    @mmap_cached(path=tmp_path)
    def sq(x: int) -> int:
        return x * x

    for i in range(10):
        sq(i)
    before = sq.cache_info().hits

    def work() -> None:
        for j in range(3000):
            assert sq(j % 10) == (j % 10) ** 2

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sq.cache_info().hits - before == 12_000
    assert sq.cache_info().misses == 10


@native
def test_an_unreadable_stored_result_is_recomputed(tmp_path: Any) -> None:
    """A stored value that does not unpickle is not a hit: the wrapper runs the function."""
    from mmcache import MmapCache

    calls: list[int] = []

    @mmap_cached(path=tmp_path)
    def inc(x: int) -> int:
        calls.append(x)
        return x + 1

    assert inc(1) == 2 and inc(1) == 2 and calls == [1]
    names = {p.name for p in tmp_path.iterdir()}
    (table,) = [tmp_path / n for n in names if n + ".lock" in names]
    key = inc.__cache_key__(1)
    with MmapCache.open(str(table)) as plain:
        for k, e in plain.entries():
            if k == key:
                plain.put(k, b"not a pickle", flags=e.flags)
    assert inc(1) == 2 and calls == [1, 1]
    assert inc(1) == 2 and calls == [1, 1]  # stored again, a hit again
