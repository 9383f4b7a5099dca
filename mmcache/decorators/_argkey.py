"""Argument keys for ``@mmap_cached``: a call ``f(*args, **kwargs)`` -> 16 bytes.

:class:`ArgKeyer` binds the arguments to the signature (defaults applied:
``f(1)``, ``f(1, 1)``, ``f(y=1, x=1)`` agree for ``def f(x, y=1)``; ``**kwargs``
order-free; ``ignore`` names dropped) and hashes with ``xxh3_128`` a prefix
(encoding version, ``typed``, module, qualname, ``version``) plus each
argument's canonical encoding (``_encode``: the rules are in its docstring).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from xxhash import xxh3_128_digest as _digest

from .. import _native
from ._encode import (  # the encoder's internals the binder's fast path uses
    _DISPATCH,
    _MISSING,
    ENCODING_VERSION,
    _enc,
    _enc_slow,
    encode,
)
from ._scalars import _HDR, _sb, _Unencodable

__all__ = ["ENCODING_VERSION", "ArgKeyer", "encode"]

_P = inspect.Parameter
_ANY_SIG = inspect.Signature([_P("args", _P.VAR_POSITIONAL), _P("kwargs", _P.VAR_KEYWORD)])


def _name_prefix(
    func: Callable[..., Any], typed: bool, version: str | int | None, name: str | None
) -> tuple[bytes, bytes]:
    """The keyer's namespace (its repr, ``key=``'s salt) and the prefix every key hashes."""
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if name is None and (not isinstance(module, str) or not isinstance(qualname, str)):
        raise TypeError(f"mmap_cached: {func!r} has no __module__/__qualname__ to key it by")
    if isinstance(version, bool) or not isinstance(version, str | int | None):
        raise TypeError(f"mmap_cached: version must be a str or an int, not {version!r}")
    if name is None and "<lambda>" in str(qualname) and version is None:
        raise TypeError("mmap_cached: lambdas all share one name; use a def or pass version=")
    ns = (f"{module}:{qualname}" if name is None else name) + ("" if version is None else f"@{version}")
    prefix = b"mmcache-argkey" + bytes([ENCODING_VERSION, typed])
    # name= (the decorator's table id) replaces module and qualname; its own
    # marker byte, so no name can give the bytes of a (module, qualname) pair.
    prefix += (_sb(str(module)) + _sb(str(qualname))) if name is None else (b"I" + _sb(name))
    prefix += b"N" if version is None else _sb(str(version))
    return ns.encode("utf-8", "surrogatepass"), prefix


def _signature(func: Callable[..., Any]) -> inspect.Signature:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):  # some builtins have none
        return _ANY_SIG


def _by_kind(
    params: list[inspect.Parameter],
) -> tuple[list[inspect.Parameter], list[inspect.Parameter], str | None, str | None]:
    """The parameters bound by position (positional-only first), the
    keyword-only ones, and the names of ``*args`` and ``**kwargs`` (or None)."""
    pos = [p for p in params if p.kind in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)]
    kwonly = [p for p in params if p.kind is _P.KEYWORD_ONLY]
    varargs = next((p.name for p in params if p.kind is _P.VAR_POSITIONAL), None)
    return pos, kwonly, varargs, next((p.name for p in params if p.kind is _P.VAR_KEYWORD), None)


class ArgKeyer:
    """Turns calls of one function into 16-byte keys, stable across processes and runs.

    ``namespace`` (``b"module:qualname"``, or ``name`` if given, plus
    ``b"@version"`` if given) names the function. The signature is analysed once here so ``key()`` binds by
    hand; ``inspect.Signature.bind`` only reports bad calls.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        typed: bool = False,
        ignore: Iterable[str] = (),
        version: str | int | None = None,
        name: str | None = None,
    ) -> None:
        self.namespace: bytes
        self.namespace, self._prefix = _name_prefix(func, bool(typed), version, name)
        self.func, self.typed, self.version = func, bool(typed), version
        self.ignore = frozenset([ignore] if isinstance(ignore, str) else ignore)
        self._read_signature(func)
        self._plan_fast_paths()
        self.key: Callable[[tuple[Any, ...], dict[str, Any]], bytes] = self._exact_key()

    def _read_signature(self, func: Callable[..., Any]) -> None:
        """What binding a call needs: the parameters by kind, their defaults, where each goes."""
        self._sig = _signature(func)
        params = list(self._sig.parameters.values())
        pos, kwonly, self._varargs, self._varkw = _by_kind(params)
        unknown = self.ignore - {p.name for p in params}
        if unknown and self._varkw is None:
            qualname = getattr(func, "__qualname__", None)
            raise ValueError(f"mmap_cached: ignore= names {sorted(unknown)}, not in {qualname}()")
        self._pos, self._npos = [p.name for p in pos], len(pos)
        self._nposonly = sum(p.kind is _P.POSITIONAL_ONLY for p in params)
        self._kwonly = [p.name for p in kwonly]
        # Defaults of the bound parameters (positional then keyword-only), _MISSING if required.
        self._defaults = [_MISSING if p.default is _P.empty else p.default for p in pos + kwonly]
        self._allnames = names = self._pos + self._kwonly
        self._index = {n: i for i, n in enumerate(names) if i >= self._nposonly}
        # The fewest positional arguments a call can give; a keyword-only parameter without default.
        self._nreq = max([i + 1 for i, p in enumerate(pos) if p.default is _P.empty], default=0)
        self._kwonly_required = any(p.default is _P.empty for p in kwonly)

    def _plan_fast_paths(self) -> None:
        """The shortcuts ``_key_bound`` takes: ``_fast`` (no ``*args``/``**kwargs``:
        a keyword argument goes to its slot), ``_tails`` (a positional call of
        ``k`` arguments is ``args + _tails[k]``), ``_keep`` (the values not ignored)."""
        self._fast = self._varargs is None and self._varkw is None
        fast = self._fast and not self._kwonly_required
        self._tails = {k: tuple(self._defaults[k:]) for k in range(self._nreq, self._npos + 1) if fast}
        names = self._allnames
        keep = [i for i, n in enumerate(names) if n not in self.ignore]
        self._keep = None if len(keep) == len(names) else keep
        self._names = [names[i] for i in keep]

    def __repr__(self) -> str:
        return f"ArgKeyer({self.namespace.decode('utf-8', 'replace')!r}, typed={self.typed})"

    def _exact_key(self) -> Callable[[tuple[Any, ...], dict[str, Any]], bytes]:
        """``key``: the commonest call, every parameter given by position and
        none ignored, hashes the arguments as they come (the same bytes
        ``_key_bound`` builds, without binding); any other call goes there.
        A closure: on a decorator hit every attribute lookup shows."""
        bound, prefix, typed, disp = self._key_bound, self._prefix, self.typed, _DISPATCH[self.typed]
        n = self._npos if self._keep is None and self._tails.get(self._npos) == () else -1
        if n <= 0:
            return bound
        if _native.KeyFn is not None:  # the same bytes, compiled; anything else still goes to bound
            return _native.KeyFn(prefix, n, typed, _digest, bound)
        if n == 1:

            def key1(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
                if len(args) == 1 and not kwargs:
                    v = args[0]
                    fn = disp.get(type(v))
                    if fn is not None:
                        try:
                            return _digest(prefix + fn(v, typed, 0))
                        except _Unencodable:
                            pass  # _key_bound names the argument
                return bound(args, kwargs)

            return key1

        def key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
            if len(args) == n and not kwargs:
                parts = [prefix]
                try:
                    for v in args:
                        fn = disp.get(type(v))
                        parts.append(fn(v, typed, 0) if fn else _enc_slow(v, typed, 0))
                    return _digest(b"".join(parts))
                except _Unencodable:
                    pass
            return bound(args, kwargs)

        return key

    def _key_bound(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        """The 16-byte ``xxh3_128`` key of the call ``func(*args, **kwargs)``."""
        values: Any
        if not kwargs and (tail := self._tails.get(len(args))) is not None:
            values = args + tail if tail else args
        elif self._fast and len(args) <= self._npos:
            values = [*args, *self._defaults[len(args) :]]
            for k, v in kwargs.items():
                i = self._index.get(k, -1)
                if i < len(args):  # unknown, positional-only or given twice: let bind() say
                    return self._key_general(args, kwargs)
                values[i] = v
            if any(v is _MISSING for v in values):
                return self._key_general(args, kwargs)
        else:
            return self._key_general(args, kwargs)
        if self._keep is not None:
            values = [values[i] for i in self._keep]
        disp, typed, parts = _DISPATCH[self.typed], self.typed, [self._prefix]
        try:
            for v in values:
                fn = disp.get(type(v))
                parts.append(fn(v, typed, 0) if fn else _enc_slow(v, typed, 0))
        except _Unencodable:
            self._name_culprit(zip(self._names, values, strict=True))
            raise
        return _digest(b"".join(parts))

    def _name_culprit(self, named: Iterable[tuple[str, Any]]) -> None:
        """Raise the TypeError naming the first argument with no stable encoding."""
        for name, v in named:
            if name not in self.ignore:
                self._arg(name, v)

    def _arg(self, name: str, value: Any) -> bytes:
        try:
            return _enc(value, self.typed, 0)
        except _Unencodable as exc:
            raise TypeError(
                f"mmap_cached: cannot build a key from argument {name!r} of type "
                f"{type(value).__qualname__}: {exc}; pass key= or ignore="
            ) from None

    def _bad_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> NoReturn:
        self._sig.bind(*args, **kwargs)  # raises the TypeError Python would
        raise TypeError(f"mmap_cached: arguments do not match {self._sig}")

    def _key_general(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        """Bind any call shape by hand (``_bind_general``), then encode the
        named parameters in order, ``*args`` counted, ``**kwargs`` sorted."""
        values, extra, kw = self._bind_general(args, kwargs)
        ign, t, parts = self.ignore, self.typed, [self._prefix]
        try:
            for n, v in zip(self._allnames, values, strict=True):
                if n not in ign:
                    parts.append(_enc(v, t, 0))
            if self._varargs is not None and self._varargs not in ign:
                parts.append(_HDR(b"*", len(extra)))
                for v in extra:
                    parts.append(_enc(v, t, 0))
            if self._varkw is not None and self._varkw not in ign:
                items = sorted([_sb(k) + _enc(v, t, 0) for k, v in kw.items() if k not in ign])
                parts += [_HDR(b"%", len(items)), *items]
        except _Unencodable:  # find and name the culprit
            star = [(f"*{self._varargs}[{i}]", v) for i, v in enumerate(extra)]
            self._name_culprit([*zip(self._allnames, values, strict=True), *star, *kw.items()])
            raise
        return _digest(b"".join(parts))

    def _bind_general(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[list[Any], tuple[Any, ...], dict[str, Any]]:
        """The values of the named parameters (defaults applied), the extra
        positional arguments and the extra keyword arguments; Python's
        TypeError for a call that does not fit the signature."""
        pos, nargs, npos = self._pos, len(args), self._npos
        if nargs > npos and self._varargs is None:
            self._bad_call(args, kwargs)
        values = [*args[:npos], *self._defaults[nargs:npos]]
        kw = dict(kwargs)
        if kw:
            for i in range(self._nposonly, npos):
                if pos[i] in kw:
                    if i < nargs:
                        self._bad_call(args, kwargs)
                    values[i] = kw.pop(pos[i])
        if self._kwonly:
            kwdefs = self._defaults[npos:]
            values += [kw.pop(n, d) for n, d in zip(self._kwonly, kwdefs, strict=True)]
        if (kw and self._varkw is None) or any(v is _MISSING for v in values):
            self._bad_call(args, kwargs)
        return values, args[npos:], kw
