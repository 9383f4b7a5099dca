"""``TieredCacheBackend`` for Django's own ``BaseCacheTests`` (run_suite.py).

That suite configures every alias with one BACKEND and a LOCATION, and no
other CACHES entry; this subclass supplies the L2 itself: a ``RedisCache``
on ``$MMCACHE_SUITE_REDIS_URL``, with L1_TIMEOUT 30 unless OPTIONS say
otherwise. Everything else is the real backend. Its first use waits for the
subscriber's first subscription (which empties L1), so that this clear does
not run while a test's tearDown removes the L1 directory; and ``clear()``
(the last call of every test, in BaseCacheTests.tearDown) stops this
process's subscribers, so that no invalidation arriving late touches a
directory that is being removed. Each test then starts with new ones.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from django.core.cache.backends.redis import RedisCache

from mmcache.contrib.django import _invalidation
from mmcache.contrib.django._invalidation import Link
from mmcache.contrib.django.tiered import TieredCacheBackend

_l2: RedisCache | None = None
_lock = threading.Lock()


class SuiteTieredBackend(TieredCacheBackend):
    def __init__(self, location: str, params: Mapping[str, Any]) -> None:
        options = {"L2": "suite-redis", "L1_TIMEOUT": 30, **(params.get("OPTIONS") or {})}
        super().__init__(location, {**params, "OPTIONS": options})

    def _linked(self) -> Link:
        link = super()._linked()
        deadline = time.monotonic() + 5
        while link.subscriber.subscriptions == 0 and time.monotonic() < deadline:
            time.sleep(0.002)
        return link

    def clear(self) -> None:
        super().clear()
        _invalidation.stop_all()

    def l2_cache(self) -> RedisCache:
        global _l2
        with _lock:
            if _l2 is None:
                _l2 = RedisCache(os.environ["MMCACHE_SUITE_REDIS_URL"], {})
            return _l2
