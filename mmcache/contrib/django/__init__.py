"""Django integration: a ``CACHES`` backend, system checks, a management command.

Use the backend with ``"BACKEND": "mmcache.contrib.django.MmapCacheBackend"``
and a directory as ``LOCATION``; add ``"mmcache.contrib.django"`` to
``INSTALLED_APPS`` for the system checks and ``manage.py mmcache``.
"""

from .backend import MmapCacheBackend

__all__ = ["MmapCacheBackend"]
