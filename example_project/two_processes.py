"""A two-process tour of mmcache: one process writes, another reads, no server.

    python example_project/two_processes.py

The parent creates a table in a temporary directory and starts a child
process that opens the same path. Each sees the other's puts at once,
expiry is seen by both, and a rebuild in one is followed by the other.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
import time

from mmcache import MmapCache


def child(path: str, ready: mp.Event, go: mp.Event) -> None:  # type: ignore[type-arg]
    c = MmapCache(path, size=4096)
    print(f"  [child {os.getpid()}] sees greeting = {c.get('greeting')!r}")
    c.put("from-child", f"hello from pid {os.getpid()}".encode())
    c.put("short-lived", b"gone soon", expire=0.2)
    ready.set()
    go.wait(10)
    print(f"  [child {os.getpid()}] after the parent's rebuild: {c.get('after-rebuild')!r}, "
          f"generation {c.get_stats()['generation']}")  # fmt: skip
    c.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "demo")
        c = MmapCache(path, size=4096)
        c.put("greeting", b"hello from the parent")
        ctx = mp.get_context("spawn")
        ready, go = ctx.Event(), ctx.Event()
        p = ctx.Process(target=child, args=(path, ready, go))
        p.start()
        ready.wait(30)
        print(f"[parent {os.getpid()}] sees from-child = {c.get('from-child')!r}")
        print(f"[parent] short-lived = {c.get('short-lived')!r}")
        time.sleep(0.25)
        print(f"[parent] short-lived after 0.25 s = {c.get('short-lived')!r} (expired for everyone)")
        c.atomic_rebuild(new_size=8192)
        c.put("after-rebuild", b"written into the new files")
        go.set()
        p.join(30)
        t0 = time.perf_counter()
        for _ in range(100_000):
            c.get("greeting")
        per = (time.perf_counter() - t0) / 100_000 * 1e6
        st = c.get_stats()
        shown = {k: st[k] for k in ("occupied_count", "hits", "misses", "sets", "rebuilds")}
        print(f"[parent] 100,000 gets took {per:.2f} us each; stats: {shown}")
        c.close()


if __name__ == "__main__":
    main()
