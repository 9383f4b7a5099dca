"""``tags=``: group invalidation of cached results, across functions and processes.

``@mmap_cached(tags=["users"])`` tags every result of a function;
``tags=lambda user_id, **kw: [f"user:{user_id}"]`` computes them from each
call's arguments (the same arguments the function takes). Then
``mmcache.invalidate_tags("user:42")`` makes every result stored with that
tag a miss, in every process at once, in O(1): one new token per tag
(``mmcache.tags``: the result's envelope carries the tokens its tags had,
compared with the current ones on every read; nothing is scanned).

Scope: a cache *directory*. Each function has its own table, but the tokens
of every tagged function in one directory live in one shared table,
``<dir>/mmcache-tags`` (a name no function's table can take: theirs end in
16 hex digits), so a tag names a group across functions: invalidating
``"user:42"`` reaches ``profile(42)`` and ``orders(42)`` alike.
``f.invalidate_tags(...)`` is the same call on ``f``'s directory: it reaches
every function there, not only ``f`` (use a tag only ``f`` uses for that,
or ``f.cache_clear()``). Functions with another ``path=`` have their own tag
table; pass ``path=`` to ``invalidate_tags`` to reach them.

What ``tags=`` gives is part of the keys (the names, or the tag function's
code, not values it captures), so changing it starts afresh rather than
serve results stored under other tags.

Tokens are taken *before* the function runs and sealed onto its result
after: an invalidation that lands while a result is being computed leaves
that result a miss (it may have read the old data). A lost tag table or
token (deleted, evicted: the table is LRU-bounded like a function's) only
turns hits into misses. Tokens are not signed by ``secret=``: someone who can
write the cache directory could put back an old token and so revive an
invalidated result of the same function and arguments, never plant one.

Not with ``l2=``: Redis holds results for every host, and tokens in a local
file cannot invalidate them there (refused at decoration).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, cast

from xxhash import xxh3_64_hexdigest

from mmcache._table_lookup import Entry
from mmcache.table import MmapCache
from mmcache.tags import TAGGED, Tags, check

from ._codehash import code_hash
from ._location import default_dir, ensure_dir
from ._table import handle

__all__ = ["TAG_TABLE", "Tagger", "check_spec", "entry_reader", "invalidate_tags", "reader", "spec_id"]

TAG_TABLE = "mmcache-tags"
TagSpec = Iterable[str] | Callable[..., Iterable[str]]


def _tags_in(directory: str | os.PathLike[str] | None) -> Tags:
    """The tag tokens shared by the functions whose tables are in ``directory``."""
    d = default_dir() if directory is None else os.path.abspath(os.fspath(directory))
    ensure_dir(d)
    return Tags(handle(os.path.join(d, TAG_TABLE)))


def check_spec(spec: Any) -> tuple[str, ...] | Callable[..., Iterable[str]] | None:
    """``tags=`` checked at decoration: a tuple of names, a callable, or None."""
    if spec is None or callable(spec):
        return cast("Callable[..., Iterable[str]] | None", spec)
    try:
        names = tuple(check(spec))
    except TypeError as e:
        raise TypeError(
            f"mmap_cached: tags= takes a list of str or a function of the call's arguments: {e}"
        ) from None
    except ValueError as e:
        raise ValueError(f"mmap_cached: tags=: {e}") from None
    return names or None


def spec_id(spec: tuple[str, ...] | Callable[..., Iterable[str]]) -> str:
    """What of ``tags=`` goes into the keys' version: which tags (or the tag
    function's code). Changing them starts afresh, so no result is ever
    served with tags other than the ones the decorator now gives."""
    if callable(spec):
        return "fn:" + (code_hash(spec) or str(getattr(spec, "__qualname__", type(spec).__qualname__)))
    return xxh3_64_hexdigest("\0".join(sorted(spec)).encode("utf-8", "surrogatepass"))


class Tagger:
    """One function's ``tags=``: the envelope head for a call, and the check on read."""

    def __init__(self, spec: tuple[str, ...] | Callable[..., Iterable[str]], directory: Callable[[], str]):
        self.spec, self.directory = spec, directory
        self._tags: Tags | None = None

    @property
    def tags(self) -> Tags:
        t = self._tags
        if t is None:
            t = self._tags = _tags_in(self.directory())
        return t

    def stamp(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes | None:
        """The tags' tokens now, for the result of ``f(*args, **kwargs)``
        (None if the tag function gives no tags: an untagged result)."""
        spec = self.spec
        names = spec(*args, **kwargs) if callable(spec) else spec
        try:
            return self.tags.stamp(names)
        except (TypeError, ValueError) as e:
            raise type(e)(f"mmap_cached: tags= gave {names!r}: {e}") from None

    def unwrap(self, data: Any, flags: int) -> Any:
        """The pickle inside an envelope, or None if a tag was invalidated."""
        return self.tags.value_of(bytes(data))


def reader(t: MmapCache, tagger: Tagger) -> Callable[..., Any]:
    """A tagged function's ``get(key, default)``: the pickle, or ``default``
    for a miss or a result whose tags were invalidated."""
    tget, value_of = t.get, tagger.tags.value_of

    def get(key: bytes, default: Any) -> Any:
        found = tget(key, default, with_flags=True)
        if found is default:
            return default
        data, flags = found
        if flags & TAGGED:
            data = value_of(data)
            return default if data is None else data
        return data  # the tag function gave no tags for this call

    return get


def entry_reader(t: MmapCache, tagger: Tagger) -> Callable[..., Entry | None]:
    """A tagged function's ``get_entry`` (``stale_ttl=``): an invalidated
    result is no entry at all, not a stale one to serve."""
    get_entry, unwrap = t.get_entry, tagger.unwrap

    def read(key: bytes) -> Entry | None:
        e = get_entry(key)
        if e is None or not e.flags & TAGGED:
            return e
        data = unwrap(e.value, e.flags)
        return None if data is None else e._replace(value=data)

    return read


def invalidate_tags(*tags: str, path: str | os.PathLike[str] | None = None) -> int:
    """Make every result stored with any of ``tags`` a miss, for every cached
    function whose table is in ``path`` (default: the default directory), in
    every process at once. O(1) per tag: nothing is scanned. Returns the
    number of tags invalidated."""
    return _tags_in(path).invalidate(tags)
