"""Views of the example site.

- ``/primes/<n>/``  JSON, cached with the low-level API (``cache.get`` / ``cache.add``)
- ``/report/<n>/``  HTML, cached whole with ``@cache_page``
- ``/stats/``       HTML: the cache's shared counters and this worker's pid
- ``/stats.json``   the same as JSON

Both cached views call ``prime_stats``, the expensive part.
"""

import os
import time
from typing import Any

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import cache_page

from .compute import MAX_N, prime_stats


def index(request: HttpRequest) -> HttpResponse:
    return render(request, "demo/index.html", {"pid": os.getpid()})


def primes(request: HttpRequest, n: int) -> JsonResponse:
    """The low-level API: look up, compute on a miss, ``add`` (first writer wins)."""
    n = min(n, MAX_N)
    key = f"primes:{n}"
    started = time.perf_counter()
    payload = cache.get(key)
    hit = payload is not None
    if not hit:
        payload = {**prime_stats(n), "cached_by": os.getpid(), "cached_at": time.time()}
        cache.add(key, payload)
        payload = cache.get(key, payload)  # another worker may have added it first
    return JsonResponse(
        {
            **payload,
            "cache": "hit" if hit else "miss",
            "served_by": os.getpid(),
            "ms": round((time.perf_counter() - started) * 1000, 3),
        }
    )


@cache_page(60)
def report(request: HttpRequest, n: int) -> HttpResponse:
    """The whole page is cached: a hit in any worker shows who rendered it."""
    n = min(n, MAX_N)
    return render(
        request,
        "demo/report.html",
        {"stats": prime_stats(n), "rendered_by": os.getpid(), "rendered_at": time.strftime("%H:%M:%S")},
    )


def _stats() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "django_cache": cache.get_stats(),  # type: ignore[attr-defined]
        "prime_stats": prime_stats.cache_info()._asdict(),  # this worker's view of @mmap_cached
    }


def stats(request: HttpRequest) -> HttpResponse:
    data = _stats()
    return render(
        request,
        "demo/stats.html",
        {
            "pid": data["pid"],
            "backend": sorted(data["django_cache"].items()),
            "memo": sorted(data["prime_stats"].items()),
        },
    )


def stats_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_stats(), json_dumps_params={"default": str})
