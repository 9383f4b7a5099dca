"""An example Flask app on mmcache: Flask-Caching and Flask-Session over
``mmcache.contrib.cachelib.MmapCache``, shared by every gunicorn worker.

    MMCACHE_FLASK_CACHE_DIR=/tmp/flask-cache gunicorn -w 4 --chdir example_flask app:app

- ``/primes/<n>``: a slow count of primes below n, memoised with
  ``@cache.cached``: the worker that computed it is named in the answer, so a
  hit served by another worker shows that the cache is shared.
- ``/visits``: a per-browser counter in a server-side session (Flask-Session).
- ``/tagged/<name>`` and ``/invalidate/<tag>``: tags (``set(..., tags=...)``).
- ``/stats``: the table's counters, summed over every process.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask, jsonify, session
from flask_caching import Cache
from flask_session import Session

from mmcache.contrib.cachelib import MmapCache

CACHE_DIR = os.environ.get("MMCACHE_FLASK_CACHE_DIR", "/tmp/mmcache-flask-example")

app = Flask(__name__)
app.config.update(
    # Flask-Caching calls an import path containing "cachelib" with CACHE_ARGS
    # and CACHE_OPTIONS as they are: the directory, then cachelib's options.
    CACHE_TYPE="mmcache.contrib.cachelib.MmapCache",
    CACHE_ARGS=[os.path.join(CACHE_DIR, "cache")],
    CACHE_OPTIONS={"threshold": 10_000},
    CACHE_DEFAULT_TIMEOUT=300,
    SESSION_TYPE="cachelib",
    SESSION_CACHELIB=MmapCache(os.path.join(CACHE_DIR, "sessions"), threshold=0, default_timeout=3600),
    SECRET_KEY=os.environ.get("MMCACHE_FLASK_SECRET", "example-only-not-secret"),
)
cache = Cache(app)
Session(app)


def count_primes(n: int) -> int:
    """Slow on purpose (a sieve would be too fast to show a cache's worth)."""
    return sum(all(k % d for d in range(2, int(k**0.5) + 1)) for k in range(2, n))


@app.get("/primes/<int:n>")
def primes(n: int) -> Any:
    started = time.perf_counter()
    result = _primes(n)
    return jsonify(result | {"served_by": os.getpid(), "ms": round((time.perf_counter() - started) * 1e3, 2)})


@cache.memoize()
def _primes(n: int) -> dict[str, Any]:
    return {"n": n, "count": count_primes(n), "cached_by": os.getpid()}


@app.get("/visits")
def visits() -> Any:
    session["visits"] = session.get("visits", 0) + 1
    return jsonify(visits=session["visits"], served_by=os.getpid())


@app.get("/tagged/<name>")
def tagged(name: str) -> Any:
    backend: MmapCache = cache.cache  # type: ignore[assignment]
    value = backend.get(f"tagged:{name}")
    if value is None:
        value = {"name": name, "made_by": os.getpid(), "at": time.time()}
        backend.set(f"tagged:{name}", value, tags=[f"group:{name[:1]}"])
    return jsonify(value | {"served_by": os.getpid()})


@app.post("/invalidate/<tag>")
def invalidate(tag: str) -> Any:
    backend: MmapCache = cache.cache  # type: ignore[assignment]
    return jsonify(invalidated=backend.invalidate_tags(tag))


@app.get("/stats")
def stats() -> Any:
    backend: MmapCache = cache.cache  # type: ignore[assignment]
    s = backend.table.get_stats()
    return jsonify({k: v for k, v in s.items() if isinstance(v, int | float | str)})
