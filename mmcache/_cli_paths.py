"""Where the ``mmcache`` command finds a table: PATH is an index file, or a
Django cache's LOCATION directory, which holds its table under a fixed name.
Any other directory is refused with the names of the tables it holds."""

from __future__ import annotations

import errno
import os
import stat

from ._core import layout

# Where the Django backend keeps its table inside LOCATION: the same name as
# mmcache.contrib.django._tables.TABLE_NAME (not imported: Django is optional;
# tests/faces/test_cli_django.py checks that the two agree).
DJANGO_TABLE_NAME = "mmcache"
# Directory entries read (their first bytes) to name the tables in a directory.
_SCAN_LIMIT = 200


def resolve(path: str) -> tuple[str, bool]:
    """(index file, is a Django LOCATION) for what the user gave: an index
    file as is; a directory holding ``mmcache`` (a Django LOCATION) as that
    table. Any other directory is refused, naming the tables it holds."""
    if not stat.S_ISDIR(os.stat(path).st_mode):  # os.stat, unlike exists(), reports EACCES
        return path, False
    inner = os.path.join(path, DJANGO_TABLE_NAME)
    try:
        if stat.S_ISREG(os.lstat(inner).st_mode):
            return inner, True
    except FileNotFoundError:
        pass
    found = _tables_in(path)
    hint = f" (it holds {len(found)} tables: {', '.join(found[:5])}{', ...' if len(found) > 5 else ''})"
    raise IsADirectoryError(
        errno.EISDIR,
        "is a directory, not an mmcache table nor a Django LOCATION holding one" + (hint if found else ""),
        path,
    )


def _tables_in(directory: str) -> list[str]:
    """Names of the index files in ``directory`` (regular files that start
    with the index magic), sorted; at most _SCAN_LIMIT entries are read."""
    found = []
    with os.scandir(directory) as it:
        for n, entry in enumerate(it):
            if n >= _SCAN_LIMIT:
                break
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if os.pread(fd, len(layout.INDEX_MAGIC), 0) == layout.INDEX_MAGIC:
                    found.append(entry.name)
            except OSError:
                pass
            finally:
                os.close(fd)
    return sorted(found)
