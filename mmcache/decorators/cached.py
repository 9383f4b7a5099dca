"""``@mmap_cached``: memoise a function across processes and restarts.

::

    @mmap_cached
    def f(x, y=1): ...

    @mmap_cached(path="/var/tmp/feat", ttl=3600, ignore=("verbose",), max_entries=100_000)
    def g(df, *, verbose=False): ...

A call's arguments become a 16-byte key (``_argkey``: bound to the signature,
encoded canonically, the same in every process); its result is stored with
cloudpickle in the function's own table (``_location``, ``_table``), named
by the function's identity and tagged with its code hash (``_identity``,
``_codehash``: unique on the machine, dropped when the code changes). A hit
is the key, one lock-free table read and one unpickle. On a miss one caller
in any process computes while the others wait for its result
(``_stampede``). Exceptions are not cached; ``None`` is.

Methods: ``self`` is an argument like any other, keyed by value (its
``__mmcache_key__()`` if the class defines one, else its pickled state), or
left out with ``ignore=("self",)``. ``@classmethod`` / ``@staticmethod``
may go above or below. The controls take the arguments the undecorated
function takes, ``self`` included: ``Cls.method.refresh(obj, x)``.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import pickle
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, ParamSpec, Protocol, TypeVar, overload

from .. import _native
from ._identity import MARKER, func_cells, identify
from ._keyfns import keyfn_builder, rebinding_keyfn
from ._options import options
from ._slowpath import SlowPath
from ._stampede import COMPUTE, FETCH, MISS, computing
from ._table import FunctionTable
from ._tagging import Tagger, entry_reader, invalidate_tags, reader, spec_id

if TYPE_CHECKING:
    from redis import Redis

    from mmcache.l2 import RedisL2

__all__ = ["CacheInfo", "CachedFunction", "mmap_cached"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
KeyFunc = Callable[..., Any]


class CacheInfo(NamedTuple):
    """As ``functools.lru_cache``'s: hits and misses counted in this process
    (a miss is a call that ran the function); ``maxsize`` is ``max_entries``
    (None: bounded only by the table's largest size); ``currsize`` counts the
    table's entries, shared by every process."""

    hits: int
    misses: int
    maxsize: int | None
    currsize: int


class CachedFunction(Protocol[P, R_co]):
    """What ``@mmap_cached`` returns: the function, plus cache controls."""

    @property
    def __wrapped__(self) -> Callable[P, R_co]: ...
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
    def __cache_key__(self, *args: P.args, **kwargs: P.kwargs) -> bytes: ...
    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
    def uncached(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
    def cache_info(self) -> CacheInfo: ...
    def cache_clear(self) -> None: ...
    def cache_parameters(self) -> dict[str, Any]: ...
    def invalidate_tags(self, *tags: str) -> int: ...

    # Binding as a method: ParamSpec cannot drop ``self``, so a bound method's
    # arguments are not checked, but its result type is.
    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> CachedFunction[P, R_co]: ...
    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> Callable[..., R_co]: ...


def _make(func: Callable[..., Any], opts: dict[str, Any]) -> Any:
    """Build the wrapper of ``func`` (opts: mmap_cached's validated keywords)."""
    if isinstance(func, staticmethod | classmethod):
        return type(func)(_make(func.__func__, opts))
    if not callable(func):
        raise TypeError(f"mmap_cached decorates functions, not {func!r}")
    tags = opts["tags"]
    ident = identify(
        func, opts["version"], opts["hash_code"], opts["name"], opts["namespace"],
        None if tags is None else spec_id(tags),
    )  # fmt: skip
    build = keyfn_builder(func, opts, ident.table_id)
    keyfn = rebinding_keyfn(func, ident, build) if func_cells(func)[1] else build(ident.key_version)
    ttl, stale = opts["ttl"], opts["stale_ttl"]
    expire = None if ttl is None else ttl + (stale or 0.0)
    l2, l1_max, tier = opts["l2"], opts["max_entries"], None
    if l2 is not None:
        from ._l2 import EXTRA_L1_ENTRIES, Tier  # needs redis-py

        l1_max = None if l1_max is None else l1_max + EXTRA_L1_ENTRIES  # room for the guard's entries
    ft = FunctionTable(opts["path"], ident, l1_max, None if expire == math.inf else expire, opts["secret"])
    if l2 is not None:
        tier = Tier(l2, ft, errors=opts["l2_errors"], stale_ttl=stale, secret=opts["secret"])
    tagger = None if tags is None else Tagger(tags, lambda: os.path.dirname(ft.path))
    ft.tags = tagger
    slow = SlowPath(
        func, keyfn, ft, ttl=ttl, lock_timeout=opts["lock_timeout"], lease_ttl=opts["lease_ttl"], tier=tier,
        tagger=tagger,
    )  # fmt: skip
    wrapper = _wrapper(slow, inspect.iscoroutinefunction(func), stale is not None)
    functools.update_wrapper(wrapper, func)
    setattr(wrapper, MARKER, f"{ident.table_id}|{ident.key_version}")  # how a closure capturing it keys it
    wrapper.__cache_key__ = lambda *a, **kw: keyfn(a, kw)

    def refresh(*args: Any, **kwargs: Any) -> Any:
        return slow.refresh(args, kwargs)

    async def arefresh(*args: Any, **kwargs: Any) -> Any:
        return await slow.arefresh(args, kwargs)

    wrapper.refresh = arefresh if inspect.iscoroutinefunction(func) else refresh
    wrapper.uncached = func
    currsize = ft.currsize if tier is None else tier.currsize
    wrapper.cache_info = lambda: CacheInfo(slow.stats[0], slow.stats[1], opts["max_entries"], currsize())
    wrapper.cache_clear = slow.clear
    wrapper.invalidate_tags = lambda *names: invalidate_tags(*names, path=os.path.dirname(ft.path))
    params = {**opts, "table_id": ident.table_id, "key_version": ident.key_version, "code_hash": ident.code}
    wrapper.cache_parameters = lambda: {**params, "path": ft.path}
    return wrapper


def _wrapper(slow: SlowPath, is_async: bool, swr: bool) -> Any:
    """The hit path, written four times (sync/async x plain/stale_ttl) so that
    each is a few local lookups: key, one table read, one unpickle. With the
    compiled extension the plain sync one is a ``_native.Hit`` in front of
    ``wrapper``: the same hit without a Python frame, ``wrapper`` for the rest."""
    keyfn, stats, loads, ft, func = slow.keyfn, slow.stats, pickle.loads, slow.ft, slow.func
    begin, end, sleep = slow.begin, slow.end, time.sleep
    fresh_ns = slow.fresh_ns or 0
    now_ns = time.time_ns
    tagger = slow.tagger
    hit: Any = None  # the compiled hit path, if there is one (made below)

    def get(key: bytes, default: Any) -> Any:  # the first call opens the table, then rebinds
        nonlocal get
        t = ft.table()
        # A large result is unpickled straight from the map; a tagged one is checked first.
        get = t._get_view if tagger is None else reader(t, tagger)
        if hit is not None:
            hit.get = get
        return get(key, default)

    def get_entry(key: bytes) -> Any:
        nonlocal get_entry
        t = ft.table()
        get_entry = t.get_entry if tagger is None else entry_reader(t, tagger)
        return get_entry(key)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        k = keyfn(args, kwargs)
        data = get(k, MISS)
        if data is not MISS:
            try:
                value = loads(data)
            except Exception:  # unreadable now (a class renamed...): recompute
                pass
            else:
                stats[0] += 1
                return value
        # A miss. The flight (_stampede.run_sync) is driven here, not in a
        # helper, so the function runs one frame below this one: a cold
        # memoised recursion goes as deep as functools.lru_cache's.
        fl, fetch, saved = begin(k, args, kwargs)
        try:
            cmd = next(fl)
            while True:
                if cmd is COMPUTE or cmd is FETCH:
                    mark = computing.set(computing.get() | {k}) if cmd is COMPUTE else None
                    try:
                        got = func(*args, **kwargs) if cmd is COMPUTE else fetch()
                    except BaseException as exc:
                        cmd = fl.throw(exc)
                    else:
                        cmd = fl.send(got)
                    finally:
                        if mark is not None:
                            computing.reset(mark)
                else:
                    sleep(cmd)
                    cmd = next(fl)
        except StopIteration as stop:
            return end(k, stop.value, saved)

    async def awrapper(*args: Any, **kwargs: Any) -> Any:
        k = keyfn(args, kwargs)
        data = get(k, MISS)
        if data is not MISS:
            try:
                value = loads(data)
            except Exception:
                return await slow.amiss(k, args, kwargs)
            stats[0] += 1
            return value
        return await slow.amiss(k, args, kwargs)

    def swr_wrapper(*args: Any, **kwargs: Any) -> Any:
        k = keyfn(args, kwargs)
        e = get_entry(k)
        if e is not None:
            try:
                value = loads(e.value)
            except Exception:
                return slow.miss(k, args, kwargs)
            stats[0] += 1
            if now_ns() - e.mtime_ns >= fresh_ns:
                slow.revalidate(k, args, kwargs)
            return value
        return slow.miss(k, args, kwargs)

    async def aswr_wrapper(*args: Any, **kwargs: Any) -> Any:
        k = keyfn(args, kwargs)
        e = get_entry(k)
        if e is not None:
            try:
                value = loads(e.value)
            except Exception:
                return await slow.amiss(k, args, kwargs)
            stats[0] += 1
            if now_ns() - e.mtime_ns >= fresh_ns:
                slow.arevalidate(k, args, kwargs)
            return value
        return await slow.amiss(k, args, kwargs)

    if swr or is_async or _native.Hit is None:
        return ((wrapper, awrapper), (swr_wrapper, aswr_wrapper))[swr][is_async]
    hit = _native.Hit(keyfn, loads, stats, MISS, wrapper)
    return hit


@overload
def mmap_cached(func: Callable[P, R], /) -> CachedFunction[P, R]: ...
@overload
def mmap_cached(
    func: None = None,
    /,
    *,
    path: str | os.PathLike[str] | None = None,
    ttl: float | None = None,
    typed: bool = False,
    ignore: Iterable[str] = (),
    max_entries: int | None = None,
    key: KeyFunc | None = None,
    version: str | int | None = None,
    hash_code: bool | None = None,
    name: str | None = None,
    namespace: str | None = None,
    stale_ttl: float | None = None,
    lock_timeout: float | None = 60.0,
    lease_ttl: float = 10.0,
    secret: bytes | str | None = None,
    l2: str | Redis | RedisL2 | None = None,
    l2_errors: Literal["log", "raise"] = "log",
    tags: Iterable[str] | Callable[..., Iterable[str]] | None = None,
) -> Callable[[Callable[P, R]], CachedFunction[P, R]]: ...
def mmap_cached(
    func: Callable[..., Any] | None = None,
    /,
    *,
    path: str | os.PathLike[str] | None = None,
    ttl: float | None = None,
    typed: bool = False,
    ignore: Iterable[str] = (),
    max_entries: int | None = None,
    key: KeyFunc | None = None,
    version: str | int | None = None,
    hash_code: bool | None = None,
    name: str | None = None,
    namespace: str | None = None,
    stale_ttl: float | None = None,
    lock_timeout: float | None = 60.0,
    lease_ttl: float = 10.0,
    secret: bytes | str | None = None,
    l2: str | Redis | RedisL2 | None = None,
    l2_errors: Literal["log", "raise"] = "log",
    tags: Iterable[str] | Callable[..., Iterable[str]] | None = None,
) -> Any:
    """Memoise a function in a table shared by every process, kept across runs.

    ``path``: the directory for this function's table (default
    ``$MMCACHE_DIR`` or the per-user cache directory + ``/mmcache``).
    ``ttl``: seconds a result stays fresh (None: forever). ``stale_ttl``:
    seconds an expired result is still returned while one caller, in any
    process, recomputes it in the background (a daemon thread, or a task of
    the running loop for ``async def``; abandoned if the process exits).
    ``typed``: ``1`` / ``1.0`` / ``True`` and tuple / list are different keys. ``ignore``: argument names
    left out of the key. ``max_entries``: cap on stored results (least
    recently used go first). ``key``: a function of the call's arguments
    whose (encodable) result is the key, for arguments with no stable
    encoding.

    Identity (``_identity``): by default a function is its module, qualified
    name and the real path of its source file, so programs never share
    results by accident; ``name=`` (the whole identity) or ``namespace=``
    (in place of the path) share on purpose. Its results are dropped when its
    code changes (a hash of its bytecode, constants, names and defaults, not
    of its text: comments, docstrings and layout do not count; functions it
    calls and globals are not covered). ``version``: a fixed version instead
    of the code hash (a new value starts afresh); ``hash_code=False``: no
    code hash (``True``: both, and refuse a function without Python code).
    Captured closure values are in the key, read at each call.

    ``lock_timeout``: how long callers wait for another caller's
    computation of the same key before computing themselves (None: as long
    as it runs; 0: never wait). ``lease_ttl``: how soon a computer that died
    is given up on (it renews its claim every ``lease_ttl / 3`` seconds).
    ``secret``: sign every stored result with a keyed hash; a result without
    a valid signature (planted by someone who can write the cache directory
    but does not know the secret) is never unpickled.
    ``l2``: share results between hosts through Redis (a ``redis://`` URL, a
    ``redis.Redis`` or a ``mmcache.l2.RedisL2``): this host's table stays the
    near cache, a miss asks Redis before computing, a result computed on one
    host is a hit on the others, and ``refresh`` / ``cache_clear`` reach every
    host (``docs/TIERED.md``). ``l2_errors``: what a write (a result stored,
    ``refresh``, ``cache_clear``) does when Redis fails: ``"log"`` a warning
    or ``"raise"`` redis-py's error; reads always fall back to computing here.
    ``tags``: tag every result (a list of str), or each call's result (a
    function of the call's arguments returning a list of str);
    ``mmcache.invalidate_tags(tag, path=...)`` or ``f.invalidate_tags(tag)``
    then makes every result with that tag a miss, in O(1), for every function
    of that directory and every process (``_tagging``; not with ``l2=``).
    """
    opts = options(
        path=path, ttl=ttl, typed=typed, ignore=ignore, max_entries=max_entries, key=key, version=version,
        hash_code=hash_code, name=name, namespace=namespace, stale_ttl=stale_ttl, lock_timeout=lock_timeout,
        lease_ttl=lease_ttl, secret=secret, l2=l2, l2_errors=l2_errors, tags=tags,
    )  # fmt: skip
    if func is None:
        return lambda f: _make(f, opts)
    return _make(func, opts)
