"""Django integration: a ``CACHES`` backend, system checks, a management command.

Use the backend with ``"BACKEND": "mmcache.contrib.django.MmapCacheBackend"``
and a directory as ``LOCATION`` (or ``TieredCacheBackend`` to put that table
in front of a ``RedisCache`` alias shared by several hosts); add ``"mmcache.contrib.django"`` to
``INSTALLED_APPS`` for the system checks and ``manage.py mmcache``.
"""

from typing import Any

from .backend import MmapCacheBackend

__all__ = ["MmapCacheBackend", "TieredCacheBackend"]


def __getattr__(name: str) -> Any:
    """``TieredCacheBackend`` (mmcache as L1 in front of Redis) is imported on
    first use: it needs the ``redis`` package, the plain backend does not."""
    if name == "TieredCacheBackend":
        from .tiered import TieredCacheBackend

        return TieredCacheBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
