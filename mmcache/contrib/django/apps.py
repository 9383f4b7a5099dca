"""App config: add ``"mmcache.contrib.django"`` to INSTALLED_APPS for the
system checks (``checks.py``) and the ``manage.py mmcache`` command."""

from __future__ import annotations

from django.apps import AppConfig


class MmcacheConfig(AppConfig):
    name = "mmcache.contrib.django"
    label = "mmcache"
    verbose_name = "mmcache (shared memory-mapped cache)"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the checks)
