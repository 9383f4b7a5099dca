"""The compiled fast path, when there is one (see ``_speedups.c``).

``Table()`` is a process's compiled view of one table (one per
``SharedTable``, bound to the current generation's maps, counting hits and
misses in C); ``Getter(handle, table)`` makes a handle's native ``get`` from
it (``get`` is the same for explicit arguments, for tests and the fuzzer),
``Putter(handle)`` its native ``put`` (``add=True``: ``add``,
``delete=True``: ``delete``; docs/NATIVE.md): the same probe, record checks,
expiry and LRU stamp as the pure path, on the same bytes, so native and
pure-Python processes share one table. Missing extension (nothing compiled
at install): one RuntimeWarning at import, then pure Python.
``MMCACHE_PURE_PYTHON=1`` forces pure Python without a warning. ``KeyFn``
and ``Hit`` are the decorator's key of its commonest call and its hit path
(``_decorator.c``). The extension keeps the GIL; free-threaded CPython is
not supported.
"""

from __future__ import annotations

import os
import sysconfig
import warnings
from collections.abc import Callable
from typing import Any

FALLBACK: object = object()


def _pure(*args: Any) -> Any:
    """Stands in for ``get`` without the extension: always "not answered"."""
    return FALLBACK


get: Callable[..., Any] = _pure
xxh3_64: Callable[..., int] | None = None
# Table() -> a table's compiled state: bind(idx, nslots, slot_size, key_size, rec_base, recency,
# views), unbind(), take_counts() -> (hits, misses), next_check (monotonic ns), bound
Table: Callable[[], Any] | None = None
# Getter(handle, table, view_min=0) -> the handle's compiled ``get`` (a callable without a Python frame)
Getter: Callable[..., Callable[..., Any]] | None = None
# Putter(handle, add=False, delete=False) -> the handle's compiled ``put`` (or
# ``add``, ``delete``): the common write, lock and all, in one call; the rest
# goes to ``handle._put_pure`` (``_add_pure``, ``_delete_pure``), the pure path
Putter: Callable[..., Callable[..., Any]] | None = None
# move_records(nm, slots, start, key_size, slot_size, views, dst, dst_lim, dst_seg, tail)
# -> (stop, tail, written, held): a compaction's record copy for a batch of slots (_compact.c)
move_records: Callable[..., tuple[int, int, int, bool]] | None = None
# build_records(...21 arguments, see _compact.c) -> (stop, tail, occ, hwm, live, expired, dele, held):
# a full rebuild's re-insert of a batch of slots (Builder._copy's loop)
build_records: Callable[..., tuple[int, int, int, int, int, int, int, bool]] | None = None
# KeyFn(prefix, n, typed, digest, fallback) -> a decorator's compiled key(args, kwargs) (_decorator.c)
KeyFn: Callable[..., Callable[[tuple[Any, ...], dict[str, Any]], bytes]] | None = None
# Hit(keyfn, loads, stats, miss, slow) -> the decorated function, its hit path compiled (_decorator.c)
Hit: Callable[..., Any] | None = None
REASON = "native"

if os.environ.get("MMCACHE_PURE_PYTHON", "") not in ("", "0"):
    REASON = "pure Python: MMCACHE_PURE_PYTHON is set"
elif sysconfig.get_config_var("Py_GIL_DISABLED"):
    # The C get relies on the GIL (its reads of the handle's state, the stats
    # list); free-threaded CPython is not supported: it runs pure Python.
    REASON = "pure Python: free-threaded CPython is not supported by the compiled get"
else:
    try:
        from . import _speedups
    except ImportError as e:
        REASON = f"pure Python: the compiled extension is missing ({e})"
        warnings.warn(
            f"mmcache runs without its compiled fast path ({e}); gets are several times slower. "
            "Reinstall where a C compiler and Python's headers exist, or set MMCACHE_PURE_PYTHON=1 "
            "to choose pure Python and silence this warning",
            RuntimeWarning,
            stacklevel=2,
        )
    else:
        get = _speedups.get
        Table = _speedups.Table
        Getter = _speedups.Getter
        Putter = _speedups.Putter
        move_records = _speedups.move_records
        build_records = _speedups.build_records
        xxh3_64 = _speedups.xxh3_64
        FALLBACK = _speedups.FALLBACK
        try:
            from . import _decorator
        except ImportError:  # pragma: no cover - built with _speedups (a test checks); else pure
            pass
        else:
            KeyFn, Hit = _decorator.KeyFn, _decorator.Hit

AVAILABLE = get is not _pure


def detach(*getters: object) -> None:
    """At a handle's close: its compiled gets drop their Table (every call
    then goes to the pure path, which raises ClosedCacheError)."""
    for g in getters:
        if Getter is not None and type(g) is Getter:
            g.detach()  # type: ignore[attr-defined]
