"""Group invalidation for the Django backend: ``delete_pattern`` and tags.

``delete_pattern`` has django-redis's name and meaning: the pattern is a
Redis glob (``*``, ``?``, ``[abc]``, ``[^a-z]``, ``\\`` escapes) over the
*made* keys, with the alias's key prefix and version glob-escaped in front
(``prefix:version:pattern`` for Django's default key function). Like Redis's
SCAN it visits every key, so it costs O(entries); tags (``mmcache.tags``) are
the O(1) alternative. The scan reads without the lock (readers never wait);
matches are deleted in small batches, each under the writer lock, so other
writers are never held up for long.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from mmcache import MmapCache
from mmcache.serialization import loads
from mmcache.tags import TAGGED, Tags

BATCH = 256  # keys deleted per hold of the writer lock
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def glob_escape(s: str) -> str:
    """``s`` with the glob characters escaped (django-redis's ``glob_escape``)."""
    return _GLOB_SPECIAL.sub(r"\\\1", s)


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """A regex matching whole keys as Redis's ``stringmatch`` does."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            regex, i = _glob_class(pattern, i + 1)
            out.append(regex)
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _glob_class(pattern: str, j: int) -> tuple[str, int]:
    """The regex of the ``[...]`` class whose body starts at ``pattern[j]``,
    and the index of its closing ``]`` (or the pattern's end)."""
    n = len(pattern)
    negate = j < n and pattern[j] == "^"
    if negate:
        j += 1
    items: list[str] = []
    while j < n and pattern[j] != "]":
        if pattern[j] == "\\" and j + 1 < n:
            j += 1
            items.append(re.escape(pattern[j]))
        elif j + 2 < n and pattern[j + 1] == "-" and pattern[j + 2] != "]":
            lo, hi = sorted((pattern[j], pattern[j + 2]))
            items.append(f"{re.escape(lo)}-{re.escape(hi)}")
            j += 2
        else:
            items.append(re.escape(pattern[j]))
        j += 1
    # Redis reads an unclosed "[" to the end of the pattern; "[]" matches
    # nothing and "[^]" any one character.
    if items:
        return f"[{'^' if negate else ''}{''.join(items)}]", j
    return ("." if negate else "(?!)"), j


def delete_matching(t: MmapCache, regex: re.Pattern[str]) -> int:
    """Delete every ``str`` key that ``regex`` matches whole; the number deleted."""
    match = regex.fullmatch
    found = [k for k in t.list() if isinstance(k, str) and match(k)]
    deleted = 0
    for start in range(0, len(found), BATCH):
        with t.transaction():
            for k in found[start : start + BATCH]:
                deleted += bool(t.delete(k))
    return deleted


def decode(t: MmapCache, data: Any, flags: int, miss: Any) -> Any:
    """A record's value, or ``miss`` if it is a tagged entry whose tags were invalidated."""
    if flags & TAGGED:
        inner = Tags(t).unwrap(data, flags)
        if inner is None:
            return miss
        data, flags = inner
    return loads(data, flags)


def wrap(t: MmapCache, encoded: tuple[bytes, int], tags: Any) -> tuple[bytes, int]:
    """``(data, flags)`` in a tag envelope (unchanged without tags)."""
    return Tags(t).wrap(*encoded, tags) if tags else encoded


def rewrap(t: MmapCache, old: Any, old_flags: int, encoded: tuple[bytes, int]) -> tuple[bytes, int]:
    """A new value for a read-modify-write, keeping the old record's tags."""
    if old_flags & TAGGED:
        tags = Tags(t)
        return tags.wrap(*encoded, tags.tags_of(old, old_flags))
    return encoded


def live(t: MmapCache, data: Any, flags: int) -> bool:
    """True unless a tagged record's tags were invalidated."""
    return not flags & TAGGED or Tags(t).live(data, flags)  # (no Tags made for an untagged record)


def invalidate(t: MmapCache, tags: Any) -> int:
    return Tags(t).invalidate(tags)


def make_pattern(
    key_func: Callable[[str, str, str], str], pattern: str, prefix: str, version: int | str
) -> str:
    """django-redis's ``make_pattern``: prefix and version escaped, the pattern as given."""
    return key_func(pattern, glob_escape(prefix), glob_escape(str(version)))
