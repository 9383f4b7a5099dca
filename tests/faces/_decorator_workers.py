"""Cached functions for the multi-process tests of ``@mmap_cached``.

Child processes import this module by name, so every process decorates the
same functions. The cache directory is ``$MMCACHE_DIR`` (read at the first
call); each function appends a line to ``$DECO_COUNT_FILE`` whenever it runs
(``O_APPEND`` writes of one short line are atomic), so a test counts calls
across processes by counting lines. ``main()`` is the child's entry point:
it waits for a start signal, calls one function and prints a JSON report.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from mmcache import mmap_cached

COUNT_ENV = "DECO_COUNT_FILE"


def count(tag: str) -> None:
    """Record one run of ``tag`` in the shared count file."""
    fd = os.open(os.environ[COUNT_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{tag} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


@mmap_cached
def combine(d: dict[str, int], s: set[str], arr: Any) -> list[Any]:
    """Equal dict / set / numpy arguments in any process give one entry."""
    count("combine")
    return [sorted(d.items()), sorted(s), int(arr.sum()), str(arr.dtype)]


@mmap_cached(lease_ttl=2.0)
def slow(x: int) -> int:
    """Half a second of work: the stampede test's function."""
    count("slow")
    time.sleep(0.5)
    return x * 10


@mmap_cached(lease_ttl=1.0, lock_timeout=30.0)
def killable(x: int) -> str:
    """Hangs in the process started with DECO_VICTIM=1 (which the test kills)."""
    count("killable")
    if os.environ.get("DECO_VICTIM"):
        time.sleep(60)
    return f"{x} from {os.getpid()}"


@mmap_cached(ttl=2.0, stale_ttl=60.0, lease_ttl=2.0)
def revalidated(x: int) -> int:
    """Each computation returns a new value (the time), after 0.3 s of work."""
    count("revalidated")
    time.sleep(0.3)
    return time.time_ns()


@mmap_cached(key=lambda n, make: n)
def build(n: int, make: Any) -> Any:
    """``make(n)``, keyed by ``n`` alone: ``make`` may be a class or lambda of
    the caller's ``__main__``, and a reader need not have it."""
    count("build")
    return make(n)


def _wait_for(path: str) -> None:
    while not os.path.exists(path):
        time.sleep(0.002)


def main() -> None:
    """``python -c "import _decorator_workers as w; w.main()" FUNC ARG [GO_FILE [SECONDS]]``.

    With GO_FILE, print "ready" and wait until it exists; then call (once, or
    repeatedly for SECONDS, timing each call) and print results and stats as JSON.
    """
    name, arg = sys.argv[1], int(sys.argv[2])
    fn = globals()[name]
    if len(sys.argv) > 3:
        print("ready", flush=True)
        _wait_for(sys.argv[3])
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    results, latencies = [], []
    t_end = time.monotonic() + seconds
    while True:
        t0 = time.monotonic()
        results.append(fn(arg))
        latencies.append(time.monotonic() - t0)
        if time.monotonic() >= t_end:
            break
        time.sleep(0.01)
    if seconds:
        time.sleep(0.5)  # let a background revalidation in this process finish
    print(json.dumps({"results": results, "latencies": latencies, "info": list(fn.cache_info())}))


if __name__ == "__main__":
    main()
