"""One "host" for the tiered-cache tests: a process with its own Django settings.

Started as ``python tests/tiers/_tiered_host.py CONFIG_JSON`` where the config has
``redis`` (URL), ``l1`` (the L1 directory: processes of one "host" share
it) and ``options`` (the tiered alias's OPTIONS). It reads one JSON command
per line on stdin and answers one JSON line on stdout:
``{"op": "set", "args": ["k", 1]}`` -> ``{"ok": null}`` or
``{"error": ["ConnectionError", ..., "Exception", ...], "message": "..."}``
(the exception's class names, most derived first).

Ops: any method of the tiered cache (``get``, ``set``, ``delete``, ``incr``,
``add``, ``touch``, ``has_key``, ``l1_has_key``, ...), plus ``status``,
``wait_l1_gone`` (poll until a key leaves L1: the elapsed seconds, or None),
``wait_connected`` and ``incr_n`` (``n`` increments, their results).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import django
from django.conf import settings


def configure(conf: dict[str, Any]) -> None:
    settings.configure(
        CACHES={
            "redis": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": conf["redis"]},
            "default": {
                "BACKEND": "mmcache.contrib.django.TieredCacheBackend",
                "LOCATION": conf["l1"],
                "TIMEOUT": conf.get("timeout", 300),
                "OPTIONS": conf.get("options", {}),
            },
        },
        USE_TZ=True,
    )
    django.setup()


def status(cache: Any) -> dict[str, Any]:
    s = cache.get_stats()
    return {
        "pid": os.getpid(),
        "leader": s["subscriber_leader"],
        "connected": s["subscriber_connected"],
        "subscriptions": s["subscriptions"],
        "invalidated": s["invalidations_received"],
    }


def wait_for(pred: Any, timeout: float) -> float | None:
    """Seconds until ``pred()`` held (polled every ms), or None at the timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.001)
    return None


def run(cache: Any, op: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    if op == "status":
        return status(cache)
    if op == "wait_l1_gone":
        key, timeout = args
        return wait_for(lambda: not cache.l1_has_key(key), timeout)
    if op == "wait_connected":
        (timeout,) = args
        return wait_for(lambda: status(cache)["connected"], timeout)
    if op == "incr_n":
        key, n = args
        return [cache.incr(key) for _ in range(n)]
    return getattr(cache, op)(*args, **kwargs)


def main() -> None:
    configure(json.loads(sys.argv[1]))
    from django.core.cache import caches

    cache = caches["default"]
    cache.get("warm-up:connect")  # links to Redis and starts the subscriber thread
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            reply = {"ok": run(cache, cmd["op"], cmd.get("args", []), cmd.get("kwargs", {}))}
        except Exception as e:
            reply = {"error": [c.__name__ for c in type(e).__mro__], "message": str(e)}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
