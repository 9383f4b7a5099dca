"""OPTIONS of ``TieredCacheBackend``, validated in one place.

=============  ==============================================================
L2             alias of a ``django.core.cache.backends.redis.RedisCache`` in
               CACHES: the shared truth (required)
L1_TIMEOUT     seconds an entry may live in a host's L1 (default 10); the
               bound on staleness when invalidation messages are lost
L2_ERRORS      ``"raise"`` (default) or ``"log"``: what a write does when
               Redis is unreachable (reads never raise for that: a miss
               returns the default)
L2_RETRY       seconds after a connection error during which this process
               does not try Redis again (default 1.0; 0 = try every call)
CHANNEL        the pub/sub channel of invalidations (default
               ``"mmcache:invalidate:" + KEY_PREFIX``); every host sharing
               keys must use the same one
=============  ==============================================================

Besides these, the L1 table takes the options of ``MmapCacheBackend``:
``MAX_ENTRIES`` / ``CULL_FREQUENCY`` (Django's, applied to L1 only: Redis
has its own ``maxmemory`` policy), ``TABLE_SIZE``, ``MAX_TABLE_SIZE``,
``SLOT_SIZE``, ``KEY_SIZE``, ``MAX_SEGMENT_BYTES``, ``ALLOW_NETWORK_FS``,
``SIGN`` (L1 records signed with a key from SECRET_KEY: a pickle planted in
the L1 directory is never loaded).
Values cross Redis in the L2 alias's own serializer, so ``CODEC`` and
``PICKLE_PROTOCOL`` do not apply. Any other key is an error (a typo would
otherwise be ignored silently).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from ._tables import SHAPE_OPTIONS

TIER_OPTIONS = frozenset({"L2", "L1_TIMEOUT", "L2_ERRORS", "L2_RETRY", "CHANNEL"})
L1_OPTIONS = frozenset({*SHAPE_OPTIONS, "MAX_TABLE_SIZE", "ALLOW_NETWORK_FS", "SIGN"})
DJANGO_OPTIONS = frozenset({"MAX_ENTRIES", "CULL_FREQUENCY", "max_entries", "cull_frequency"})
DEFAULT_L1_TIMEOUT = 10.0
DEFAULT_L2_RETRY = 1.0
CHANNEL_PREFIX = "mmcache:invalidate:"


@dataclass(frozen=True)
class TieredOptions:
    """What the tier needs; ``l1_options`` go to the L1 table as they are."""

    l2_alias: str
    l1_timeout: float = DEFAULT_L1_TIMEOUT
    l2_errors: str = "raise"
    l2_retry: float = DEFAULT_L2_RETRY
    channel: str = CHANNEL_PREFIX
    l1_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, options: Mapping[str, Any], key_prefix: str) -> TieredOptions:
        """Validate ``OPTIONS``; ImproperlyConfigured names the bad entry."""
        unknown = set(options) - TIER_OPTIONS - L1_OPTIONS - DJANGO_OPTIONS
        if unknown:
            raise ImproperlyConfigured(
                f"TieredCacheBackend: unknown OPTIONS {sorted(unknown)}; "
                f"known: {sorted(TIER_OPTIONS | L1_OPTIONS | {'MAX_ENTRIES', 'CULL_FREQUENCY'})}"
            )
        alias = options.get("L2")
        if not isinstance(alias, str) or not alias:
            raise ImproperlyConfigured(
                "TieredCacheBackend needs OPTIONS['L2']: the alias of a RedisCache in CACHES"
            )
        errors = options.get("L2_ERRORS", "raise")
        if errors not in ("raise", "log"):
            raise ImproperlyConfigured(f"OPTIONS['L2_ERRORS'] must be 'raise' or 'log', not {errors!r}")
        channel = options.get("CHANNEL", CHANNEL_PREFIX + key_prefix)
        if not isinstance(channel, str) or not channel:
            raise ImproperlyConfigured(f"OPTIONS['CHANNEL'] must be a non-empty str, not {channel!r}")
        return cls(
            l2_alias=alias,
            l1_timeout=_seconds(options, "L1_TIMEOUT", DEFAULT_L1_TIMEOUT, positive=True),
            l2_errors=errors,
            l2_retry=_seconds(options, "L2_RETRY", DEFAULT_L2_RETRY, positive=False),
            channel=channel,
            l1_options={k: v for k, v in options.items() if k in L1_OPTIONS},
        )


def _seconds(options: Mapping[str, Any], name: str, default: float, *, positive: bool) -> float:
    value = options.get(name, default)
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or (value <= 0 if positive else value < 0) or value != value:
        what = "a number > 0" if positive else "a number >= 0"
        raise ImproperlyConfigured(f"OPTIONS[{name!r}] must be {what} (seconds), not {value!r}")
    return float(value)
