"""System checks for ``CACHES`` entries that use ``MmapCacheBackend``.

Registered by the app config (``"mmcache.contrib.django"`` in INSTALLED_APPS),
run by ``manage.py check`` and at server start. They catch at deploy time what
would otherwise fail (or silently misbehave) at the first cache write:

=============  ==============================================================
mmcache.E001   LOCATION is missing
mmcache.E002   an OPTIONS value is invalid
mmcache.W002   an OPTIONS key is unknown (a typo?)
mmcache.E003   LOCATION exists but is not a directory
mmcache.E004   LOCATION (or the directory it would be created in) is not writable
mmcache.W005   LOCATION's parent does not exist: it will be created (a typo?)
mmcache.E006   LOCATION is on a network filesystem (fcntl locks and shared maps
               are not coherent across hosts); ALLOW_NETWORK_FS=True accepts it
mmcache.W007   MAX_TABLE_SIZE is too small for MAX_ENTRIES: the table would
               evict on its own before Django's cull rule
mmcache.E008   aliases share a LOCATION but ask for different table parameters
mmcache.E009   the table's files belong to another user (e.g. created by a
               ``manage.py`` run as root): the core refuses to open them
=============  ==============================================================
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from mmcache._core.fs import is_network_fs, mount_type

from ._tables import KNOWN_OPTIONS, SHAPE_OPTIONS, TABLE_NAME, Settings, slots_for
from .backend import MmapCacheBackend


def mmcache_aliases() -> list[tuple[str, dict[str, Any]]]:
    """(alias, settings) of every CACHES entry whose BACKEND is this backend
    (or a subclass of it)."""
    found = []
    for alias, params in getattr(settings, "CACHES", {}).items():
        backend = params.get("BACKEND", "")
        try:
            cls = import_string(backend) if isinstance(backend, str) else backend
        except ImportError:
            continue  # Django reports unimportable backends itself
        if isinstance(cls, type) and issubclass(cls, MmapCacheBackend):
            found.append((alias, params))
    return found


@register(Tags.caches)
def check_mmcache_caches(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """Every check of the module docstring, for every mmcache alias."""
    messages: list[CheckMessage] = []
    shapes: dict[str, dict[str, tuple[Any, ...]]] = defaultdict(dict)
    for alias, params in mmcache_aliases():
        where = f"CACHES[{alias!r}]"
        location = params.get("LOCATION")
        if not location:
            messages.append(Error(f"{where} has no LOCATION.", hint="Set a directory.", id="mmcache.E001"))
            continue
        location = os.path.abspath(os.fspath(location))
        options = params.get("OPTIONS") or {}
        try:
            s = Settings.from_options(options)
        except ImproperlyConfigured as e:
            messages.append(Error(f"{where}: {e}", id="mmcache.E002"))
            continue
        unknown = sorted(set(options) - KNOWN_OPTIONS)
        if unknown:
            messages.append(
                Warning(
                    f"{where} has OPTIONS mmcache does not know: {', '.join(unknown)}.",
                    hint=f"Known options: {', '.join(sorted(KNOWN_OPTIONS))}.",
                    id="mmcache.W002",
                )
            )
        messages.extend(_check_location(where, location, s))
        messages.extend(_check_capacity(where, options, s))
        shapes[location][alias] = s.shape()
    messages.extend(_check_shared_locations(shapes))
    return messages


def _check_location(where: str, location: str, s: Settings) -> Iterable[CheckMessage]:
    if os.path.exists(location) and not os.path.isdir(location):
        yield Error(f"{where} LOCATION {location!r} is not a directory.", id="mmcache.E003")
        return
    uid = os.geteuid()
    existing = location
    while not os.path.isdir(existing):
        existing = os.path.dirname(existing)
    if existing != location and existing != os.path.dirname(location):
        yield Warning(
            f"{where} LOCATION's parent {os.path.dirname(location)!r} does not exist.",
            hint="It will be created on first use; check LOCATION for a typo.",
            id="mmcache.W005",
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "LOCATION" if existing == location else f"{existing!r}, where LOCATION would be created,"
        yield Error(
            f"{where} {what} is not writable by this user (uid {uid}).",
            hint="Every process that uses the cache needs to write there (the writer lock is a file).",
            id="mmcache.E004",
        )
    for name in (TABLE_NAME, TABLE_NAME + ".lock"):
        try:
            owner = os.stat(os.path.join(location, name)).st_uid
        except OSError:
            continue
        if owner != uid:
            yield Error(
                f"{where} {os.path.join(location, name)!r} belongs to uid {owner}, not to this user ({uid}).",
                hint="mmcache refuses files another user could have planted. Run every process that "
                "uses the cache as one user, or remove the files (a cache loses nothing that matters).",
                id="mmcache.E009",
            )
            break
    if s.allow_network_fs is not True:
        fstype = mount_type(os.path.join(location, TABLE_NAME))
        if is_network_fs(fstype):
            yield Error(
                f"{where} LOCATION {location!r} is on a {fstype} filesystem.",
                hint=(
                    "fcntl locks and shared memory maps are not coherent across hosts there. Use a "
                    "local disk or tmpfs, or set OPTIONS['ALLOW_NETWORK_FS'] = True if only one host "
                    "uses it."
                ),
                id="mmcache.E006",
            )


def _check_capacity(where: str, options: dict[str, Any], s: Settings) -> Iterable[CheckMessage]:
    if s.max_table_size is None:
        return
    try:
        max_entries = int(options.get("MAX_ENTRIES", 300))
        cull = int(options.get("CULL_FREQUENCY", 3))
    except (TypeError, ValueError):
        return  # Django falls back to its defaults; nothing useful to say
    need = slots_for(max_entries, cull)
    if s.max_table_size < need:
        yield Warning(
            f"{where} MAX_TABLE_SIZE={s.max_table_size} slots cannot hold MAX_ENTRIES={max_entries}.",
            hint=f"Use at least {need} (or leave MAX_TABLE_SIZE out: it is derived from MAX_ENTRIES).",
            id="mmcache.W007",
        )


def _check_shared_locations(shapes: dict[str, dict[str, tuple[Any, ...]]]) -> Iterable[CheckMessage]:
    for location, by_alias in shapes.items():
        if len(set(by_alias.values())) <= 1:
            continue
        detail = "; ".join(
            f"{alias!r}: "
            + ", ".join(f"{n}={v}" for n, v in zip(SHAPE_OPTIONS, shape, strict=True) if v is not None)
            for alias, shape in sorted(by_alias.items())
        )
        yield Error(
            f"CACHES aliases {', '.join(repr(a) for a in sorted(by_alias))} share LOCATION {location!r} "
            f"with different table parameters ({detail}).",
            hint="Aliases sharing a LOCATION share one table: give them the same TABLE_SIZE, "
            "SLOT_SIZE, KEY_SIZE and MAX_SEGMENT_BYTES, or separate LOCATIONs.",
            id="mmcache.E008",
        )
