"""What names a cached function across processes and runs, and what invalidates it.

A persistent cache outlives the code that filled it, so "the same function"
must be decided by something stabler than object identity:

* ``module:qualname`` names the table and goes into every key (``ArgKeyer``).
* ``__main__`` is not one module: two scripts may both define ``main.f``. A
  function of ``__main__`` is salted with the script's absolute path, or, with
  no script file (``python -c``, a REPL, a notebook), with its code hash.
* Local functions share a qualname between closures (``make.<locals>.f`` for
  every ``make(n)``): the values the closure captured at decoration time are
  encoded into the keys, so two closures never read each other's entries
  (captured local functions and classes by their definition). Values with
  no stable encoding (locks, clients) are left out: if such a value decides
  the result, tell the closures apart with ``version=`` or ``key=``.
* ``version=`` (user's) and, with ``hash_code=True``, a hash of the code are
  the *invalidation tag*: a table keeps entries of one tag, and opening it
  with another tag empties it (see ``_table``).
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xxhash import xxh3_64

from ._argkey import encode

__all__ = ["Identity", "code_hash", "identify"]


@dataclass(frozen=True)
class Identity:
    """How one decorated function is named (see the module docstring)."""

    table_id: str  # names the table file: "module:qualname" (+ "@" salt for __main__)
    key_version: str | int | None  # passed to ArgKeyer as version=: every salt and tag
    tag: str  # the invalidation tag stored in the table ("" if none)


def code_hash(func: Callable[..., Any]) -> str:
    """16 hex digits over the function's code: bytecode, constants, names and
    nested code objects, but not its file name or line numbers (moving a
    function does not invalidate it; editing its body, or a new Python, does)."""
    code = getattr(func, "__code__", None)
    if not isinstance(code, types.CodeType):
        raise TypeError(f"mmap_cached: hash_code=True needs a Python function, not {func!r}")
    h = xxh3_64()
    _feed(h, code)
    return h.hexdigest()


def _feed(h: Any, code: types.CodeType) -> None:
    h.update(code.co_code)
    for part in (code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars):
        h.update(encode(part))
    h.update(encode((code.co_argcount, code.co_kwonlyargcount, code.co_posonlyargcount, code.co_flags)))
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            h.update(b"code")
            _feed(h, const)
            continue
        try:
            h.update(encode(const, typed=True))  # frozensets sorted, not in hash order
        except TypeError:
            h.update(repr(const).encode("utf-8", "surrogatepass"))


def _captured(value: Any, depth: int) -> bytes:
    """A captured value's encoding; local functions and classes, which have no
    importable name, by their definition (code and captures; qualified name)."""
    try:
        return encode(value, typed=True)
    except TypeError:
        if isinstance(value, types.FunctionType) and depth < 8:
            return b"F" + code_hash(value).encode() + (_closure_salt(value, depth + 1) or "").encode()
        if isinstance(value, type):
            return b"C" + f"{value.__module__}:{value.__qualname__}".encode("utf-8", "surrogatepass")
        raise


def _closure_salt(func: Callable[..., Any], depth: int = 0) -> str | None:
    """A digest of the values a closure captured, or None without a closure.

    Empty cells (a recursive local function's own name, ``__class__`` of a
    method using ``super()``) are skipped, and so are values with no stable
    encoding (locks, clients, connections: resources rather than inputs).
    """
    cells = getattr(func, "__closure__", None)
    if not cells:
        return None
    names = func.__code__.co_freevars
    parts = []
    for name, cell in zip(names, cells, strict=False):
        if name == "__class__":
            continue
        try:
            value = cell.cell_contents
        except ValueError:  # empty cell
            continue
        try:
            parts.append((name, _captured(value, depth)))
        except TypeError:
            parts.append((name, b"?"))  # a resource (lock, client, ...): not part of the key
    return xxh3_64(encode(parts)).hexdigest() if parts else None


def _main_salt(func: Callable[..., Any]) -> str | None:
    """For a function of ``__main__``: its script's path, else its code hash."""
    if getattr(func, "__module__", None) != "__main__":
        return None
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if isinstance(main_file, str) and main_file and not main_file.startswith("<"):  # not "<stdin>"
        return "file=" + os.path.abspath(main_file)
    return "code=" + code_hash(func)


def identify(func: Callable[..., Any], version: str | int | None, hash_code: bool) -> Identity:
    """Name ``func`` for the table and its keys (rules: module docstring)."""
    if isinstance(version, bool) or not isinstance(version, str | int | None):
        raise TypeError(f"mmap_cached: version must be a str or an int, not {version!r}")
    module = getattr(func, "__module__", None) or "?"
    qualname = str(getattr(func, "__qualname__", None) or getattr(func, "__name__", "?"))
    main = _main_salt(func)
    table_id = f"{module}:{qualname}" + ("" if main is None else f"@{main}")
    tags = [] if version is None else [f"v={version}"]
    if hash_code:
        tags.append("code=" + code_hash(func))
    closure = _closure_salt(func)
    if "<lambda>" in qualname and version is None and not hash_code and not str(main).startswith("code="):
        raise TypeError("mmap_cached: lambdas all share one name; use a def, or pass version=/hash_code=True")
    salts = tags + [s for s in (main, None if closure is None else f"closure={closure}") if s]
    key_version = version if salts == tags and not hash_code else "|".join(salts)
    return Identity(table_id, key_version, "|".join(tags))
