"""``mmcache.contrib.cachelib.MmapCache`` beyond cachelib's mixins: shared
across processes and threads, atomic inc/add, threshold, tags, Flask-Caching
and Flask-Session, and the example Flask app under gunicorn with 4 workers."""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest
from support.helpers import run_py

from mmcache.contrib.cachelib import MmapCache

ROOT = Path(__file__).resolve().parents[2]

_INC_WORKER = """
import sys, threading
from mmcache.contrib.cachelib import MmapCache
c = MmapCache(sys.argv[1])
def work():
    for _ in range(200):
        c.inc("counter")
        c.add("once", sys.argv[2])
ts = [threading.Thread(target=work) for _ in range(3)]
[t.start() for t in ts]
[t.join() for t in ts]
"""


def test_inc_and_add_are_atomic_across_processes_and_threads(tmp_path: Path) -> None:
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", _INC_WORKER, str(tmp_path), f"p{i}"], env=env)
        for i in range(3)
    ]
    c = MmapCache(tmp_path)
    for _ in range(200):  # this process's thread takes part too
        c.inc("counter")
        c.add("once", "parent")
    assert all(p.wait(120) == 0 for p in procs)
    assert c.get("counter") == 4 * 200 + 3 * 2 * 200  # 3 procs x 3 threads x 200 = 1800, + 200
    assert c.get("once") in {"parent", "p0", "p1", "p2"}


def test_a_value_set_in_one_process_is_a_hit_in_another(tmp_path: Path) -> None:
    c = MmapCache(tmp_path, default_timeout=0)
    c.set("k", {"a": [1, 2]})
    out = run_py(
        """
        import sys
        from mmcache.contrib.cachelib import MmapCache
        c = MmapCache(sys.argv[1])
        print(c.get("k"), c.has("k"), c.has("nope"))
        c.set("from-child", 42)
        """,
        str(tmp_path),
    )
    assert out.split() == ["{'a':", "[1,", "2]}", "True", "False"]
    assert c.get("from-child") == 42


def test_timeouts_follow_cachelib(tmp_path: Path) -> None:
    c = MmapCache(tmp_path, default_timeout=1)
    c.set("default", 1)  # default_timeout: 1 s
    c.set("forever", 2, timeout=0)
    c.set("td", 3, timeout=dt.timedelta(seconds=1))
    c.set("gone", 4, timeout=-1)
    assert c.get("gone") is None and not c.has("gone")
    time.sleep(1.3)
    assert c.get("default") is None and c.get("td") is None
    assert c.get("forever") == 2


def test_inc_keeps_the_expiry_and_a_missing_key_counts_as_zero(tmp_path: Path) -> None:
    c = MmapCache(tmp_path)
    assert c.inc("n", 5) == 5 and c.dec("n", 2) == 3
    c.set("t", 10, timeout=1)
    assert c.inc("t") == 11
    time.sleep(1.3)
    assert c.get("t") is None


def test_threshold_caps_entries_expired_first(tmp_path: Path) -> None:
    c = MmapCache(tmp_path, threshold=10)
    for i in range(5):
        c.set(f"short{i}", i, timeout=1)
    time.sleep(1.2)
    for i in range(10):
        c.set(f"k{i}", i)
    assert len(c.table) <= 10
    assert all(c.get(f"k{i}") == i for i in range(10))  # the expired ones went, not these
    for i in range(10, 40):
        c.set(f"k{i}", i)
        assert len(c.table) <= 10
    assert c.get("k39") == 39


def test_bad_input_is_refused_and_stores_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        MmapCache(tmp_path, threshold=-1)
    c = MmapCache(tmp_path)
    with pytest.raises(TypeError):
        c.set(b"bytes-key", 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        c.set("k", 1, tags="oops")  # a lone str would be split into letters
    with pytest.raises(TypeError):
        c.set("lock", threading.Lock())  # unpicklable: cachelib's serializer lets TypeError out
    assert c.get("lock") is None and c.get("k") is None
    assert len(c.table) == 0


def test_tags_invalidate_across_processes(tmp_path: Path) -> None:
    c = MmapCache(tmp_path)
    c.set("a", 1, tags=["red"])
    c.set("b", 2, tags=["red", "blue"])
    c.set("c", 3, tags=["blue"])
    c.set("d", 4)
    run_py(
        """
        import sys
        from mmcache.contrib.cachelib import MmapCache
        c = MmapCache(sys.argv[1])
        assert c.get("a") == 1 and c.get("b") == 2
        assert c.invalidate_tags("red") == 1
        """,
        str(tmp_path),
    )
    assert c.get("a") is None and c.get("b") is None and not c.has("a")
    assert c.get("c") == 3 and c.get("d") == 4
    assert c.add("a", 10)  # a stale tagged entry does not block add
    assert c.get("a") == 10
    c.set("a", 11, tags=["red"])  # tagged again after the invalidation: a hit
    assert c.get("a") == 11


def test_flask_caching_and_flask_session_use_the_backend(tmp_path: Path) -> None:
    flask = pytest.importorskip("flask")
    from flask_caching import Cache
    from flask_session import Session

    app = flask.Flask("t")
    app.config.update(
        CACHE_TYPE="mmcache.contrib.cachelib.MmapCache",
        CACHE_ARGS=[str(tmp_path / "c")],
        CACHE_OPTIONS={"threshold": 100},
        SESSION_TYPE="cachelib",
        SESSION_CACHELIB=MmapCache(tmp_path / "s", threshold=0),
    )
    cache = Cache(app)
    Session(app)
    calls = []

    @app.get("/x")
    def x() -> str:
        flask.session["n"] = flask.session.get("n", 0) + 1
        return str(f(2)) + ":" + str(flask.session["n"])

    @cache.memoize()
    def f(a: int) -> int:
        calls.append(a)
        return a * 10

    assert isinstance(cache.cache, MmapCache)
    client = app.test_client()
    assert client.get("/x").text == "20:1"
    assert client.get("/x").text == "20:2"
    assert calls == [2]
    assert len(MmapCache(tmp_path / "s", threshold=0).table) == 1  # the session lives in our table


def _load_demo() -> ModuleType:
    demo = ROOT / "example_flask" / "run_demo.py"
    spec = importlib.util.spec_from_file_location("_mmcache_flask_demo", demo)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_example_flask_app_under_gunicorn_4_workers_shares_hits(tmp_path: Path) -> None:
    pytest.importorskip("gunicorn")
    demo = _load_demo()
    lines: list[str] = []
    s = demo.run_demo(workers=4, n=20_000, cache_dir=str(tmp_path), timeout=90, say=lines.append)
    assert len(s["worker_pids"]) == 4, lines
    assert s["shared"], lines  # hits served by workers other than the one that computed
    assert s["first"]["cached_by"] not in s["shared"]
    # the session follows the browser whichever worker answers (usually several)
    assert s["visits"] == list(range(1, 13)), lines
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in [*s["worker_pids"], s["master"]]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in [*s["worker_pids"], s["master"]]), "gunicorn was left running"


@pytest.mark.timeout(300)
def test_integration_benchmark_suite_runs(tmp_path: Path) -> None:
    """The benchmark suite still runs and writes its rows (nothing timed is asserted)."""
    import json
    import subprocess

    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--only", "integration", "--out", str(out)]
    r = subprocess.run([*cmd, "--tmp", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = json.loads((out / "integration-quick.json").read_text())["rows"]
    got = {(row["workload"], row["peer"]) for row in rows if row.get("median_ns")}
    assert {("get hit", "mmcache"), ("set", "mmcache"), ("set", "filesystem")} <= got
    assert {("aset", "inline"), ("aset", "sync_to_async"), ("aget hit", "inline")} <= got
    assert not list(tmp_path.glob("mmcache-bench-*")), "the runner left its stores behind"
