"""A hash of what a function does, not of how its text is laid out.

``@mmap_cached`` invalidates a function's results when this hash changes, so
it must change with any change of behaviour and with nothing else:

* Covered: every instruction (opcode and argument) with jumps and the
  exception table renumbered by instruction, the constants instructions load
  (nested code objects recursively: inner functions, lambdas,
  comprehensions, classes), the names they use, argument names and counts,
  flags, and the function's defaults and keyword-only defaults.
* Left out on purpose: docstrings (never loaded by a function's code; a class
  body's ``__doc__ = "..."`` is skipped), line numbers and column positions
  (``co_firstlineno``, ``co_linetable``), ``NOP`` instructions (the compiler
  keeps some only to carry a line number), the file name and qualified name.
  So a comment, docstring, blank line or reformatting edit keeps the hash.
* Not covered (the function's *inputs* beyond its own code): the functions
  it calls, global variables' values, C code. Captured closure values are
  keyed separately (``_identity``).

A function wrapped by other decorators (``functools.wraps``) is hashed with
every function down its ``__wrapped__`` chain.
"""

from __future__ import annotations

import bisect
import dis
import types
import weakref
from collections.abc import Callable
from typing import Any

from xxhash import xxh3_64

from ._encode import encode

__all__ = ["code_hash", "hashable_code"]

_JUMPS = frozenset(dis.hasjrel) | frozenset(dis.hasjabs) | frozenset(getattr(dis, "hasjump", ()))
_CONSTS = frozenset(dis.hasconst)
_NAMES = frozenset(dis.hasname)
_SKIP = frozenset({"NOP", "EXTENDED_ARG", "CACHE"})
# Flags set by the compiler for the docstring (3.14's CO_HAS_DOCSTRING): not behaviour.
_FLAG_MASK = ~0x4000000
_MAX_WRAPPED = 16


def hashable_code(func: Callable[..., Any]) -> list[types.FunctionType]:
    """The Python functions whose code is ``func``'s behaviour: itself and
    its ``__wrapped__`` chain ([] for builtins, partials and the like)."""
    out: list[types.FunctionType] = []
    f: Any = func
    for _ in range(_MAX_WRAPPED):
        f = getattr(f, "__func__", f)  # a bound method's function
        if isinstance(f, types.FunctionType):
            out.append(f)
        f = getattr(f, "__wrapped__", None)
        if f is None:
            break
    return out


def code_hash(func: Callable[..., Any]) -> str | None:
    """16 hex digits over ``func``'s code (module docstring), or None if it
    has no Python code to hash."""
    funcs = hashable_code(func)
    if not funcs:
        return None
    h = xxh3_64()
    for f in funcs:
        h.update(_code_digest(f.__code__))
        h.update(b"D" + _value(f.__defaults__) + b"K" + _value(f.__kwdefaults__))
    return h.hexdigest()


# Code objects already hashed (a factory decorating a closure at each call
# hashes its code once); weak keys: code made by exec is not kept alive.
_done: weakref.WeakKeyDictionary[types.CodeType, bytes] = weakref.WeakKeyDictionary()


def _code_digest(code: types.CodeType) -> bytes:
    digest = _done.get(code)
    if digest is None:
        h = xxh3_64()
        _feed(h, code)
        digest = _done[code] = h.digest()
    return digest


def _value(v: Any) -> bytes:
    """A constant or default, canonically; code objects by their hash."""
    if isinstance(v, types.CodeType):
        return b"c" + _code_digest(v)
    if isinstance(v, types.FunctionType):  # a default that is a function (local ones have no name)
        return b"F" + (code_hash(v) or "").encode()
    if isinstance(v, tuple) and any(isinstance(x, types.CodeType | types.FunctionType) for x in v):
        return b"(" + b",".join(_value(x) for x in v) + b")"
    try:
        return encode(v, typed=True)  # frozensets sorted, not in hash order
    except TypeError:
        # No canonical form (an object() sentinel default...): its type. Its
        # repr would hold an address that differs in every run.
        return b"?" + f"{type(v).__module__}.{type(v).__qualname__}".encode("utf-8", "surrogatepass")


def _feed(h: Any, code: types.CodeType) -> None:
    # Instructions without NOPs; jump targets and exception ranges as indices
    # into that list, so a NOP kept or dropped for a line number changes nothing.
    instrs = [i for i in dis.get_instructions(code) if i.opname not in _SKIP]
    offsets = [i.offset for i in instrs]

    def index(offset: int) -> int:
        return bisect.bisect_left(offsets, offset)

    parts = _instruction_parts(instrs, index) + _exception_parts(code, index)
    h.update(encode(parts))
    shape = (code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags & _FLAG_MASK)
    h.update(encode((shape, code.co_varnames, code.co_freevars, code.co_cellvars)))


def _instruction_parts(instrs: list[dis.Instruction], index: Callable[[int], int]) -> list[bytes]:
    """One part per instruction; a constant's load is held back one step, so a
    class body's docstring (a constant stored to ``__doc__``) is left out."""
    parts: list[bytes] = []
    pending_const: bytes | None = None
    for ins in instrs:
        if ins.opcode in _CONSTS:
            if pending_const is not None:
                parts.append(pending_const)
            pending_const = b"C" + _value(ins.argval)
            continue
        if pending_const is not None:
            if ins.opname == "STORE_NAME" and ins.argval == "__doc__":  # a class body's docstring
                pending_const = None
                continue
            parts.append(pending_const)
            pending_const = None
        parts.append(_instruction(ins, index))
    if pending_const is not None:
        parts.append(pending_const)
    return parts


def _instruction(ins: dis.Instruction, index: Callable[[int], int]) -> bytes:
    """An instruction that loads no constant: a jump by its target's index, a
    name by itself (and flag bits: "NULL + name"), not by an index into co_names."""
    if ins.opcode in _JUMPS:
        return b"J%d:%d" % (ins.opcode, index(ins.argval))
    if ins.opcode in _NAMES:
        return b"N%d:" % ins.opcode + _value(ins.argrepr)
    arg = b"" if ins.arg is None else encode(ins.arg)
    return b"I%d:" % ins.opcode + arg + b":" + _value(ins.argval)


def _exception_parts(code: types.CodeType, index: Callable[[int], int]) -> list[bytes]:
    """The exception table, its ranges and targets as instruction indices."""
    table = getattr(dis, "_parse_exception_table", None)
    if table is None:  # pragma: no cover - every supported Python has it; offsets are still canonical
        return [b"E" + code.co_exceptiontable]
    parts = []
    for e in table(code):
        span = (index(e.start), index(e.end), index(e.target), e.depth, e.lasti)
        parts.append(b"E%d,%d,%d,%d,%d" % span)
    return parts
