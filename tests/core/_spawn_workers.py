"""Workers for test_spawn.py: run in children started with ``spawn`` (macOS's
default start method) or ``forkserver``, which import this module by name.

``$SPAWN_COUNT_FILE``: every computation of ``square`` appends a line to it
(one short ``O_APPEND`` write is atomic), so the parent counts runs across
processes. ``$SPAWN_SHARED_TABLE``: if set, a table opened at import, so a
forkserver that preloads this module forks children that inherit it open
(the case ``os.register_at_fork`` handlers exist for).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from mmcache import MmapCache, mmap_cached

_shared_path = os.environ.get("SPAWN_SHARED_TABLE")
SHARED = MmapCache(_shared_path, size=1024) if _shared_path else None
if SHARED is not None:
    # Used, not just opened: the writer lock's descriptor, the maps and a
    # stats stripe are in use before any fork from this process.
    SHARED.put(f"imported-by-{os.getpid()}", b"1")
    SHARED.get("parent")


@mmap_cached
def square(x: int) -> dict[str, Any]:
    fd = os.open(os.environ["SPAWN_COUNT_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{x} {os.getpid()}\n".encode())
    finally:
        os.close(fd)
    return {"x": x, "square": x * x}


def _threads(n: int, fn: Any) -> list[Any]:
    """Run ``fn(i)`` in ``n`` threads at once; their results, or re-raise."""
    out: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            out[i] = fn(i)
        except BaseException as e:  # reported to the parent below
            errors.append(e)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    return out


def decorator_job(keys: list[int], queue: Any) -> None:
    """Three threads call ``square`` on every key; report what they got."""
    got = _threads(3, lambda i: [square(k) for k in (keys if i % 2 else reversed(keys))])
    queue.put(("decorator", os.getpid(), [sorted((r["x"], r["square"]) for r in g) for g in got]))


def shared_table_job(name: str, n: int, queue: Any) -> None:
    """Increment a counter in SHARED ``n`` times from each of two threads, each
    read-modify-write under the table's writer lock; put this child's key."""

    def bump(_: int) -> None:
        assert SHARED is not None
        for _ in range(n):
            with SHARED.transaction():
                SHARED.put("counter", str(int(SHARED.get("counter", b"0")) + 1).encode())

    _threads(2, bump)
    assert SHARED is not None
    SHARED.put(f"from-{name}", str(os.getpid()).encode())
    queue.put(("shared", os.getpid(), SHARED.get("parent", b"").decode()))


def configure_django(location: str) -> None:
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["mmcache.contrib.django"],
        CACHES={"default": {"BACKEND": "mmcache.contrib.django.MmapCacheBackend", "LOCATION": location}},
        USE_TZ=True,
    )
    django.setup()


def django_job(location: str, name: str, n: int, queue: Any) -> None:
    """Django's cache API in this child: read the parent's value, store our
    own, and ``incr`` a shared counter ``n`` times from each of two threads."""
    configure_django(location)
    from django.core.cache import cache

    cache.set(f"from-{name}", {"pid": os.getpid(), "name": name})
    _threads(2, lambda _: [cache.incr("hits") for _ in range(n)])
    queue.put(("django", os.getpid(), cache.get("parent")))
