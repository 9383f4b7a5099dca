"""The key function of a cached function: arguments -> 16-byte key.

``keyfn_builder`` makes one for a version of the keys (``ArgKeyer``, or the
user's ``key=``); ``rebinding_keyfn`` wraps it for a closure, whose captured
values are part of the key and are read again at each call.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from xxhash import xxh3_128_digest

from ._argkey import ArgKeyer, encode
from ._identity import Identity, cell_value, closure_version, func_cells

__all__ = ["KeyFn", "keyfn_builder", "rebinding_keyfn"]

KeyFn = Callable[[tuple[Any, ...], dict[str, Any]], bytes]
KeyFunc = Callable[..., Any]


def _custom_keyfn(keyfunc: KeyFunc, namespace: bytes, typed: bool) -> Callable[..., bytes]:
    """``key=``: the user's function maps the arguments to any encodable value."""
    prefix = b"mmcache-key\0" + namespace + b"\0"
    what = getattr(keyfunc, "__qualname__", repr(keyfunc))

    def keyfn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        value = keyfunc(*args, **kwargs)
        try:
            return xxh3_128_digest(prefix + encode(value, typed=typed))
        except TypeError as exc:
            raise TypeError(f"mmap_cached: key={what} returned a value with no stable key: {exc}") from None

    return keyfn


def keyfn_builder(func: Callable[..., Any], opts: dict[str, Any], table_id: str) -> Callable[[str], KeyFn]:
    """``version -> keyfn``: the key function for one version of the keys."""

    def build(version: str) -> KeyFn:
        keyer = ArgKeyer(func, typed=opts["typed"], ignore=opts["ignore"], version=version, name=table_id)
        if opts["key"] is None:
            return keyer.key
        return _custom_keyfn(opts["key"], keyer.namespace, opts["typed"])

    return build


def _unchanged(cells: tuple[Any, ...], values: list[Any]) -> Callable[[], bool]:
    """A check, as cheap as it can be made, that each cell still holds its
    value (the very object); ``ValueError`` if a cell is empty."""
    if len(cells) == 1:
        (c0,), (v0,) = cells, values
        return lambda: c0.cell_contents is v0
    if len(cells) == 2:
        (c0, c1), (v0, v1) = cells, values
        return lambda: c0.cell_contents is v0 and c1.cell_contents is v1
    if len(cells) == 3:
        (c0, c1, c2), (v0, v1, v2) = cells, values
        return lambda: c0.cell_contents is v0 and c1.cell_contents is v1 and c2.cell_contents is v2
    contents = operator.attrgetter("cell_contents")
    return lambda: all(map(operator.is_, map(contents, cells), values))


def rebinding_keyfn(func: Callable[..., Any], ident: Identity, build: Callable[[str], KeyFn]) -> KeyFn:
    """For a closure: keys under the values its cells hold *now*. Each call
    checks that the cells hold the objects the current key function was made
    for, and makes another on a change: rebinding a captured variable never
    gives the old value's results. (A captured object mutated in place is
    not seen: as with globals.)"""
    names, cells = func_cells(func)
    made: dict[str, KeyFn] = {}

    def make() -> tuple[Callable[[], bool], list[Any], KeyFn]:
        values = [cell_value(c) for c in cells]
        version = closure_version(ident.tag, names, values)
        if version not in made:
            if len(made) >= 64:
                made.clear()
            made[version] = build(version)
        return _unchanged(cells, values), values, made[version]

    current = make()

    def keyfn(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        nonlocal current
        unchanged, values, fn = current
        try:
            if unchanged():
                return fn(args, kwargs)
        except ValueError:  # an empty cell (a local function's own name, before it is bound)
            if all(cell_value(c) is v for c, v in zip(cells, values, strict=True)):
                return fn(args, kwargs)
        current = make()  # one tuple: swapped atomically
        return current[2](args, kwargs)

    return keyfn
