"""Worker functions for the multi-process tests (importable by spawned children).

Every value a worker writes names its key (``key|worker|seq``), so a reader
can tell a wrong value from a right one without knowing the interleaving.
Writes are logged to one shared O_APPEND file while the writer lock is held,
so the log's order is the table's commit order and can be replayed.
"""

from __future__ import annotations

import os
import random
import time


def _log(fd: int, key: str, value: bytes | None) -> None:
    os.write(fd, f"{key}\t{'-' if value is None else value.decode()}\n".encode())


def mixed_worker(path: str, wid: int, duration: float, logpath: str, nkeys: int, out) -> None:  # type: ignore[no-untyped-def]
    """Random get/put/delete on shared keys; reports (reads, hits, wrong values)."""
    from mmcache import MmapCache

    c = MmapCache(path, size=4096)
    rnd = random.Random(wid)
    fd = os.open(logpath, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    reads = hits = wrong = seq = 0
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        key = f"k{rnd.randrange(nkeys)}"
        r = rnd.random()
        if r < 0.6:
            v = c.get(key)
            reads += 1
            if v is not None:
                hits += 1
                if v.split(b"|")[0] != key.encode():
                    wrong += 1
        elif r < 0.9:
            seq += 1
            value = f"{key}|{wid}|{seq}|".encode() + b"x" * rnd.randrange(200)
            with c.transaction():
                c.put(key, value)
                _log(fd, key, value)
        else:
            with c.transaction():
                if c.delete(key):
                    _log(fd, key, None)
    os.close(fd)
    out.put((wid, reads, hits, wrong, c.get_stats()["generation"]))
    c.close()


def rebuild_worker(path: str, duration: float, out) -> None:  # type: ignore[no-untyped-def]
    """Rebuild the table over and over while others read and write."""
    from mmcache import MmapCache

    c = MmapCache(path, size=4096)
    n = 0
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        c.atomic_rebuild()
        n += 1
        time.sleep(0.02)
    out.put(("rebuilds", n, c.get_stats()["generation"]))
    c.close()


def replay(logpath: str) -> dict[str, bytes]:
    model: dict[str, bytes] = {}
    with open(logpath, "rb") as f:
        for line in f:
            key, _, value = line.rstrip(b"\n").partition(b"\t")
            if value == b"-":
                model.pop(key.decode(), None)
            else:
                model[key.decode()] = value
    return model


def churn_worker(path: str, wid: int, duration: float, logpath: str, out, **opts) -> None:  # type: ignore[no-untyped-def]
    """Writes and reads its own keys (logged) under eviction pressure."""
    from mmcache import MmapCache

    c = MmapCache(path, size=4096, **opts)
    rnd = random.Random(wid)
    fd = os.open(logpath, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    wrong = seq = 0
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        key = f"w{wid}k{rnd.randrange(400)}"
        if rnd.random() < 0.5:
            v = c.get(key)
            if v is not None and v.split(b"|")[0] != key.encode():
                wrong += 1
        else:
            seq += 1
            value = f"{key}|{seq}|".encode() + b"v" * rnd.randrange(2000)
            with c.transaction():
                c.put(key, value)
                _log(fd, key, value)
    os.close(fd)
    out.put((wid, wrong))
    c.close()


def disk_watcher(path: str, stop, max_bytes: int, out) -> None:  # type: ignore[no-untyped-def]
    """Samples the table's heap files on disk and its live bytes until ``stop``."""
    from mmcache import MmapCache

    c = MmapCache(path, size=4096, max_bytes=max_bytes)
    d = os.path.dirname(path)
    worst_disk = worst_live = samples = 0
    while not stop.is_set():
        disk = 0
        for name in os.listdir(d):
            try:
                st = os.stat(os.path.join(d, name))
            except FileNotFoundError:
                continue  # unlinked by a rebuild between listdir and stat
            if ".heap." in name:
                disk += st.st_blocks * 512
        live = c.get_stats()["heap_live_bytes"]
        worst_disk, worst_live = max(worst_disk, disk), max(worst_live, live)
        samples += 1
        time.sleep(0.005)
    out.put((worst_disk, worst_live, samples))
    c.close()


def expiry_reader(path: str, ready, go, out) -> None:  # type: ignore[no-untyped-def]
    """Reads expiring keys right after the parent put them, and 0.3 s later."""
    from mmcache import MmapCache

    c = MmapCache(path, size=1024)
    ready.set()
    go.wait(60)
    first = [c.get("short"), c.get("long"), c.get("never")]
    time.sleep(0.3)
    later = [c.get("short"), c.get("long"), c.get("never"), "short" in c]
    out.put((first, later))
    c.close()
