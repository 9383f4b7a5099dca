"""One "host" for the ``@mmap_cached(l2=...)`` tests: a process with its own L1.

Started as ``python -c "import _decorator_l2_workers as w; w.main()"`` with ``MMCACHE_DIR`` (this
host's L1 directory), ``DECO_L2_URL`` (the Redis server), ``DECO_COUNT_FILE``
(each run of a function appends ``name pid``) and ``DECO_SOURCE`` (a file
whose text goes into every result: the "external data" a ``refresh`` picks
up). It reads one JSON command per line on stdin and answers one JSON line:
``{"op": "call", "fn": "shared", "args": [1]}`` -> ``{"ok": ...}`` or
``{"error": [class names, most derived first], "message": "..."}``.

Ops: ``call``, ``refresh``, ``clear``, ``info`` (cache_info), ``l1_has``
(the key is in this host's table), ``wait_l1_gone`` / ``wait_value`` (poll,
return the seconds it took or None), ``status`` (this process's listener for
the function) and ``time_calls`` (median seconds per call).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from mmcache import MmapCache, mmap_cached
from mmcache.l2 import RedisL2
from mmcache.l2.subscriber import _live

URL = os.environ.get("DECO_L2_URL", "redis://127.0.0.1:1/0")


def count(tag: str) -> None:
    """Record one run of ``tag`` (``O_APPEND`` writes of one short line are atomic)."""
    fd = os.open(os.environ["DECO_COUNT_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{tag} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


def source() -> str:
    path = os.environ.get("DECO_SOURCE")
    return Path(path).read_text() if path and os.path.exists(path) else ""


@mmap_cached(l2=URL)
def shared(x: int) -> dict[str, Any]:
    """Given a URL; the result carries the external data and who computed it."""
    count("shared")
    return {"x": x, "source": source(), "by": os.getpid()}


@mmap_cached(l2=RedisL2.from_url(URL, "ignored", retry_after=0.2))
def logged(x: int) -> dict[str, Any]:
    """Given a RedisL2 (short fail-fast pause); Redis write failures are logged."""
    count("logged")
    return {"x": x, "source": source(), "by": os.getpid()}


@mmap_cached(l2=RedisL2.from_url(URL, "ignored", retry_after=0.2), l2_errors="raise")
def strict(x: int) -> dict[str, Any]:
    """Redis write failures raise (after the result is in L1)."""
    count("strict")
    return {"x": x, "source": source(), "by": os.getpid()}


_tables: dict[str, MmapCache] = {}


def _wait(pred: Any, timeout: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.001)
    return None


def _status(fn: Any) -> dict[str, Any]:
    fn.cache_info()  # opens the table, which starts the listener
    path = fn.cache_parameters()["path"]
    subs = [s for s in list(_live) if s.lock_path.startswith(path) and s.running]
    return {"leader": any(s.leader for s in subs), "connected": any(s.connected for s in subs)}


def run(op: str, fn: Any, args: list[Any]) -> Any:
    if op == "call":
        return fn(*args)
    if op == "refresh":
        return fn.refresh(*args)
    if op == "clear":
        return fn.cache_clear()
    if op == "info":
        return list(fn.cache_info())
    if op == "status":
        return _status(fn)
    fn.cache_info()  # opens (creates) the table
    path = fn.cache_parameters()["path"]
    table = _tables.get(path) or _tables.setdefault(path, MmapCache.open(path))  # a handle on this host's L1
    if op == "l1_has":
        return table.get(fn.__cache_key__(*args)) is not None
    if op == "wait_l1_gone":
        x, timeout = args
        return _wait(lambda: table.get(fn.__cache_key__(x)) is None, timeout)
    if op == "wait_value":
        x, field, want, timeout = args
        return _wait(lambda: fn(x)[field] == want, timeout)
    if op == "time_calls":
        x, n = args
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            reply = {"ok": run(cmd["op"], globals()[cmd["fn"]], cmd.get("args", []))}
        except Exception as e:
            reply = {"error": [c.__name__ for c in type(e).__mro__], "message": str(e)}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
