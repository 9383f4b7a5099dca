"""Canonical encoding of argument values for ``@mmap_cached`` keys.

Keys must match in every process and run whatever ``PYTHONHASHSEED`` is, so
nothing here uses ``hash()``, ``id()`` or set/dict iteration order.
:class:`ArgKeyer` binds the arguments to the signature (defaults applied:
``f(1)``, ``f(1, 1)``, ``f(y=1, x=1)`` agree for ``def f(x, y=1)``; ``**kwargs``
order-free; ``ignore`` names dropped) and hashes with ``xxh3_128`` a prefix
(encoding version, ``typed``, module, qualname, ``version``) plus each
argument's :func:`encode`: a type tag, then fixed-size or length-prefixed data.

* ``None``, ints of any size, floats (IEEE bits, one NaN), complex, str (UTF-8,
  lone surrogates kept), bytes-likes, range; tuple/list item by item; dict and
  set/frozenset as their encoded items sorted bytewise (``OrderedDict`` keeps
  its order); datetime/date/time/timedelta/timezone, Decimal, Fraction, UUID,
  pathlib paths.
* ``typed=False`` (default, as functools) keys by value: ``1``, ``1.0``,
  ``True``, ``Fraction(1)``, ``Decimal(1)`` agree, ``-0.0`` is ``0``, and so do
  tuple/list, bytes/bytearray, set/frozenset, a stateless builtin subclass
  (namedtuple) and its base. ``typed=True`` keeps them all apart.
* Enum members: class ``module:qualname`` + value. Dataclasses: class + the
  ``compare=True`` fields in order.
* numpy (imported only for objects whose type comes from numpy): arrays as
  dtype, shape and the ``xxh3_128`` of their C-order bytes (object arrays item
  by item); scalars by value (``typed=False``) or dtype + bytes (x87
  ``longdouble``'s padding left out: ``_npbytes``).
* Functions and classes by ``module:qualname``, only if that name imports back
  to the very object (lambdas, local definitions: ``TypeError``); bound
  methods as ``__self__`` + name.
* ``obj.__mmcache_key__()`` if the class defines it (the hook for methods'
  ``self`` and custom objects): class name + its return value, encoded.
* Anything else as pickle reduces it (``copyreg``, ``__reduce_ex__(4)``): the
  callable by name, then args and state. ``TypeError`` if it cannot be reduced
  (locks, sockets), if two reductions differ, for open files, and for nesting
  deeper than 64 levels (cycles).

Caveats: a reduction listing a set in iteration order gives keys that vary
between runs (misses, never wrong hits); C-level state of a builtin subclass
(``defaultdict.default_factory``) is not seen.
"""

from __future__ import annotations

import copyreg
import dataclasses
import datetime as _dt
import enum
import io
import struct
import sys
import types
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from decimal import Decimal
from fractions import Fraction
from pathlib import PosixPath, PurePath, PurePosixPath, PureWindowsPath, WindowsPath
from typing import Any

from xxhash import xxh3_128_digest as _digest

from ._npbytes import value_bytes
from ._scalars import (
    _DTM,
    _HDR,
    _TIME,
    _clsname,
    _e_complex,
    _e_decimal,
    _e_float_t,
    _e_float_u,
    _e_int,
    _e_path,
    _e_td,
    _fail,
    _rational_u,
    _sb,
)

__all__ = ["ENCODING_VERSION", "encode"]

#: Bumped whenever an encoding changes, so persistent caches never mix formats.
ENCODING_VERSION = 1
_MAX_DEPTH = 64
_MISSING: Any = object()
_Enc = Callable[[Any, bool, int], bytes]


def _e_memoryview(obj: memoryview, typed: bool, depth: int) -> bytes:
    try:
        raw, fmt, shape = obj.tobytes(), obj.format, obj.shape
    except ValueError as exc:  # released view
        _fail(obj, str(exc))
    if not typed and fmt == "B" and obj.ndim == 1:
        return _HDR(b"b", len(raw)) + raw
    return b"m" + _sb(fmt) + _e_seq(shape or (), True, depth) + _HDR(b"b", len(raw)) + raw


def _check_depth(obj: object, depth: int) -> None:
    if depth >= _MAX_DEPTH:
        _fail(obj, f"nested more than {_MAX_DEPTH} levels deep (or recursive)")


def _items(obj: Iterable[Any], typed: bool, depth: int) -> list[bytes]:
    _check_depth(obj, depth)
    return [_enc(x, typed, depth + 1) for x in obj]


def _e_seq(obj: tuple[Any, ...] | list[Any], typed: bool, depth: int) -> bytes:
    tag = b"[" if typed and isinstance(obj, list) else b"("
    return _HDR(tag, len(obj)) + b"".join(_items(obj, typed, depth))


def _e_dict(obj: dict[Any, Any], typed: bool, depth: int) -> bytes:
    if isinstance(obj, OrderedDict):
        return _HDR(b"O", len(obj)) + b"".join(_items(obj.items(), typed, depth))
    _check_depth(obj, depth)
    d1 = depth + 1
    items = sorted([_enc(k, typed, d1) + _enc(v, typed, d1) for k, v in obj.items()])
    return _HDR(b"{", len(items)) + b"".join(items)


def _e_set(obj: set[Any] | frozenset[Any], typed: bool, depth: int) -> bytes:
    tag = b">" if typed and isinstance(obj, frozenset) else b"<"
    return _HDR(tag, len(obj)) + b"".join(sorted(_items(obj, typed, depth)))


def _global(obj: Any) -> bytes:
    """A function/class by ``module:qualname``, refused unless that name imports back to it."""
    objclass = getattr(obj, "__objclass__", None)  # str.upper and other method descriptors
    module = getattr(obj, "__module__", None) or getattr(objclass, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        _fail(obj, "it has no __module__/__qualname__ to refer to it by")
    if "<" in qualname:
        _fail(obj, f"{qualname} is a lambda or a local definition, not importable by name")
    target: Any = sys.modules.get(module)
    for part in qualname.split("."):
        target = getattr(target, part, None)
    for _ in range(8):  # accept a functools.wraps wrapper of the object
        if target is obj or target is None:
            break
        target = getattr(target, "__wrapped__", None)
    if target is not obj:
        _fail(obj, f"{module}.{qualname} does not import back to it")
    return b"g" + _sb(module) + _sb(qualname)


_ROUTINES: tuple[type, ...] = (types.FunctionType, types.BuiltinFunctionType, types.MethodType)
_ROUTINES += (types.MethodDescriptorType, types.WrapperDescriptorType, types.MethodWrapperType)
_ROUTINES += (types.ClassMethodDescriptorType,)


def _reduce(obj: Any) -> tuple[Any, ...] | str:
    """``obj`` reduced as pickle would, iterators of items made lists."""
    reducer = copyreg.dispatch_table.get(type(obj))
    rv = reducer(obj) if reducer is not None else obj.__reduce_ex__(4)
    if not isinstance(rv, tuple) or isinstance(rv, str):
        return rv
    func, args, state, listitems, dictitems, setter = (*rv, None, None, None, None)[:6]
    listitems = None if listitems is None else list(listitems)
    dictitems = None if dictitems is None else dict(dictitems)
    return (len(rv), func, args, state, listitems, dictitems, setter)


def _same(a: Any, b: Any) -> bool:
    """Two reductions of one object agree: same objects, or equal fresh copies."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if isinstance(a, float) and a != a:
        return bool(b != b)
    try:
        return bool(a == b)
    except Exception:
        return False


def _e_reduce(obj: Any, typed: bool, depth: int) -> bytes:
    """What pickle would store: the callable by name, then args, state, items.

    The object is reduced twice and refused unless both reductions agree.
    """
    if isinstance(obj, io.IOBase):
        _fail(obj, "open files and streams have no stable value")
    try:
        rv, again = _reduce(obj), _reduce(obj)
        agree = _same(rv, again)
    except Exception as exc:
        _fail(obj, f"it cannot be reduced as pickle would ({exc})")
    if not agree:
        _fail(obj, "two reductions of it differ (not deterministic)")
    if isinstance(rv, str):
        return b"g" + _sb(str(getattr(obj, "__module__", None) or "")) + _sb(rv)
    if not isinstance(rv, tuple) or not 2 <= rv[0] <= 6:
        _fail(obj, "its __reduce_ex__ returned an invalid value")
    return b"R" + b"".join(_items(rv[1:], typed, depth))


def _descr(dt: Any) -> bytes:
    return _sb(str(dt.str) if dt.names is None and dt.subdtype is None else repr(dt.descr))


def _e_ndarray(obj: Any, typed: bool, depth: int) -> bytes:
    head = b"A" + _descr(obj.dtype) + _e_seq(obj.shape, True, depth)
    if obj.dtype.hasobject:
        return head + _e_seq(obj.ravel().tolist(), typed, depth)
    return head + b"=" + _digest(value_bytes(obj))


def _e_npscalar(obj: Any, typed: bool, depth: int) -> bytes:
    dt = obj.dtype
    exact = dt.kind in "biuSU" or dt.itemsize <= {"f": 8, "c": 16}.get(dt.kind, 0)
    if exact and not typed:  # .item() is a Python value equal to obj
        return _enc(obj.item(), typed, depth + 1)
    raw: bytes = value_bytes(obj)
    return b"n" + _descr(dt) + _HDR(b"b", len(raw)) + raw


def _e_dtype(obj: Any, typed: bool, depth: int) -> bytes:
    return b"Z" + _descr(obj)


def _e_numpy(obj: Any, typed: bool, depth: int) -> bytes | None:
    """A numpy array, scalar or dtype (its encoder registered for next time),
    or None: ndarray subclasses, Generator, ... are reduced like any object."""
    np, cls = sys.modules.get("numpy"), type(obj)
    fn: _Enc
    if np is None or str(getattr(cls, "__module__", "")).partition(".")[0] != "numpy":
        return None
    if cls is np.ndarray:
        fn = _e_ndarray
    elif isinstance(obj, np.generic):
        fn = _e_npscalar
    elif isinstance(obj, np.dtype):
        fn = _e_dtype
    else:
        return None
    _UNTYPED[cls] = _TYPED[cls] = fn
    return fn(obj, typed, depth)


def _stateless(obj: object) -> bool:
    """True if a builtin subclass instance carries no Python-level state of its own."""
    if getattr(obj, "__dict__", None):
        return False
    return not any(c.__dict__.get("__slots__") for c in type(obj).__mro__)


_BASES: tuple[tuple[type | tuple[type, ...], _Enc], ...] = (
    (int, lambda o, t, d: _e_int(int.__int__(o))),
    (float, lambda o, t, d: (_e_float_t if t else _e_float_u)(float.__float__(o))),
    (complex, lambda o, t, d: _e_complex(complex.__complex__(o), t, d)),
    (str, lambda o, t, d: _sb(str.__str__(o))),
    (bytes, lambda o, t, d: _HDR(b"b", len(o)) + bytes.__bytes__(o)),
    (bytearray, lambda o, t, d: _HDR(b"a" if t else b"b", len(o)) + bytes(o)),
    ((tuple, list), _e_seq),
    (dict, _e_dict),
    ((set, frozenset), _e_set),
)


def _e_enum(obj: Any, typed: bool, depth: int) -> bytes | None:
    if not isinstance(obj, enum.Enum):
        return None
    return b"E" + _clsname(type(obj)) + _enc(obj.value, typed, depth + 1)


def _e_dataclass(obj: Any, typed: bool, depth: int) -> bytes | None:
    if not hasattr(type(obj), "__dataclass_fields__"):
        return None
    names = [f.name for f in dataclasses.fields(obj) if f.compare]
    body = [_sb(n) + _enc(getattr(obj, n), typed, depth + 1) for n in names]
    return _HDR(b"@", len(names)) + _clsname(type(obj)) + b"".join(body)


def _e_routine(obj: Any, typed: bool, depth: int) -> bytes | None:
    """A function by name; a bound method as its ``__self__`` and name."""
    if not isinstance(obj, _ROUTINES):
        return None
    owner = getattr(obj, "__self__", None)
    if owner is None or isinstance(owner, types.ModuleType):
        return _global(obj)
    return b"M" + _enc(owner, typed, depth + 1) + _sb(str(getattr(obj, "__name__", "")))


def _e_builtin_subclass(obj: Any, typed: bool, depth: int) -> bytes | None:
    """A stateless subclass of a builtin as its base (``typed``: with its class name)."""
    for base, enc in _BASES:
        if isinstance(obj, base) and _stateless(obj):
            body = enc(obj, typed, depth)
            return b"K" + _clsname(type(obj)) + body if typed else body
    return None


# What _enc_slow tries, in order, before reducing as pickle would: each
# encoder returns None for a value that is not its kind.
_SLOW: tuple[Callable[[Any, bool, int], bytes | None], ...] = (
    _e_numpy,
    _e_enum,
    _e_dataclass,
    lambda o, t, d: _global(o) if isinstance(o, type) else None,  # a class
    _e_routine,
    lambda o, t, d: b"o" + _sb(o.__name__) if isinstance(o, types.ModuleType) else None,
    lambda o, t, d: _e_path(o, t, d) if isinstance(o, PurePath) else None,
    _e_builtin_subclass,
)


def _enc_slow(obj: Any, typed: bool, depth: int) -> bytes:
    """Everything whose exact type is not in the dispatch tables."""
    _check_depth(obj, depth)
    cls = type(obj)
    hook = getattr(cls, "__mmcache_key__", None)
    if hook is not None:  # first, and here: the hook keys methods' self on every call
        return b"h" + _clsname(cls) + _enc(hook(obj), typed, depth + 1)
    for encoder in _SLOW:
        out = encoder(obj, typed, depth)
        if out is not None:
            return out
    return _e_reduce(obj, typed, depth)


_COMMON: dict[type, _Enc] = {
    type(None): lambda o, t, d: b"N",
    int: _e_int,
    str: lambda o, t, d: _sb(o),
    bytes: lambda o, t, d: _HDR(b"b", len(o)) + o,
    bytearray: lambda o, t, d: _HDR(b"a" if t else b"b", len(o)) + bytes(o),
    memoryview: _e_memoryview,
    tuple: _e_seq,
    list: _e_seq,
    dict: _e_dict,
    OrderedDict: _e_dict,
    set: _e_set,
    frozenset: _e_set,
    range: lambda o, t, d: b"r" + _e_int(o.start) + _e_int(o.stop) + _e_int(o.step),
    complex: _e_complex,
    Fraction: lambda o, t, d: (
        b"q" + _e_int(o.numerator) + _e_int(o.denominator) if t else _rational_u(o.numerator, o.denominator)
    ),
    Decimal: _e_decimal,
    _dt.datetime: lambda o, t, d: (
        _DTM(b"D", o.year, o.month, o.day, o.hour, o.minute, o.second, o.microsecond, o.fold)
        + _enc(o.tzinfo, t, d + 1)
    ),
    _dt.date: lambda o, t, d: struct.pack("<cHBB", b"y", o.year, o.month, o.day),
    _dt.time: lambda o, t, d: (
        _TIME(b"t", o.hour, o.minute, o.second, o.microsecond, o.fold) + _enc(o.tzinfo, t, d + 1)
    ),
    _dt.timedelta: _e_td,
    _dt.timezone: lambda o, t, d: b"z" + _e_td(o.utcoffset(None)) + _sb(o.tzname(None)),
    uuid.UUID: lambda o, t, d: b"u" + o.bytes,
    PurePosixPath: _e_path,
    PureWindowsPath: _e_path,
    PosixPath: _e_path,
    WindowsPath: _e_path,
}
_UNTYPED: dict[type, _Enc] = {**_COMMON, bool: _e_int, float: _e_float_u}
_TYPED: dict[type, _Enc] = {**_COMMON, bool: lambda o, t, d: b"T" if o else b"F"}
_TYPED[float] = _e_float_t
_DISPATCH = (_UNTYPED, _TYPED)


def _enc(obj: Any, typed: bool, depth: int) -> bytes:
    fn = _DISPATCH[typed].get(type(obj))
    return fn(obj, typed, depth) if fn is not None else _enc_slow(obj, typed, depth)


def encode(obj: Any, *, typed: bool = False) -> bytes:
    """Canonical bytes for ``obj``, the same in every process (rules: module docstring).

    Equal values give equal bytes, different values different bytes; raises
    ``TypeError`` for a value with no stable form.
    """
    return _enc(obj, bool(typed), 0)
