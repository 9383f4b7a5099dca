"""What names a cached function across processes and runs, and what invalidates it.

The default cache directory is shared by every program of a user, so a
function's name must be unique on the machine, and stabler than object
identity (a persistent cache outlives the code that filled it):

* The *table id* names the table file and goes into every key:
  ``module:qualname@file=<real path of the source file>``, the path resolved
  (a symlinked checkout and the real one agree). A function of ``__main__``
  takes the script's real path (and is ``__main__`` in a child started by
  multiprocessing's spawn too, where the script is ``__mp_main__``); with no
  source file (``python -c``, a REPL, a notebook) its code hash stands in.
  Two projects that both have ``utils.compute`` thus get two tables.
* A lambda has no name of its own: its code hash joins its table id, so two
  lambdas of one module never share (and editing one starts a new table).
* Sharing is explicit: ``name=`` is the whole table id (every program using
  that name shares, whatever its module and path); ``namespace=`` replaces
  the path (``module:qualname@ns=<namespace>``: the same module of two
  checkouts, or of two releases deployed side by side, shares).
* The *tag* (``KEYSPACE``, ``version=``, by default the code hash of
  ``_codehash``, and which ``tags=`` it gives) goes into every key, so an
  edited function never reads its old body's results; the table records the
  versions using it and empties itself of abandoned ones (``_versions``), so
  they do not fill the disk.
* Captured closure values are keyed too, but not in the tag (closures of one
  factory share a table): ``closure_salt`` encodes them; ``cached`` re-reads
  the cells on each call, so rebinding a captured variable gives fresh keys.

``KEYSPACE`` is bumped whenever the meaning of a key changes, so no entry
written under an older scheme is ever served (old tables are left unused;
``mmcache prune-decorator-tables`` removes them).
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from xxhash import xxh3_64

from ._codehash import code_hash, hashable_code
from ._encode import encode

__all__ = ["EMPTY", "KEYSPACE", "MARKER", "Identity", "cell_value", "closure_version", "code_hash"]
__all__ += ["func_cells", "identify", "source_file"]

KEYSPACE = "k2"  # k1: module:qualname keys, hash_code opt-in (no marker in the tag)
EMPTY: Any = object()  # an empty closure cell (a local function's own name before it is bound)
_MAIN = ("__main__", "__mp_main__")
MARKER = "__mmcache_id__"  # set on each wrapper: a captured cached function is keyed by its id


@dataclass(frozen=True)
class Identity:
    """How one decorated function is named (see the module docstring)."""

    table_id: str  # names the table file and prefixes every key
    key_version: str  # the tag, plus the closure's salt at decoration
    tag: str  # stored in the table: KEYSPACE, version= and code hash
    code: str | None  # the code hash, if hashed


def source_file(func: Callable[..., Any]) -> str | None:
    """The real path of the file ``func`` was defined in (``__main__``: the
    script), or None if it has none (``<stdin>``, ``<string>``, notebooks)
    or is no Python function (a builtin, a ``functools.partial``)."""
    funcs = hashable_code(func)
    if not funcs:
        return None
    name: Any = funcs[0].__code__.co_filename
    if funcs[0].__module__ in _MAIN:  # the script (an __mp_main__ is being run by runpy)
        name = getattr(sys.modules.get(funcs[0].__module__), "__file__", None)
    if isinstance(name, str) and name and not name.startswith("<"):
        return os.path.realpath(name)
    return None


def _captured(value: Any, depth: int) -> bytes:
    """A captured value's encoding; cached functions by their identity, local
    functions and classes (no importable name) by their definition."""
    mark = getattr(value, MARKER, None) if callable(value) else None
    if isinstance(mark, str):
        return b"M" + mark.encode("utf-8", "surrogatepass")
    try:
        return encode(value, typed=True)
    except TypeError:
        if isinstance(value, types.FunctionType) and depth < 8:
            inner = closure_salt(value.__code__.co_freevars, _cells(value), depth + 1)
            return b"F" + (code_hash(value) or "").encode() + (inner or "").encode()
        if isinstance(value, type):
            return b"C" + f"{value.__module__}:{value.__qualname__}".encode("utf-8", "surrogatepass")
        raise


def _cells(func: Callable[..., Any]) -> list[Any]:
    """The values in ``func``'s closure cells (EMPTY for an empty cell)."""
    return [cell_value(c) for c in getattr(func, "__closure__", None) or ()]


def closure_salt(names: Sequence[str], values: Sequence[Any], depth: int = 0) -> str | None:
    """A digest of the values a closure captured, or None if there are none.

    Empty cells and ``__class__`` (of a method using ``super()``) are
    skipped, and so are values with no stable encoding (locks, clients,
    connections: resources rather than inputs).
    """
    parts = []
    for name, value in zip(names, values, strict=False):
        if name == "__class__" or value is EMPTY:
            continue
        try:
            parts.append((name, _captured(value, depth)))
        except TypeError:
            parts.append((name, b"?"))  # a resource (lock, client, ...): not part of the key
    return xxh3_64(encode(parts)).hexdigest() if parts else None


def func_cells(func: Callable[..., Any]) -> tuple[tuple[str, ...], tuple[types.CellType, ...]]:
    """``func``'s free variable names and cells (empty for a non-closure)."""
    cells = getattr(func, "__closure__", None)
    code = getattr(func, "__code__", None)
    if not cells or not isinstance(code, types.CodeType):
        return (), ()
    return code.co_freevars, tuple(cells)


def _check(what: str, value: str | None) -> str | None:
    if value is not None and (not isinstance(value, str) or not value or "\0" in value):
        raise TypeError(f"mmap_cached: {what} must be a non-empty str, not {value!r}")
    return value


def identify(
    func: Callable[..., Any],
    version: str | int | None,
    hash_code: bool | None,
    name: str | None = None,
    namespace: str | None = None,
    tags: str | None = None,
) -> Identity:
    """Name ``func`` for its table and keys (rules: module docstring).

    ``hash_code``: True hashes the code (a function without Python code is
    refused), None (the default) hashes it unless ``version=`` is given.
    ``tags``: what of ``tags=`` the keys depend on (``_tagging.spec_id``).
    """
    if isinstance(version, bool) or not isinstance(version, str | int | None):
        raise TypeError(f"mmap_cached: version must be a str or an int, not {version!r}")
    name, namespace = _check("name", name), _check("namespace", namespace)
    if name is not None and namespace is not None:
        raise ValueError("mmap_cached: give name= (the whole identity) or namespace=, not both")
    module, qualname = _names(func, name)
    code = code_hash(func)
    if hash_code and code is None:
        raise TypeError(f"mmap_cached: hash_code=True needs a Python function, not {func!r}")
    table_id = name if name is not None else f"{module}:{qualname}@{_where(func, qualname, namespace, code)}"
    hashed = code if (hash_code or (hash_code is None and version is None)) else None
    tag = _tag(version, hashed, tags)
    names, cells = func_cells(func)
    return Identity(table_id, closure_version(tag, names, [cell_value(c) for c in cells]), tag, hashed)


def _tag(version: str | int | None, hashed: str | None, tags: str | None) -> str:
    """What the keys' results depend on: the key scheme, ``version=``, the code hash, ``tags=``."""
    parts = [KEYSPACE] + ([] if version is None else [f"v={version}"])
    parts += [f"code={hashed}"] if hashed else []
    return "|".join(parts + ([] if tags is None else [f"tags={tags}"]))


def _names(func: Callable[..., Any], name: str | None) -> tuple[str, str]:
    """``func``'s module (``__main__`` for a spawned child's ``__mp_main__``) and qualified name."""
    module, qualname = getattr(func, "__module__", None), getattr(func, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):  # a partial, a callable object
        if name is None:
            raise TypeError(f"mmap_cached: {func!r} has no name of its own to key it by; pass name=")
        module, qualname = str(module), str(qualname)
    if module in _MAIN:  # a spawned multiprocessing child imports the script as __mp_main__
        module = "__main__"
    return module, qualname


def _where(func: Callable[..., Any], qualname: str, namespace: str | None, code: str | None) -> str:
    """What tells ``module:qualname`` apart: the namespace, else the source
    file; a lambda, or a function with neither, adds its code hash; a builtin
    (neither, and no code) is ``builtin``."""
    where = None
    if namespace is not None:
        where = "ns=" + namespace
    elif (path := source_file(func)) is not None:
        where = "file=" + path
    if where is None and code is None:  # a builtin: its import name is unique
        return "builtin"
    if where is None or "<lambda>" in qualname:  # told apart by their code
        return ("" if where is None else where + "#") + "code=" + str(code)
    return where


def closure_version(tag: str, names: Sequence[str], values: Sequence[Any]) -> str:
    """The keys' version: the tag, plus the digest of the captured values if any."""
    salt = closure_salt(names, values)
    return tag if salt is None else f"{tag}|closure={salt}"


def cell_value(cell: types.CellType) -> Any:
    """What ``cell`` holds, or EMPTY."""
    try:
        return cell.cell_contents
    except ValueError:
        return EMPTY
