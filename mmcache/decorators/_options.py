"""``mmap_cached``'s keywords, checked at decoration time.

The table is opened lazily (on the first call), so a bad option must fail
here, where the traceback points at the decorator, not at some later call.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from typing import Any

from ._tagging import check_spec

__all__ = ["L2_ERRORS", "options"]

L2_ERRORS = ("log", "raise")


def _seconds(name: str, value: float | None, *, zero: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise TypeError(f"mmap_cached: {name} must be a number of seconds or None, not {value!r}")
    if value < 0 or (value == 0 and not zero):
        raise ValueError(f"mmap_cached: {name} must be {'>= 0' if zero else '> 0'}, not {value!r}")
    return float(value)


def _secret(secret: bytes | str | None) -> bytes | None:
    if secret is None:
        return None
    key = secret.encode() if isinstance(secret, str) else secret
    if not isinstance(key, bytes) or not 1 <= len(key) <= 64:
        raise ValueError("mmap_cached: secret must be 1 to 64 bytes (or a str of as many UTF-8 bytes)")
    return key


def _l2(l2: Any, l2_errors: str) -> None:
    if l2_errors not in L2_ERRORS:
        raise ValueError(f"mmap_cached: l2_errors must be 'log' or 'raise', not {l2_errors!r}")
    if l2 is not None:
        from ._l2 import check_l2  # needs redis-py: imported only when asked for

        check_l2(l2)


def _key(key: Callable[..., Any] | None, ignore: tuple[str, ...]) -> None:
    if key is not None and not callable(key):
        raise TypeError(f"mmap_cached: key= must be a function of the call's arguments, not {key!r}")
    if key is not None and ignore:
        raise ValueError("mmap_cached: ignore= has no effect with key=; leave the arguments out in key=")


def _max_entries(n: int | None) -> None:
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"mmap_cached: max_entries must be a positive int or None, not {n!r}")


def options(
    *,
    path: str | os.PathLike[str] | None,
    ttl: float | None,
    typed: bool,
    ignore: Iterable[str] | str,
    max_entries: int | None,
    key: Callable[..., Any] | None,
    version: str | int | None,
    hash_code: bool | None,
    name: str | None,
    namespace: str | None,
    stale_ttl: float | None,
    lock_timeout: float | None,
    lease_ttl: float,
    secret: bytes | str | None,
    l2: Any,
    l2_errors: str,
    tags: Any = None,
) -> dict[str, Any]:
    """The validated, normalised options (what ``cache_parameters()`` shows)."""
    ignore = (ignore,) if isinstance(ignore, str) else tuple(ignore)
    _key(key, ignore)
    _max_entries(max_entries)
    if lease_ttl is None:
        raise TypeError("mmap_cached: lease_ttl must be a number of seconds")
    ttl, stale_ttl = _seconds("ttl", ttl), _seconds("stale_ttl", stale_ttl)
    if stale_ttl is not None and ttl is None:
        raise ValueError("mmap_cached: stale_ttl= needs ttl= (how long a result stays fresh)")
    _l2(l2, l2_errors)
    tags = check_spec(tags)
    if tags is not None and l2 is not None:
        raise ValueError("mmap_cached: tags= cannot be used with l2= (tokens are per host; Redis is shared)")
    return {
        "path": path,
        "ttl": ttl,
        "typed": bool(typed),
        "ignore": ignore,
        "max_entries": max_entries,
        "key": key,
        "version": version,
        "hash_code": None if hash_code is None else bool(hash_code),
        "name": name,
        "namespace": namespace,
        "stale_ttl": stale_ttl,
        "lock_timeout": _seconds("lock_timeout", lock_timeout, zero=True),
        "lease_ttl": _seconds("lease_ttl", lease_ttl),
        "secret": _secret(secret),
        "l2": l2,
        "l2_errors": l2_errors,
        "tags": tags,
    }
