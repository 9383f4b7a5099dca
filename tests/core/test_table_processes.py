"""MmapCache across real processes, threads and fork."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import threading
import time

import pytest
from _workers import mixed_worker, rebuild_worker, replay

from mmcache import MmapCache, _native

CTX = mp.get_context("spawn")


def _join_all(procs: list, timeout: float = 120) -> None:  # type: ignore[type-arg]
    for p in procs:
        p.join(timeout)
        assert p.exitcode == 0, f"{p.name} exited with {p.exitcode}"


def test_four_processes_overlapping_keys(path: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    MmapCache(path, size=4096).close()
    log = str(tmp_path / "log")
    out = CTX.Queue()
    procs = [CTX.Process(target=mixed_worker, args=(path, w, 3.0, log, 300, out)) for w in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    _join_all(procs)
    assert sum(r[3] for r in results) == 0, "a process read a value put under another key"
    assert sum(r[2] for r in results) > 100, "the workers should have hit each other's entries"
    with MmapCache(path, size=4096) as c:
        assert dict(c.list_items()) == {k: v for k, v in replay(log).items()}
        assert c.verify() == []
        st = c.get_stats()
        assert st["occupied_count"] == len(replay(log)) == len(c.list())


def test_rebuild_while_others_read_and_write(path: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    MmapCache(path, size=4096).close()
    log = str(tmp_path / "log")
    out = CTX.Queue()
    procs = [CTX.Process(target=mixed_worker, args=(path, w, 3.0, log, 300, out)) for w in range(3)]
    procs.append(CTX.Process(target=rebuild_worker, args=(path, 3.0, out)))
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    _join_all(procs)
    rebuilds = [r for r in results if r[0] == "rebuilds"][0]
    workers = [r for r in results if r[0] != "rebuilds"]
    assert rebuilds[1] >= 10
    assert sum(r[3] for r in workers) == 0
    # every worker followed the rebuilds by itself (no reopen by the test)
    assert all(r[4] > 1 for r in workers)
    with MmapCache(path, size=4096) as c:
        assert dict(c.list_items()) == replay(log), "an entry was lost or resurrected by a rebuild"
        assert c.verify() == []
        gen = c.get_stats()["generation"]
        assert gen >= rebuilds[1]
        files = sorted(os.listdir(os.path.dirname(path)))
        assert [f for f in files if ".roster." in f] == [f"table.roster.{gen}"]


def test_other_process_sees_puts_and_rebuilds(path: str) -> None:
    from support.helpers import run_py

    with MmapCache(path, size=1024) as c:
        c.put("from-parent", b"1")
        out = run_py(
            """
            import sys
            from mmcache import MmapCache
            c = MmapCache(sys.argv[1], size=1024)
            print(c.get("from-parent").decode())
            c.put("from-child", b"2")
            c.atomic_rebuild()
            c.put("after-rebuild", b"3")
            """,
            path,
        )
        assert out.strip() == "1"
        assert c.get("from-child") == b"2"
        # the parent's maps are retired; the next read follows the new files
        assert c.get("after-rebuild") == b"3"
        assert c.get_stats()["generation"] == 2


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_fork_parent_and_child_keep_working(path: str) -> None:
    c = MmapCache(path, size=1024)
    c.put("before", b"0")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: use the inherited handle, including the writer lock
        try:
            ok = c.get("before") == b"0"
            for i in range(200):
                c.put(f"child{i}", b"c")
            with c.transaction():
                c.put("child-tx", b"t")
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    for i in range(200):
        c.put(f"parent{i}", b"p")
    os.waitpid(pid, 0)
    assert os.read(r, 1) == b"1"
    assert all(c.get(f"child{i}") == b"c" and c.get(f"parent{i}") == b"p" for i in range(200))
    assert c.get("child-tx") == b"t"
    assert c.verify() == []
    c.close()


def test_fork_while_another_thread_holds_the_lock(path: str) -> None:
    c = MmapCache(path, size=1024)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with c.transaction():
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    pid = os.fork()
    if pid == 0:
        # the parent's thread holds the flock; the child must wait for it,
        # not deadlock on a copied thread lock nor share the parent's lock
        try:
            c.put("child", b"ok")
        finally:
            os._exit(0)
    release.set()
    t.join()
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert c.get("child") == b"ok"
    c.close()


def test_many_threads_share_one_table(path: str) -> None:
    c = MmapCache(path, size=8192)
    errors: list[str] = []

    def work(tid: int) -> None:
        for i in range(500):
            key = f"t{tid}-{i % 50}"
            c.put(key, f"{key}|{i}".encode())
            v = c.get(key)
            if v is None or not v.startswith(key.encode() + b"|"):
                errors.append(f"{key}: {v!r}")
            if i % 7 == 0:
                c.delete(key)
            if tid == 0 and i % 100 == 99:
                c.atomic_rebuild()

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert c.verify() == []
    c.close()


def test_many_handles_do_not_leak_descriptors(path: str) -> None:
    first = MmapCache(path, size=64)
    first.put("k", b"v")
    fds = len(os.listdir("/proc/self/fd"))
    handles = [MmapCache(path, size=64) for _ in range(500)]
    assert all(h.get("k") == b"v" for h in handles)
    assert len(os.listdir("/proc/self/fd")) == fds
    for h in handles:
        h.close()
    first.close()


def test_files_recreated_under_an_open_table_get_one_writer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Deleting a table's files and creating them anew while a process has
    them open: that process must lock the new lock file, not the deleted one."""
    import shutil
    import time

    d = tmp_path / "cache"
    d.mkdir()
    path = str(d / "t")
    a = MmapCache(path, size=1024)
    a.put("k", b"1")
    shutil.rmtree(d)
    d.mkdir()
    ready = CTX.Event()
    holder = CTX.Process(target=_hold_lock, args=(path, ready, 1.5))
    holder.start()
    assert ready.wait(60)
    time.sleep(0.3)  # past the staleness interval: a's next write looks again
    t0 = time.monotonic()
    a.put("k", b"2")
    waited = time.monotonic() - t0
    holder.join(60)
    assert waited > 0.5, "the write did not wait for the other process's lock"
    with MmapCache(path, size=1024) as b:
        assert b.get("k") == b"2" and b.get("held") == b"yes"
        assert b.verify() == []
    a.close()


def test_memoised_key_follows_files_recreated_by_another_process(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A key read many times (served from the memo) whose table is deleted
    and created anew elsewhere: no rebuild marks the old index retired, so
    only the staleness check can notice; after it the new value is read."""
    import shutil
    import time

    from support.helpers import run_py

    d = tmp_path / "cache"
    d.mkdir()
    path = str(d / "t")
    a = MmapCache(path, size=1024, staleness_check_interval=0.1)
    a.put("k", b"old")
    for _ in range(5):
        assert a.get("k") == b"old"
    if not _native.AVAILABLE:  # (the compiled get needs no memo)
        assert "k" in a._s.memo  # type: ignore[union-attr]
    shutil.rmtree(d)
    run_py(
        """
        import os, sys
        from mmcache import MmapCache
        os.makedirs(os.path.dirname(sys.argv[1]), exist_ok=True)
        with MmapCache(sys.argv[1], size=1024) as c:
            c.put("k", b"new")
        """,
        path,
    )
    time.sleep(0.25)  # past a's staleness interval
    assert a.get("k") == b"new"
    assert a.get("k") == b"new"  # and again, from a memo of the new files
    a.close()


def _hold_lock(path: str, ready, seconds: float) -> None:  # type: ignore[no-untyped-def]
    import time

    c = MmapCache(path, size=1024)
    with c.transaction():
        c.put("held", b"yes")
        ready.set()
        time.sleep(seconds)
    c.close()


def test_fork_after_the_directory_was_deleted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A table whose directory was removed must not break os.fork()."""
    import shutil

    d = tmp_path / "gone"
    d.mkdir()
    c = MmapCache(str(d / "t"), size=64)
    c.put("k", b"v")
    shutil.rmtree(d)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            ok = c.get("k") == b"v"  # reads still work from the maps
            try:
                c.put("k", b"w")  # a write says plainly that the files are gone
                ok = False
            except FileNotFoundError:
                pass
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0 and os.read(r, 1) == b"1"
    c.close()


def test_repeated_hits_follow_another_processes_writes(path: str) -> None:
    """A key read many times (and so memoised by this process) still sees
    every overwrite, delete, re-put, expiry and rebuild of another process."""
    from support.helpers import run_py

    def other(code: str) -> None:
        head = "import sys\nfrom mmcache import MmapCache\nc = MmapCache(sys.argv[1], size=1024)\n"
        run_py(head + code, path)

    with MmapCache(path, size=1024) as c:
        c.put("k", b"one")
        for _ in range(5):
            assert c.get("k") == b"one"
        other("c.put('k', b'two')")
        assert c.get("k") == b"two"
        other("c.delete('k')")
        assert c.get("k") is None
        other("c.put('k', b'two')")  # the same bytes again, in a new record
        assert c.get("k") == b"two"
        # delete, then fill the freed slot with other keys: the old slot may
        # now hold another key, the old record is still in the heap
        other("c.delete('k')\nfor i in range(300): c.put(f'other{i}', b'x' * i)")
        assert c.get("k") is None
        other("c.put('k', b'three', expire=0.3)")
        assert c.get("k") == b"three"
        time.sleep(0.4)
        assert c.get("k") is None
        other("c.put('k', b'four')\nc.atomic_rebuild()\nc.put('k', b'five')")
        assert c.get("k") == b"five"
        assert c.get_entry("k").value == b"five"  # type: ignore[union-attr]


def test_a_writer_waits_for_a_lock_held_long_by_another_process(path: str) -> None:
    """The writer lock spins briefly, then sleeps in flock: a put issued while
    another process holds the lock for much longer than the spin completes
    right after that process lets go, and not before."""
    import subprocess

    code = (
        "import sys, time\nfrom mmcache import MmapCache\n"
        "c = MmapCache(sys.argv[1], size=1024)\n"
        "with c.transaction():\n"
        "    c.put('held', b'1')\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(0.5)\n"
        "    c.put('inside', b'2')\n"
    )
    from support.helpers import ROOT

    with MmapCache(path, size=1024) as c:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        p = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert p.stdout is not None and p.stdout.readline().strip() == "locked"
            c.put("waiter", b"3")  # blocks until the transaction ends
            assert c.get("inside") == b"2"  # so the other process's last put came first
            assert c.get("waiter") == b"3" and c.get("held") == b"1"
        finally:
            p.wait(30)
        assert p.returncode == 0
