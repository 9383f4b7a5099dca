"""Argument checks and small conversions for ``MmapCache``.

Everything here runs before any file is touched, so a bad argument raises a
clear error and leaves nothing behind; ``create`` makes generation 1 of a new
table and ``check_params`` compares an opened table with what was asked.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..errors import CorruptCacheError, IncompatibleCacheError
from . import layout
from . import rebuild as rebuilder
from .fs import check_network_fs, check_parent, check_safe, open_checked
from .generation import Generation, Params, read_header
from .lock import WriterLock

_time_ns = time.time_ns


def as_buffer(value: Any) -> bytes | memoryview:
    if type(value) is bytes:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        mv = memoryview(value)
        return mv.cast("B") if mv.c_contiguous else mv.tobytes()
    raise TypeError(f"mmcache values are bytes-like, not {type(value).__name__}")


_INF = float("inf")
# Expiry is a u64 of ns since the epoch; past 2**63 ns (April 2262) it means
# "never": a caller asking for longer gets an entry that does not expire,
# rather than a struct.error (or OverflowError for 1e300) from the put.
NEVER_NS = 1 << 63
_FAR_S = NEVER_NS / 1e9  # seconds from now that are surely past it


def expire_ns(expire: float | None, expire_at_ns: int | None = None) -> int:
    """Absolute expiry in ns (0 = never, -1 = already expired); clamped to
    never from ``NEVER_NS`` on. NaN raises ValueError."""
    if expire_at_ns is not None:
        return _expire_at(expire, expire_at_ns)
    if (type(expire) is float or type(expire) is int) and 0 < expire < _FAR_S:  # the common case (NaN fails)
        at = _time_ns() + int(expire * 1e9)
        return at if at < NEVER_NS else 0
    if expire is None:
        return 0
    return _expire_other(expire)


def _expire_at(expire: float | None, expire_at_ns: int) -> int:
    """``expire_ns`` for an absolute time."""
    if expire is not None:
        raise TypeError("give expire or expire_at_ns, not both")
    if not isinstance(expire_at_ns, int) or isinstance(expire_at_ns, bool):
        raise TypeError("expire_at_ns is an int (ns since the epoch)")
    if expire_at_ns >= NEVER_NS:
        return 0
    return expire_at_ns if expire_at_ns > _time_ns() else -1


def _expire_other(expire: object) -> int:
    """``expire_ns`` past its common case: wrong types, NaN, the past,
    subclasses of int / float, and the far future."""
    if isinstance(expire, bool) or not isinstance(expire, int | float):
        raise TypeError("expire is a number of seconds or None")
    if expire != expire:
        raise ValueError("expire must not be NaN")
    if expire <= 0:
        return -1
    if expire >= _FAR_S:  # inf, 1e300, or any int subclass / float subclass that far
        return 0
    at = _time_ns() + int(expire * 1e9)
    return at if at < NEVER_NS else 0


# A table made without ``size=`` starts at DEFAULT_INITIAL_SIZE slots (a 384 KiB
# index at the default slot_size) and doubles as it fills, up to max_size, which
# defaults to the seed's fixed size: the seed's capacity without its 92 MiB index
# up front. MIN_SIZE is the smallest table that holds one entry: size - 1 data
# slots, of which _write.live_cap_for lets min(int(n * LIVE_FRACTION), n - 1) be
# live (size 3 holds none; tests/core/test_table_basic.py checks both ends).
DEFAULT_SIZE = 1_000_000
DEFAULT_INITIAL_SIZE = 4096
MIN_SIZE = 4


def check_size(size: int, name: str = "size") -> None:
    if not isinstance(size, int) or isinstance(size, bool):
        raise TypeError(f"{name} must be an int")
    if not MIN_SIZE <= size <= layout.MAX_SIZE:
        raise ValueError(
            f"{name} must be between {MIN_SIZE} and {layout.MAX_SIZE} slots, got {size}"
            + (f" (a table of {size} slots cannot hold a single entry)" if size < MIN_SIZE else "")
        )


def resolve_size(size: int | None, max_size: int | None) -> tuple[int, int | None]:
    """(size, max_size) to create with: ``size=None`` starts small and grows
    up to ``max_size`` (default DEFAULT_SIZE)."""
    if size is not None:
        return size, max_size
    if max_size is None:
        max_size = DEFAULT_SIZE
    check_size(max_size, "max_size")
    return min(DEFAULT_INITIAL_SIZE, max_size), max_size


def check_args(size: int, slot_size: int, key_size: int, max_seg: int, max_size: int | None,
                max_entries: int | None, max_bytes: int | None, eviction: str,
                compact_threshold: float, interval: float) -> None:  # fmt: skip
    """Every argument of ``MmapCache`` that is a number or a policy: the
    geometry (``check_geometry``), then caps and policy."""
    check_size(size)
    check_geometry(slot_size, key_size, max_seg)
    if max_size is not None:
        check_size(max_size, "max_size")
        if max_size < size:
            raise ValueError("max_size must be at least size")
    for name, lim in (("max_entries", max_entries), ("max_bytes", max_bytes)):
        if lim is not None and (not isinstance(lim, int) or isinstance(lim, bool) or lim < 1):
            raise ValueError(f"{name} must be a positive int or None")
    if eviction not in ("lru", "fifo", "none"):
        raise ValueError(f"eviction must be 'lru', 'fifo' or 'none', not {eviction!r}")
    if not 0 < compact_threshold <= 1:
        raise ValueError("compact_threshold must be in (0, 1]")
    if not interval >= 0:
        raise ValueError("staleness_check_interval must be >= 0")


def check_geometry(slot_size: int, key_size: int, max_seg: int) -> None:
    """Slot and key sizes that fit each other, a segment size in range."""
    for name, v in (
        ("slot_size", slot_size),
        ("key_size", key_size),
        ("max_segment_bytes", max_seg),
    ):
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"{name} must be an int")
    if not layout.MIN_KEY_SIZE <= key_size <= layout.MAX_KEY_SIZE:
        raise ValueError(f"key_size must be between {layout.MIN_KEY_SIZE} and {layout.MAX_KEY_SIZE}")
    if slot_size < key_size + layout.SLOT_FIXED:
        raise ValueError(
            f"slot_size {slot_size} cannot hold key_size {key_size}: a slot needs "
            f"key_size + {layout.SLOT_FIXED} bytes (key_size <= {slot_size - layout.SLOT_FIXED})"
        )
    if not layout.MIN_SEGMENT_BYTES <= max_seg <= layout.MAX_SEGMENT_LIMIT:
        raise ValueError(
            f"max_segment_bytes must be between {layout.MIN_SEGMENT_BYTES} and {layout.MAX_SEGMENT_LIMIT}"
        )


def create(path: str, heap_path: str, p: Params, mode: int) -> None:
    """Create generation 1 at ``path`` unless another process beat us to it."""
    lock = WriterLock(layout.lock_name(path), mode)
    try:
        with lock.hold():
            if os.path.exists(path):
                return
            rebuilder._remove(rebuilder.generation_files(path, heap_path, 1))
            tmp = f"{path}.new.{os.getpid()}"
            Generation.create(tmp, path, heap_path, p, 1, mode)
            os.rename(tmp, path)
    finally:
        lock.close()


def check_params(g: Generation, want: Params, max_size: int | None) -> None:
    have = g.params
    bad = [
        f"{name}={getattr(have, name)} (asked {getattr(want, name)})"
        for name in ("slot_size", "key_size", "max_segment_bytes")
        if getattr(have, name) != getattr(want, name)
    ]
    size_ok = have.size == want.size or (max_size is not None and want.size <= have.size <= max_size)
    if not size_ok:
        bad.append(f"size={have.size} (asked {want.size})")
    if bad:
        raise IncompatibleCacheError(
            f"{g.path!r} was created with " + ", ".join(bad) + "; open it with the same "
            "parameters, or with MmapCache.open(path) to adopt the stored ones"
        )


def secret_key(secret: bytes | str | None) -> bytes | None:
    """The MAC key of a ``secret`` (a str as its UTF-8 bytes), checked."""
    key = secret.encode() if isinstance(secret, str) else secret
    if key is not None and not (isinstance(key, bytes) and 1 <= len(key) <= 64):
        raise ValueError("secret must be 1 to 64 bytes (or a str of that many UTF-8 bytes)")
    return key


def check_files(path: str, heap_path: str, allow_symlink: bool, allow_foreign_owner: bool,
                allow_network_fs: bool | None) -> None:  # fmt: skip
    """The checks before a table's files are opened or made: parent
    directories, the index and lock file (symlinks, owners), the filesystem."""
    check_parent(path)
    check_parent(heap_path)
    for name in (path, layout.lock_name(path)):
        check_safe(name, allow_symlink=allow_symlink, allow_foreign_owner=allow_foreign_owner)
    check_network_fs(path, allow_network_fs)


def stored_params(p: str, options: dict[str, Any]) -> Params:
    """The parameters in the header of the existing table at ``p`` (opened
    with the checks ``options`` ask for), for ``MmapCache.open``."""
    if not os.path.exists(p):
        raise FileNotFoundError(2, "no mmcache table at this path", p)
    fd = open_checked(
        os.path.realpath(p) if options.get("allow_symlink") else p,
        os.O_RDONLY,
        "mmcache index",
        mode=options.get("mode", 0o600),
        foreign_ok=options.get("allow_foreign_owner", False),
    )
    try:
        head = os.pread(fd, layout.HEADER.size, 0)
    finally:
        os.close(fd)
    if len(head) < layout.HEADER.size:
        raise CorruptCacheError(f"{p!r} is too short to be an mmcache index")
    return read_header(head, p)[0]
