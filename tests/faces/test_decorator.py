"""``@mmap_cached`` in one process: keys, values, options, controls, methods, async.

Every test decorates its own functions over a fresh directory (``path=``),
so no two tests share a table. The multi-process behaviour is in
``test_decorator_processes.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import mmcache
from mmcache import CacheInfo, MmapCache, mmap_cached
from mmcache.decorators import _versions

# -- basics -------------------------------------------------------------------


def test_exported_from_package() -> None:
    assert mmcache.mmap_cached is mmap_cached
    assert "mmap_cached" in mmcache.__all__ and "CacheInfo" in mmcache.__all__


def test_bare_decorator_binding_equivalence_and_info(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMCACHE_DIR", str(tmp_path))
    calls = []

    @mmap_cached
    def f(x: int, y: int = 1) -> dict[str, int]:
        calls.append((x, y))
        return {"x": x, "y": y}

    assert f(1) == f(1, 1) == f(x=1, y=1) == f(y=1, x=1) == {"x": 1, "y": 1}
    assert calls == [(1, 1)]
    assert f.cache_info() == CacheInfo(hits=3, misses=1, maxsize=None, currsize=1)
    assert f(2) == {"x": 2, "y": 1} and calls == [(1, 1), (2, 1)]
    assert f.__wrapped__(5) == {"x": 5, "y": 1}
    assert f.__name__ == "f" and f.__doc__ is None
    assert str(inspect.signature(f)) == "(x: 'int', y: 'int' = 1) -> 'dict[str, int]'"
    assert f.cache_parameters()["path"].startswith(str(tmp_path))


def test_values_round_trip_and_none_is_cached(tmp_path: Path) -> None:
    calls = []

    @mmap_cached(path=tmp_path)
    def f(x: Any) -> Any:
        calls.append(x)
        return None if x == "none" else (x, [x], {x: b"bytes"})

    assert f("none") is None and f("none") is None
    assert f(b"k") == (b"k", [b"k"], {b"k": b"bytes"}) == f(b"k")
    assert calls == ["none", b"k"]


def test_lambdas_closures_and_local_classes_round_trip(tmp_path: Path) -> None:
    class Local:
        def __init__(self, v: int) -> None:
            self.v = v

    @mmap_cached(path=tmp_path)
    def make(n: int) -> Any:
        return (lambda y: y + n), Local(n)

    make(3)
    add, obj = make(3)  # a hit: unpickled from the table
    assert make.cache_info().hits == 1
    assert add(1) == 4 and obj.v == 3 and type(obj).__name__ == "Local"


def test_exceptions_are_not_cached(tmp_path: Path) -> None:
    calls = []

    @mmap_cached(path=tmp_path)
    def f(x: int) -> int:
        calls.append(x)
        if len(calls) == 1:
            raise ValueError("first call fails")
        return x

    with pytest.raises(ValueError, match="first call fails"):
        f(1)
    t0 = time.monotonic()
    assert f(1) == 1 and f(1) == 1  # ran again at once: the failed call left no lease behind
    assert time.monotonic() - t0 < 1
    assert calls == [1, 1]
    assert f.cache_info().currsize == 1


def test_ttl_expiry(tmp_path: Path) -> None:
    calls = []

    @mmap_cached(path=tmp_path, ttl=0.3)
    def f(x: int) -> int:
        calls.append(x)
        return len(calls)

    assert f(1) == 1 and f(1) == 1
    time.sleep(0.4)
    assert f(1) == 2 and calls == [1, 1]


def test_typed_and_ignore(tmp_path: Path) -> None:
    calls = []

    @mmap_cached(path=tmp_path / "a", typed=True)
    def t(x: Any) -> Any:
        calls.append(x)
        return x

    t(1), t(1.0), t(True), t((1,)), t([1])
    assert len(calls) == 5

    @mmap_cached(path=tmp_path / "b")
    def u(x: Any) -> Any:
        calls.append(x)
        return x

    calls.clear()
    u(1), u(1.0), u(True), u((1,)), u([1])
    assert calls == [1, (1,)]

    @mmap_cached(path=tmp_path / "c", ignore=("verbose",))
    def g(x: int, *, verbose: bool = False) -> int:
        calls.append(x)
        return x

    calls.clear()
    g(1), g(1, verbose=True)
    assert calls == [1]


def test_unencodable_argument_names_it_and_key_fixes_it(tmp_path: Path) -> None:
    @mmap_cached(path=tmp_path / "a")
    def f(x: int, lock: Any) -> int:
        return x

    with pytest.raises(TypeError, match="argument 'lock'"):
        f(1, threading.Lock())

    calls = []

    @mmap_cached(path=tmp_path / "b", key=lambda x, lock: x)
    def g(x: int, lock: Any) -> int:
        calls.append(x)
        return x * 2

    assert g(2, threading.Lock()) == 4 == g(2, threading.Lock())
    assert calls == [2] and g.cache_info().hits == 1
    assert g.__cache_key__(2, None) == g.__cache_key__(2, 5) != g.__cache_key__(3, None)

    @mmap_cached(path=tmp_path / "c", key=lambda x: threading.Lock())
    def h(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="key="):
        h(1)


def test_cache_key_refresh_uncached_and_clear(tmp_path: Path) -> None:
    calls = []

    @mmap_cached(path=tmp_path)
    def f(x: int, y: int = 0) -> int:
        calls.append(x)
        return len(calls)

    key = f.__cache_key__(1)
    assert isinstance(key, bytes) and len(key) == 16
    assert key == f.__cache_key__(x=1, y=0) != f.__cache_key__(2)
    assert f(1) == 1
    assert f.refresh(1) == 2 and f(1) == 2  # recomputed and stored
    assert f.uncached(1) == 3 and f(1) == 2  # computed, not stored
    assert f.uncached is f.__wrapped__
    assert f.cache_info() == CacheInfo(hits=2, misses=1, maxsize=None, currsize=1)
    f.cache_clear()
    assert f.cache_info() == CacheInfo(hits=0, misses=0, maxsize=None, currsize=0)
    assert f(1) == 4


def test_max_entries_respected(tmp_path: Path) -> None:
    @mmap_cached(path=tmp_path, max_entries=20)
    def f(x: int) -> int:
        return x

    for i in range(200):
        assert f(i) == i
        assert f.cache_info().currsize <= 20
    info = f.cache_info()
    assert info.maxsize == 20 and info.currsize >= 10
    assert f(199) == 199 and f.cache_info().hits == 1  # the newest survives


def test_unpicklable_result_is_returned_uncached_with_a_warning(tmp_path: Path) -> None:
    calls = []

    @mmap_cached(path=tmp_path)
    def f(x: int) -> Any:
        calls.append(x)
        return threading.Lock()

    with pytest.warns(RuntimeWarning, match="could not be pickled"):
        f(1)
    f(1)
    assert len(calls) == 2


def test_closures_of_one_factory_do_not_share_entries(tmp_path: Path) -> None:
    def make(n: int) -> Any:
        @mmap_cached(path=tmp_path)
        def add(x: int) -> int:
            return x + n

        return add

    assert make(1)(10) == 11 and make(2)(10) == 12 and make(1)(10) == 11

    def with_resource(lock: Any, n: int) -> Any:
        @mmap_cached(path=tmp_path)
        def f(x: int) -> int:
            with lock:
                return x + n

        return f

    # A captured lock is a resource, not an input: left out of the key.
    assert with_resource(threading.Lock(), 1)(1) == 2 == with_resource(threading.Lock(), 1)(1)
    assert with_resource(threading.Lock(), 1).cache_info().currsize == 1
    assert with_resource(threading.Lock(), 2)(1) == 3


def test_lambdas_are_told_apart_by_their_code(tmp_path: Path) -> None:
    f1 = mmap_cached(path=tmp_path, version=1)(lambda x: x + 1)
    f2 = mmap_cached(path=tmp_path, version=1)(lambda x: x * 100)
    assert f1(5) == 6 and f2(5) == 500 and f1(5) == 6 and f2.cache_info() == (0, 1, None, 1)
    assert f1.cache_parameters()["path"] != f2.cache_parameters()["path"]
    same = mmap_cached(path=tmp_path, version=1)(lambda x: x + 1)  # the same code: the same function
    assert same(5) == 6 and same.cache_info().hits == 1
    named = mmap_cached(path=tmp_path, name="tests.add-one")(lambda x: x + 1)
    assert named(5) == 6 and named.cache_parameters()["table_id"] == "tests.add-one"
    with pytest.raises(TypeError, match="pass name="):
        mmap_cached(path=tmp_path)(functools.partial(max, 0))
    assert mmap_cached(path=tmp_path, name="max0")(functools.partial(max, 0))(3) == 3


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="stale_ttl"):
        mmap_cached(stale_ttl=5)
    with pytest.raises(ValueError, match="ttl"):
        mmap_cached(ttl=0)
    with pytest.raises(TypeError, match="ttl"):
        mmap_cached(ttl="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_entries"):
        mmap_cached(max_entries=0)
    with pytest.raises(ValueError, match="ignore"):
        mmap_cached(key=lambda x: x, ignore=("x",))
    with pytest.raises(TypeError, match="version"):
        mmap_cached(version=1.5)(test_bad_options)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nope"):
        mmap_cached(ignore=("nope",))(test_bad_options)
    with pytest.raises(TypeError, match="name must be a non-empty str"):
        mmap_cached(name="")(test_bad_options)
    with pytest.raises(TypeError, match="namespace must be a non-empty str"):
        mmap_cached(namespace=b"x")(test_bad_options)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="not both"):
        mmap_cached(name="a", namespace="b")(test_bad_options)


# -- versions -------------------------------------------------------------------


def _same_name(func: Any) -> Any:
    func.__qualname__ = func.__name__ = "versioned"
    return func


def test_version_change_never_serves_the_old_results_and_keeps_a_live_versions(tmp_path: Path) -> None:
    """Two versions in use side by side (a rolling deploy) share the table:
    each reads only its own results, and neither empties the other's."""

    def v1(x: int) -> str:
        return "one"

    def v2(x: int) -> str:
        return "two"

    f1 = mmap_cached(path=tmp_path, version=1)(_same_name(v1))
    assert f1(0) == "one" and f1(1) == "one" and f1.cache_info().currsize == 2
    f2 = mmap_cached(path=tmp_path, version=2)(_same_name(v2))
    assert f2.cache_parameters()["path"] == f1.cache_parameters()["path"]  # one table per function
    assert f2.cache_info().currsize == 2  # version 1 was in use a moment ago: its results stay
    assert f2(0) == "two" and f2.cache_info().misses == 1
    assert f1(0) == "one" and f1.cache_info().hits == 1


def test_opening_with_a_new_version_empties_the_table_once_the_others_are_abandoned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_versions, "GRACE", 0.2)

    def v1(x: int) -> str:
        return "one"

    def v2(x: int) -> str:
        return "two"

    f1 = mmap_cached(path=tmp_path, version=1)(_same_name(v1))
    assert f1(0) == "one" and f1(1) == "one" and f1.cache_info().currsize == 2
    time.sleep(0.3)  # version 1 not confirmed for longer than GRACE: abandoned
    f2 = mmap_cached(path=tmp_path, version=2)(_same_name(v2))
    assert f2.cache_info().currsize == 0  # opening it with version 2 emptied it
    assert f2(0) == "two"


def test_code_hash_is_the_default_and_opt_out_is_explicit(tmp_path: Path) -> None:
    def v1(x: int) -> str:
        return "one"

    def v2(x: int) -> str:
        return "two"

    h1 = mmap_cached(path=tmp_path / "hashed")(_same_name(v1))
    assert h1(0) == "one"
    h2 = mmap_cached(path=tmp_path / "hashed")(_same_name(v2))
    assert h2(0) == "two"  # same name, another body: not the old result
    assert h2.cache_parameters()["path"] == h1.cache_parameters()["path"]
    h1b = mmap_cached(path=tmp_path / "hashed")(_same_name(v1))
    assert h1b.__cache_key__(0) == h1.__cache_key__(0) != h2.__cache_key__(0)
    for opt_out in ({"hash_code": False}, {"version": 3}):
        plain1 = mmap_cached(path=tmp_path / str(opt_out), **opt_out)(_same_name(v1))  # type: ignore[call-overload]
        plain2 = mmap_cached(path=tmp_path / str(opt_out), **opt_out)(_same_name(v2))  # type: ignore[call-overload]
        assert plain1(0) == "one" and plain2(0) == "one"  # same name, no code hash: same entry
        assert plain2.cache_parameters()["code_hash"] is None
    both = mmap_cached(path=tmp_path / "both", version=3, hash_code=True)(_same_name(v2))
    assert both.cache_parameters()["key_version"] == f"k2|v=3|code={h2.cache_parameters()['code_hash']}"
    with pytest.raises(TypeError, match="hash_code=True needs a Python function"):
        mmap_cached(path=tmp_path, name="m", hash_code=True)(max)


# -- location -------------------------------------------------------------------


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_mmcache_dir_honoured_and_created_owner_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "a" / "b"
    monkeypatch.setenv("MMCACHE_DIR", str(target))

    @mmap_cached
    def f(x: int) -> int:
        return x

    assert not (tmp_path / "a").exists()  # nothing happens before the first call
    f(1)
    assert _mode(tmp_path / "a") == _mode(target) == 0o700
    (table,) = [p for p in target.iterdir() if "." not in p.name.rsplit("-", 1)[-1]]
    assert table.name.startswith("test_decorator.test_")
    assert table.name[:-16].endswith("_created_owner_only.locals.f-") and len(table.name) == 60 + 17
    assert _mode(table) == 0o600
    assert MmapCache.open(table).get(f.__cache_key__(1)) is not None


def test_default_dir_is_the_user_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmcache.decorators import default_dir
    from mmcache.decorators._location import user_cache_dir

    monkeypatch.delenv("MMCACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_dir() == str(tmp_path / "xdg" / "mmcache")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_cache_dir() == str(tmp_path / "home" / ".cache")
    monkeypatch.setenv("MMCACHE_DIR", "~/elsewhere")
    assert default_dir() == str(tmp_path / "home" / "elsewhere")


# -- methods ------------------------------------------------------------------


class Scaler:
    calls = 0

    def __init__(self, factor: int) -> None:
        self.factor = factor

    def __mmcache_key__(self) -> int:
        return self.factor


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_methods_static_and_class_methods(tmp_path: Path) -> None:
    log: list[str] = []

    class Calc(Scaler):
        @mmap_cached(path=tmp_path / "m")
        def scale(self, v: int) -> int:
            log.append("scale")
            return v * self.factor

        @mmap_cached(path=tmp_path / "i", ignore=("self",))
        def shared(self, v: int) -> int:
            log.append("shared")
            return v * self.factor

        @staticmethod
        @mmap_cached(path=tmp_path / "s")
        def static(v: int) -> int:
            log.append("static")
            return -v

        @mmap_cached(path=tmp_path / "s2")
        @staticmethod
        def static2(v: int) -> int:
            log.append("static2")
            return -v

        @classmethod
        @mmap_cached(path=tmp_path / "c", ignore=("cls",))  # a local class has no key by name
        def named(cls, v: int) -> str:
            log.append("named")
            return f"{cls.__name__}{v}"

        @mmap_cached(path=tmp_path / "c2", ignore=("cls",))
        @classmethod
        def named2(cls, v: int) -> str:
            log.append("named2")
            return f"{cls.__name__}{v}"

    a, a2, b = Calc(2), Calc(2), Calc(3)
    assert a.scale(5) == 10 == a2.scale(5) and b.scale(5) == 15  # self keyed by __mmcache_key__
    assert a.shared(5) == 10 == b.shared(5)  # self ignored: b got a's result
    assert a.static(4) == Calc.static(4) == -4 == Calc.static2(4) == a.static2(4)
    assert Calc.named(1) == a.named(1) == "Calc1" == Calc.named2(1) == a.named2(1)
    assert sorted(log) == ["named", "named2", "scale", "scale", "shared", "static", "static2"]
    assert Calc.scale.refresh(a, 5) == 10 and log[-1] == "scale"  # controls take self explicitly
    assert Calc.scale.cache_info().hits == 1 and a.scale.cache_info() == Calc.scale.cache_info()


def test_dataclass_self_is_keyed_by_its_fields(tmp_path: Path) -> None:
    calls = []

    @dataclasses.dataclass
    class Box:
        w: int
        h: int

        @mmap_cached(path=tmp_path)
        def area(self) -> int:
            calls.append(self)
            return self.w * self.h

    assert Box(2, 3).area() == 6 == Box(2, 3).area() and Box(3, 3).area() == 9
    assert len(calls) == 2


# -- async ------------------------------------------------------------------------


def test_async_function_result_cached(tmp_path: Path) -> None:
    calls = []

    @mmap_cached(path=tmp_path)
    async def fetch(x: int) -> dict[str, int]:
        calls.append(x)
        await asyncio.sleep(0.05)
        return {"x": x}

    assert inspect.iscoroutinefunction(fetch)
    assert inspect.iscoroutinefunction(fetch.refresh)

    async def main() -> list[Any]:
        first = await asyncio.gather(*[fetch(1) for _ in range(5)])  # one computes, four wait
        return [*first, await fetch(1), await fetch.refresh(1), await fetch.uncached(2)]

    assert asyncio.run(main()) == [{"x": 1}] * 7 + [{"x": 2}]
    assert calls == [1, 1, 2]
    assert fetch.cache_info() == CacheInfo(hits=5, misses=1, maxsize=None, currsize=1)


def test_async_exception_not_cached_and_async_method(tmp_path: Path) -> None:
    calls = []

    @mmap_cached(path=tmp_path / "f")
    async def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return x

    class Client:
        def __mmcache_key__(self) -> str:
            return "client"

        @mmap_cached(path=tmp_path / "m")
        async def get(self, x: int) -> int:
            calls.append(-x)
            return x + 1

    async def main() -> list[int]:
        with pytest.raises(RuntimeError):
            await flaky(1)
        return [await flaky(1), await flaky(1), await Client().get(1), await Client().get(1)]

    assert asyncio.run(main()) == [1, 1, 2, 2]
    assert calls == [1, 1, -1]


# -- threads --------------------------------------------------------------------------


def test_threads_compute_each_key_once(tmp_path: Path) -> None:
    calls: list[int] = []

    @mmap_cached(path=tmp_path)
    def f(x: int) -> int:
        calls.append(x)
        time.sleep(0.05)
        return x * x

    results: list[int] = []

    def worker() -> None:
        for i in range(10):
            results.append(f(i % 5))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(calls) == [0, 1, 2, 3, 4]
    assert sorted(results) == sorted([i * i for i in range(5)] * 16)
    info = f.cache_info()
    assert info.hits + info.misses == 80 and info.misses == 5


def test_lock_timeout_waiter_computes_itself(tmp_path: Path) -> None:
    calls = []
    release = threading.Event()

    @mmap_cached(path=tmp_path, lock_timeout=0.3, lease_ttl=0.3)
    def f(x: int) -> str:
        calls.append(threading.current_thread().name)
        if threading.current_thread().name == "slow":
            release.wait(10)  # holds the lease (renewed by the keeper thread) until released
        return threading.current_thread().name

    slow = threading.Thread(target=f, args=(1,), name="slow")
    slow.start()
    while not calls:
        time.sleep(0.005)
    t0 = time.monotonic()
    assert f(1) == "MainThread"  # the lease is alive, but we waited lock_timeout and computed
    waited = time.monotonic() - t0
    release.set()
    slow.join()
    assert 0.25 < waited < 3, waited
    assert calls == ["slow", "MainThread"]


def test_lock_timeout_zero_never_waits(tmp_path: Path) -> None:
    gate = threading.Event()
    calls = []

    @mmap_cached(path=tmp_path, lock_timeout=0)
    def f(x: int) -> int:
        calls.append(x)
        gate.wait(5)
        return x

    t = threading.Thread(target=f, args=(1,))
    t.start()
    while not calls:
        time.sleep(0.005)
    gate.set()
    assert f(1) == 1
    t.join()
    assert calls == [1, 1]


def test_stale_while_revalidate_in_process(tmp_path: Path) -> None:
    calls = []

    @mmap_cached(path=tmp_path, ttl=0.5, stale_ttl=30)
    def f(x: int) -> int:
        calls.append(x)
        time.sleep(0.1)
        return len(calls)

    assert f(1) == 1
    time.sleep(0.55)  # stale now
    t0 = time.monotonic()
    assert [f(1) for _ in range(5)] == [1] * 5  # served stale at once
    assert time.monotonic() - t0 < 0.08
    time.sleep(0.25)  # the background recompute finished; fresh for 0.5 s
    assert f(1) == 2 and calls == [1, 1]
    info = f.cache_info()
    assert info.hits == 6 and info.misses == 2


def test_stale_while_revalidate_async(tmp_path: Path) -> None:
    calls = []

    @mmap_cached(path=tmp_path, ttl=0.5, stale_ttl=30)
    async def f(x: int) -> int:
        calls.append(x)
        await asyncio.sleep(0.1)
        return len(calls)

    async def main() -> list[int]:
        out = [await f(1)]
        await asyncio.sleep(0.55)
        out += [await f(1) for _ in range(3)]
        await asyncio.sleep(0.25)
        return [*out, await f(1)]

    assert asyncio.run(main()) == [1, 1, 1, 1, 2]
    assert calls == [1, 1]


def test_table_files_are_small_at_first(tmp_path: Path) -> None:
    @mmap_cached(path=tmp_path)
    def f(x: int) -> int:
        return x

    f(1)
    total = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert total < 256 * 1024, total
    assert os.path.getsize(f.cache_parameters()["path"]) < 80 * 1024


def test_lease_is_renewed_while_a_long_computation_runs(tmp_path: Path) -> None:
    calls = []

    @mmap_cached(path=tmp_path, lease_ttl=0.3, lock_timeout=None)
    def f(x: int) -> int:
        calls.append(x)
        time.sleep(1.2)  # four lease periods: only renewal keeps the others waiting
        return x

    threads = [threading.Thread(target=f, args=(1,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1]


def test_recursive_function(tmp_path: Path) -> None:
    @mmap_cached(path=tmp_path)
    def fib(n: int) -> int:
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    assert fib(60) == 1548008755920
    assert fib.cache_info().misses == 61


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_shares_the_table(tmp_path: Path) -> None:
    import multiprocessing as mp

    calls: list[int] = []

    @mmap_cached(path=tmp_path)
    def f(x: int) -> tuple[int, int]:
        calls.append(x)
        return x, os.getpid()

    parent = f(1)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=lambda: q.put((f(1), f(2), f.cache_info().hits)))
    p.start()
    hit, child, hits = q.get(timeout=30)
    p.join(30)
    assert p.exitcode == 0
    assert hit == parent and hits == 1 and child[1] == p.pid
    assert f(2) == child and calls == [1]


def test_secret_signs_results_and_planted_values_are_recomputed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With secret=, a result planted by a writer without the secret is never
    unpickled: the function runs instead."""
    import cloudpickle

    from mmcache import MmapCache, mmap_cached

    calls = []

    @mmap_cached(path=tmp_path, secret=b"k3y")
    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    assert double(21) == 42 and double(21) == 42 and calls == [21]
    names = {p.name for p in tmp_path.iterdir()}
    (table,) = [tmp_path / n for n in names if n + ".lock" in names]
    key = double.__cache_key__(21)
    with MmapCache.open(str(table)) as plain:  # an attacker without the secret
        for k, e in plain.entries():
            if k == key:
                plain.put(k, cloudpickle.dumps("planted"), flags=e.flags)
    assert double(21) == 42 and calls == [21, 21]
    with pytest.raises(ValueError, match="secret"):
        mmap_cached(path=tmp_path, secret=b"")


def test_large_results_come_back_whole_and_unshared(tmp_path: Path) -> None:
    """Large results are unpickled straight from the mapped record: the
    result must be the value, and a caller mutating it must not change the
    next hit (nor the table)."""
    np = pytest.importorskip("numpy")
    calls = []

    @mmap_cached(path=str(tmp_path))
    def arr(n: int) -> Any:
        calls.append(n)
        return np.arange(n, dtype=np.float64)

    @mmap_cached(path=str(tmp_path))
    def blob(n: int) -> bytes:
        return bytes(range(256)) * n

    for _ in range(3):
        a = arr(5000)
        assert a.shape == (5000,) and a[0] == 0.0 and a[-1] == 4999.0
        a[0] = 42.0  # the caller's own copy
        assert blob(64) == bytes(range(256)) * 64 and type(blob(64)) is bytes
    assert calls == [5000]
