"""Remove the decorator tables no current ``@mmap_cached`` reads any more.

When the meaning of a key changes (``_identity.KEYSPACE``), functions move to
new table files and the old ones are left as they were: harmless (never
read) but taking disk. ``mmcache prune-decorator-tables [DIR]`` removes them.

A decorator table is recognised by its tag (the str key ``"mmcache:tag"``,
which only ``@mmap_cached`` writes) and pruned when the tag's key-space
marker is older than ``KEYSPACE`` (a tag with no marker is of scheme k1).
Anything else in the directory (tables of ``MmapCache`` users, unreadable
files, symlinks: the directory is untrusted) is left alone. The tag is read
again, and the files removed, under the table's writer lock; a program still
running the old version keeps its mapping (unlinking never truncates) and
only stops sharing its results.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass

from mmcache._core.fs import total_size
from mmcache.errors import MmcacheError
from mmcache.table import MmapCache

from ._identity import KEYSPACE
from ._table import TAG_KEY

__all__ = ["Pruned", "prune", "stale_reason"]

_TABLE_NAME = re.compile(r"^.+-[0-9a-f]{16}$")  # _location.table_path's names
_MARKER = re.compile(rb"^k(\d+)$")


@dataclass(frozen=True)
class Pruned:
    """One stale table: its index file, why, and the bytes of all its files."""

    path: str
    reason: str
    size: int


def stale_reason(tag: bytes | None) -> str | None:
    """Why a table with this tag is stale, or None if it is not (or is no
    decorator table: no tag)."""
    if not isinstance(tag, bytes):
        return None
    m = _MARKER.match(tag.split(b"|", 1)[0])
    scheme = int(m.group(1)) if m else 1
    if scheme < int(KEYSPACE[1:]):
        return f"key scheme k{scheme}, now {KEYSPACE}"
    return None


def _files(path: str) -> list[str]:
    """The index file and its companions (``path.heap.*``, ``.roster.*``, ``.lock``)."""
    directory, base = os.path.split(path)
    return [path] + sorted(
        os.path.join(directory, n) for n in os.listdir(directory) if n.startswith(base + ".")
    )


def _check(path: str, remove: bool) -> Pruned | None:
    try:
        t = MmapCache.open(path, eviction="fifo")
    except (MmcacheError, OSError, ValueError):
        return None  # no table, or one we cannot read: not ours to judge
    try:
        with t.transaction():
            reason = stale_reason(t.get(TAG_KEY))
            if reason is None:
                return None
            files = _files(path)
            size = total_size(files)
            if remove:
                for f in files:
                    try:
                        os.unlink(f)
                    except FileNotFoundError:
                        pass
            return Pruned(path, reason, size)
    finally:
        t.close()


def prune(directory: str, *, dry_run: bool = False) -> list[Pruned]:
    """Remove (or with ``dry_run`` only list) the stale decorator tables in ``directory``."""
    out = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if not _TABLE_NAME.match(entry.name) or not stat.S_ISREG(entry.stat(follow_symlinks=False).st_mode):
            continue
        found = _check(entry.path, remove=not dry_run)
        if found is not None:
            out.append(found)
    return out
