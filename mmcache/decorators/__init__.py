"""Memoisation on top of the shared table: ``@mmap_cached`` (see ``cached``)."""

from __future__ import annotations

from ._location import default_dir
from ._tagging import invalidate_tags
from .cached import CachedFunction, CacheInfo, mmap_cached

__all__ = ["CacheInfo", "CachedFunction", "default_dir", "invalidate_tags", "mmap_cached"]
