"""Reader threads against generation switches made by a writer thread of the
same process: a read of the old generation that is still going on when the
switch empties its heap's lists (Heap.close) must still answer (a value or
a miss), never raise. Real threads, one process, rebuilds by growth,
compaction and deletes; long keys (hashed slot keys) read too."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from mmcache import MmapCache

LONG = "L" * 200  # past key_size: a hashed slot key, whose full key is read from the heap


def _value(key: str, n: int) -> bytes:
    return f"{key}:{n}:".encode() + b"x" * (n % 50)


def test_reads_race_generation_switches_without_raising(tmp_path: Path) -> None:
    path = str(tmp_path / "t")
    writer = MmapCache(path, size=64, max_size=1 << 16)  # small: it grows, then compacts
    keys = [f"k{i}" for i in range(300)] + [f"{LONG}{i}" for i in range(40)]
    errors: list[BaseException] = []
    wrong: list[tuple[str, bytes]] = []
    stop = threading.Event()

    def check(k: str, got: bytes | memoryview | None) -> None:
        if got is not None and not bytes(got).startswith(f"{k}:".encode()):
            wrong.append((k, bytes(got)))

    def read() -> None:
        r = MmapCache(path)
        try:
            while not stop.is_set():
                for k in keys[::7]:
                    e = r.get_entry(k)
                    check(k, None if e is None else e.value)
                    check(k, r.get(k))
        except BaseException as exc:  # noqa: BLE001 - any exception is the failure
            errors.append(exc)

    def iterate() -> None:
        """Listings are generators over a snapshot: the table moves on between items."""
        r = MmapCache(path)
        try:
            while not stop.is_set():
                for k, v in r.items():
                    check(k, v)
                    time.sleep(0)
                for k, e in r.entries():
                    check(k, e.value)
                    time.sleep(0)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: the race needs a switch mid-read
    threads = [threading.Thread(target=fn) for fn in (read, read, iterate, iterate)]
    try:
        for t in threads:
            t.start()
        deadline, n = time.monotonic() + 5, 0
        while time.monotonic() < deadline and not errors:
            n += 1
            for k in keys:
                writer.put(k, _value(k, n))
            for k in keys[::3]:
                writer.delete(k)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        sys.setswitchinterval(old)
    assert errors == [], repr(errors[0])
    assert wrong == []
    assert writer.get_stats()["generation"] > 10  # the switches the readers raced did happen
