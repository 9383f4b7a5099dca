"""The Django backend's async methods: inline when they cannot block, a
thread only when the writer lock is busy (held by another process or thread),
with the event loop free meanwhile. Which thread ran an operation is seen by
a KEY_FUNCTION that records it (Django calls it for every operation)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django", reason="Django is not installed")

from support.helpers import configure_django, read_reply  # noqa: E402

configure_django()

from mmcache.contrib.django import MmapCacheBackend  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
_seen: list[int] = []


def recording_key(key: str, key_prefix: str, version: Any) -> str:
    """Django's default key rule, noting the thread each call runs on."""
    _seen.append(threading.get_ident())
    return f"{key_prefix}:{version}:{key}"


def _backend(loc: str) -> MmapCacheBackend:
    return MmapCacheBackend(loc, {"KEY_FUNCTION": recording_key, "OPTIONS": {"MAX_ENTRIES": 10_000}})


def test_every_async_method_runs_inline_when_the_lock_is_free(tmp_path: Path) -> None:
    c = _backend(str(tmp_path))
    c.set("warm", 0)  # the table is opened (files created) outside the timed part

    async def main() -> tuple[int, dict[str, Any]]:
        got: dict[str, Any] = {}
        await c.aset("a", 1)
        got["aadd"] = await c.aadd("b", 2)
        await c.aset_many({"c": 3, "d": 4})
        got["aincr"] = await c.aincr("a", 10)
        got["adecr"] = await c.adecr("a", 1)
        got["atouch"] = await c.atouch("b", 100)
        got["aincr_version"] = await c.aincr_version("c")
        got["adelete"] = await c.adelete("d")
        await c.adelete_many(["b"])
        await c.aset("t", 1, tags=["grp"])
        got["ainvalidate_tags"] = await c.ainvalidate_tags("grp")
        got["aget"] = await c.aget("a")
        got["aget_many"] = await c.aget_many(["a", "c"], version=2)
        got["ahas_key"] = await c.ahas_key("t")
        got["aget_or_set"] = await c.aget_or_set("e", 5)
        return threading.get_ident(), got

    _seen.clear()
    loop_thread, got = asyncio.run(main())
    assert got == {
        "aadd": True, "aincr": 11, "adecr": 10, "atouch": True, "aincr_version": 2, "adelete": True,
        "ainvalidate_tags": 1, "aget": 10, "aget_many": {"c": 3}, "ahas_key": False, "aget_or_set": 5,
    }  # fmt: skip
    assert _seen and set(_seen) == {loop_thread}, "an async method hopped to a thread with the lock free"


_HOLDER = """
import sys
from mmcache import MmapCache
t = MmapCache.open(sys.argv[1])
with t.transaction():
    print('{"held": true}', flush=True)
    sys.stdin.readline()
print('{"released": true}', flush=True)
"""


@pytest.mark.timeout(120)
def test_a_write_hops_to_a_thread_when_another_process_holds_the_lock(tmp_path: Path) -> None:
    loc = str(tmp_path)
    c = _backend(loc)
    c.set("x", "old")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, os.path.join(loc, "mmcache")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert read_reply(holder, 60) == {"held": True}

        async def main() -> tuple[int, int, Any, Any]:
            loop_thread = threading.get_ident()
            write = asyncio.ensure_future(c.aset("x", "new"))
            ticks = 0
            while ticks < 20:  # the loop keeps running while the write waits for the lock
                await asyncio.sleep(0.01)
                ticks += 1
                assert not write.done(), "the write did not wait for the other process's lock"
            during = await c.aget("x")  # reads never wait: inline, the old value
            assert holder.stdin is not None
            holder.stdin.write("go\n")
            holder.stdin.flush()
            await asyncio.wait_for(write, 60)
            return loop_thread, ticks, during, await c.aget("x")

        _seen.clear()
        loop_thread, ticks, during, after = asyncio.run(main())
        assert ticks == 20 and during == "old" and after == "new"
        set_thread, read_thread, read_after = _seen[0], _seen[1], _seen[2]
        assert set_thread != loop_thread  # aset ran in a thread...
        assert read_thread == loop_thread and read_after == loop_thread  # ...the reads inline
        assert read_reply(holder, 60) == {"released": True}
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(30)


@pytest.mark.timeout(120)
def test_a_write_hops_when_another_thread_of_this_process_holds_the_lock(tmp_path: Path) -> None:
    c = _backend(str(tmp_path))
    c.set("n", 0)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with c.table.transaction():
            held.set()
            release.wait(60)

    th = threading.Thread(target=hold)
    th.start()
    assert held.wait(30)

    async def main() -> tuple[int, Any]:
        incr = asyncio.ensure_future(c.aincr("n", 5))
        await asyncio.sleep(0.05)
        assert not incr.done()
        release.set()
        return threading.get_ident(), await asyncio.wait_for(incr, 60)

    _seen.clear()
    try:
        loop_thread, value = asyncio.run(main())
    finally:
        release.set()
        th.join(30)
    assert value == 5 and c.get("n") == 5
    assert _seen[0] != loop_thread
