"""Fixed-form encodings of scalar values for ``@mmap_cached`` keys.

The leaves of :mod:`._encode`'s canonical encoding (its docstring has the
rules): ints of any size, floats (IEEE bits, one NaN), rationals, Decimal,
complex, str (UTF-8, lone surrogates kept), timedeltas and paths, plus the
tagged headers every encoding starts with. Nothing here recurses into
other values, so the container and object encoders above import these
and not the other way round. Every byte here is pinned by
``tests/faces/test_argkey_pinned.py``.
"""

from __future__ import annotations

import datetime as _dt
import struct
from decimal import Decimal
from pathlib import PurePath, PureWindowsPath
from typing import NoReturn

_HDR = struct.Struct("<cQ").pack  # tag + length or count
_INT = struct.Struct("<cq").pack
_FLT = struct.Struct("<cd").pack
_DTM = struct.Struct("<cHBBBBBIB").pack
_TIME = struct.Struct("<cBBBIB").pack
_NAN = b"f" + bytes.fromhex("000000000000f87f")  # every NaN, whatever its sign/payload


class _Unencodable(TypeError):
    """A value has no stable encoding."""


def _fail(obj: object, why: str) -> NoReturn:
    cls = type(obj)
    raise _Unencodable(f"a {cls.__module__}.{cls.__qualname__} object has no stable key: {why}")


def _clsname(cls: type) -> bytes:
    return _sb(f"{cls.__module__}:{cls.__qualname__}")


def _sb(s: str) -> bytes:
    try:
        b = s.encode()
    except UnicodeEncodeError:
        b = s.encode("utf-8", "surrogatepass")
    return _HDR(b"s", len(b)) + b


def _e_int(obj: int, typed: bool = False, depth: int = 0) -> bytes:
    try:
        return _INT(b"i", obj)
    except struct.error:  # beyond 64 bits
        raw = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
        return _HDR(b"I", len(raw)) + raw


def _e_float_t(obj: float, typed: bool = True, depth: int = 0) -> bytes:
    return _FLT(b"f", obj) if obj == obj else _NAN


def _e_float_u(obj: float, typed: bool = False, depth: int = 0) -> bytes:
    if obj.is_integer():
        return _e_int(int(obj))
    return _FLT(b"f", obj) if obj == obj else _NAN


def _rational_u(num: int, den: int) -> bytes:
    """Untyped num/den (lowest terms): encoded as the int or float equal to it, if any."""
    if den == 1:
        return _e_int(num)
    try:
        f = num / den
    except OverflowError:
        f = 0.0
    if f.as_integer_ratio() == (num, den):
        return _FLT(b"f", f)
    return b"q" + _e_int(num) + _e_int(den)


def _e_decimal(obj: Decimal, typed: bool, depth: int) -> bytes:
    if typed:
        return b"d" + _sb(str(obj))
    if not obj.is_finite():
        return _NAN if obj.is_nan() else _FLT(b"f", float(obj))
    return _rational_u(*obj.as_integer_ratio())


def _e_complex(obj: complex, typed: bool, depth: int) -> bytes:
    if typed:
        return b"c" + _e_float_t(obj.real) + _e_float_t(obj.imag)
    if obj.imag == 0:
        return _e_float_u(obj.real)
    return b"c" + _e_float_t(obj.real + 0.0) + _e_float_t(obj.imag + 0.0)  # +0.0: no -0.0


def _e_path(obj: PurePath, typed: bool, depth: int) -> bytes:
    if typed:
        return b"P" + _clsname(type(obj)) + _sb(str(obj))
    return (b"pw" if isinstance(obj, PureWindowsPath) else b"px") + _sb(str(obj))


def _e_td(o: _dt.timedelta, t: bool = False, d: int = 0) -> bytes:
    return struct.pack("<ciii", b"x", o.days, o.seconds, o.microseconds)
