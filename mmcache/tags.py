"""Tags: invalidate a group of entries in O(1), above the core table.

A tag is a name (``"user:42"``, ``"prices"``). Each tag has a *token*, eight
random bytes stored in the table itself under a reserved bytes key (the faces
use ``str`` keys, and the core never mixes a ``str`` and a ``bytes`` key).
An entry stored with tags carries, in front of its value, the token each of
its tags had when it was written (an *envelope*), and the record's flags get
the ``TAGGED`` bit. A read compares those tokens with the current ones: any
difference means a tag was invalidated since, and the entry is a miss.
``invalidate(tag)`` is one put of a fresh token per tag, whatever the number
of entries it touches: nothing is scanned; the stale entries are skipped on
read and reclaimed by the core's expiry, eviction and compaction like any
other dead weight.

A token that is missing (never made, evicted, or removed by ``clear()``)
matches no envelope, so losing one can only turn hits into misses, never
revive a stale value. Random tokens (not counters) keep that true even when
a token is evicted and made again.

Envelope (all little-endian), checked on every read because files are
untrusted: an envelope that does not parse is a miss::

    u8   number of tags n (1..255)
    n x  { u64 token, u16 name length, name (UTF-8) }
    u16  the value's own flags (its codec)
    ...  the value bytes
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable

from .table import MmapCache

TAGGED = 0x100  # record flag bit: the value is wrapped in a tag envelope
TAG_KEY_PREFIX = b"\xffmmcache-tag\x00"  # reserved bytes keys holding tokens
MAX_TAGS = 255
MAX_TAG_BYTES = 200

_TOKEN = struct.Struct("<Q")
_HEAD = struct.Struct("<QH")  # token, name length
_U16 = struct.Struct("<H")  # a name length, the inner flags


def _names(tags: Iterable[str]) -> list[bytes]:
    """Tag names as bytes, deduplicated in order; ValueError/TypeError on bad ones."""
    if isinstance(tags, str | bytes):
        raise TypeError("tags must be an iterable of str (a lone str would be split into letters)")
    out: list[bytes] = []
    for tag in tags:
        if not isinstance(tag, str):
            raise TypeError(f"a tag must be a str, not {type(tag).__name__}")
        b = tag.encode("utf-8")
        if not 1 <= len(b) <= MAX_TAG_BYTES:
            raise ValueError(f"a tag must be 1 to {MAX_TAG_BYTES} UTF-8 bytes: {tag!r}")
        if b not in out:
            out.append(b)
    if len(out) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags per entry")
    return out


def _token_key(name: bytes) -> bytes:
    return TAG_KEY_PREFIX + name


class Tags:
    """Tag tokens kept in ``table`` (usually the same table as the entries)."""

    def __init__(self, table: MmapCache) -> None:
        self.table = table

    def token(self, name: bytes) -> bytes | None:
        """The current token of a tag, or None if it has none."""
        v = self.table.get(_token_key(name))
        return v if isinstance(v, bytes) and len(v) == _TOKEN.size else None

    def _token_or_new(self, name: bytes) -> bytes:
        """The current token, made (atomically, first writer wins) if missing."""
        tok = self.token(name)
        while tok is None:
            self.table.add(_token_key(name), os.urandom(_TOKEN.size))
            tok = self.token(name)
        return tok

    def wrap(self, data: bytes, flags: int, tags: Iterable[str]) -> tuple[bytes, int]:
        """``(data, flags)`` as an envelope carrying the tags' current tokens.

        With no tags, returns its input unchanged (an untagged record).
        """
        return seal(self.stamp(tags), data, flags)

    def stamp(self, tags: Iterable[str]) -> bytes | None:
        """The envelope's head with the tags' tokens *now* (made if missing),
        or None for no tags. Taken before computing a value and sealed onto it
        afterwards (``seal``), an invalidation that lands while the value is
        computed makes the stored entry a miss: it may predate the change."""
        names = _names(tags)
        if not names:
            return None
        parts = [bytes((len(names),))]
        for name in names:
            parts.append(self._token_or_new(name) + _U16.pack(len(name)) + name)
        return b"".join(parts)

    def live(self, data: bytes | memoryview, flags: int) -> bool:
        """True unless ``data`` is a tagged record whose tags were invalidated."""
        return not flags & TAGGED or self.unwrap(data, flags) is not None

    def unwrap(self, data: bytes | memoryview, flags: int) -> tuple[bytes | memoryview, int] | None:
        """The value and its own flags if every tag still has the token the
        envelope carries; None if one was invalidated (or the envelope is
        damaged). Untagged records pass through unchanged."""
        if not flags & TAGGED:
            return data, flags
        mv = memoryview(data)
        try:
            n = mv[0]
            pos = 1
            for _ in range(n):
                token, ln = _HEAD.unpack_from(mv, pos)
                pos += _HEAD.size
                name = bytes(mv[pos : pos + ln])
                if len(name) != ln or self.token(name) != _TOKEN.pack(token):
                    return None
                pos += ln
            (inner,) = _U16.unpack_from(mv, pos)
        except (IndexError, struct.error):
            return None
        if n == 0 or inner & TAGGED:
            return None
        return data[pos + _U16.size :], inner

    def value_of(self, data: bytes) -> bytes | None:
        """``unwrap`` for a hot path that knows the inner flags (the decorator:
        always cloudpickle): the value bytes if every tag still has the
        envelope's token, else None (also for a damaged envelope). Plain
        slicing, one token read per tag: about half ``unwrap``'s cost."""
        get, prefix = self.table.get, TAG_KEY_PREFIX
        try:
            n, pos = data[0], 1
            for _ in range(n):
                start = pos + 10
                end = start + (data[pos + 8] | data[pos + 9] << 8)
                if end > len(data) or get(prefix + data[start:end]) != data[pos : pos + 8]:
                    return None
                pos = end
            inner = data[pos] | data[pos + 1] << 8
        except IndexError:
            return None
        if n == 0 or inner & TAGGED:
            return None
        return data[pos + 2 :]

    def tags_of(self, data: bytes | memoryview, flags: int) -> list[str]:
        """The tag names an envelope carries (empty for an untagged record)."""
        if not flags & TAGGED:
            return []
        mv = memoryview(data)
        out, pos = [], 1
        for _ in range(mv[0]):
            _, ln = _HEAD.unpack_from(mv, pos)
            pos += _HEAD.size
            out.append(bytes(mv[pos : pos + ln]).decode("utf-8", "replace"))
            pos += ln
        return out

    def invalidate(self, tags: Iterable[str]) -> int:
        """Give each tag a fresh token: every entry stored with any of them
        becomes a miss, in every process at once. One put per tag. Returns
        the number of tags invalidated."""
        names = _names(tags)
        if names:
            with self.table.transaction():
                for name in names:
                    self.table.put(_token_key(name), os.urandom(_TOKEN.size))
        return len(names)


def check(tags: Iterable[str]) -> list[str]:
    """``tags`` deduplicated, in order; TypeError/ValueError as ``wrap`` would
    raise them (for a caller that checks tags before any table is open)."""
    return [name.decode("utf-8") for name in _names(tags)]


def seal(stamp: bytes | None, data: bytes, flags: int) -> tuple[bytes, int]:
    """``(data, flags)`` in an envelope whose head is ``stamp`` (from
    ``Tags.stamp``); unchanged if ``stamp`` is None."""
    if stamp is None:
        return data, flags
    if flags & TAGGED or not 0 <= flags < 1 << 16:
        raise ValueError("flags already mark a tag envelope (or do not fit 16 bits)")
    return b"".join((stamp, _U16.pack(flags), data)), flags | TAGGED


__all__ = ["MAX_TAGS", "MAX_TAG_BYTES", "TAGGED", "TAG_KEY_PREFIX", "Tags", "check", "seal"]
