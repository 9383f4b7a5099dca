"""The expensive computation the views cache.

``prime_stats(n)`` takes a noticeable fraction of a second for large ``n``;
``computed_by`` in its result tells which worker process ran it. It is
memoised with ``@mmap_cached``: one table under the site's cache directory
that every worker shares, so a sieve run by one worker is a hit in all the
others (and survives restarts), beside the Django cache the views use.
"""

import os
import time

from django.conf import settings

from mmcache import mmap_cached

MAX_N = 3_000_000  # keep a single computation under a second or so


@mmap_cached(path=os.path.join(settings.CACHE_DIR, "functions"), ttl=600)
def prime_stats(n: int) -> dict[str, float | int]:
    """Count the primes below ``n`` with a plain sieve (slow on purpose)."""
    started = time.perf_counter()
    sieve = bytearray([1]) * max(n, 2)
    sieve[0:2] = b"\0\0"
    i = 2
    while i * i < n:
        if sieve[i]:
            for j in range(i * i, n, i):
                sieve[j] = 0
        i += 1
    count = sum(sieve[:n])
    largest = next((k for k in range(n - 1, 1, -1) if sieve[k]), 0)
    return {
        "n": n,
        "count": count,
        "largest": largest,
        "computed_by": os.getpid(),
        "compute_seconds": round(time.perf_counter() - started, 4),
    }
