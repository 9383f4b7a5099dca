"""Two code versions of one function sharing its table (a rolling deploy):
neither empties the other's results, and abandoned versions are cleaned up
(``mmcache.decorators._versions``). Real processes, each a fresh start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmcache import MmapCache, mmap_cached
from mmcache.decorators import _versions
from mmcache.decorators._table import TAG_KEY
from mmcache.decorators._versions import VERSIONS_KEY

ROOT = Path(__file__).resolve().parents[2]

RELEASE = """
import json, os, sys, threading
from mmcache import mmap_cached

@mmap_cached(namespace="app")  # releases live in different directories: shared on purpose
def price(x):
    fd = os.open(os.environ["COUNT_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, b"x\\n")
    os.close(fd)
    return x * {factor}

def main():
    out = {{}}
    def work(xs):
        for x in xs:
            out[x] = price(x)
    threads = [threading.Thread(target=work, args=(range(i, 6, 2),)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps([out[x] for x in range(6)]))
"""


def _release(tmp_path: Path, name: str, factor: int) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "app.py").write_text(RELEASE.format(factor=factor))
    return d


def _run(release: Path, tmp_path: Path, grace: float | None = None) -> tuple[list[int], int]:
    """Start a process of ``release``; its results and how many it computed."""
    counts = tmp_path / "counts"
    before = len(counts.read_text().splitlines()) if counts.exists() else 0
    setup = "" if grace is None else f"from mmcache.decorators import _versions; _versions.GRACE = {grace}\n"
    env = {
        **os.environ,
        "PYTHONPATH": f"{release}{os.pathsep}{ROOT}",
        "MMCACHE_DIR": str(tmp_path / "cache"),
        "COUNT_FILE": str(counts),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    code = setup + "import app; app.main()"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    after = len(counts.read_text().splitlines()) if counts.exists() else 0
    return json.loads(proc.stdout), after - before


def test_two_versions_started_alternately_keep_their_hits(tmp_path: Path) -> None:
    """Before: each start of the other version emptied the table (6 misses a start)."""
    old, new = _release(tmp_path, "rel1", 10), _release(tmp_path, "rel2", 100)
    assert _run(old, tmp_path) == ([x * 10 for x in range(6)], 6)
    assert _run(new, tmp_path) == ([x * 100 for x in range(6)], 6)  # its own results, never the old
    for _ in range(2):  # worker restarts of both versions, interleaved
        assert _run(old, tmp_path) == ([x * 10 for x in range(6)], 0)
        assert _run(new, tmp_path) == ([x * 100 for x in range(6)], 0)


def test_an_abandoned_version_is_emptied_by_the_next_new_one(tmp_path: Path) -> None:
    v1, v2, v3 = (_release(tmp_path, f"rel{i}", f) for i, f in ((1, 10), (2, 100), (3, 1000)))
    assert _run(v1, tmp_path)[1] == 6
    assert _run(v2, tmp_path)[1] == 6  # v1 was live: kept
    time.sleep(0.6)
    # v1 and v2 unconfirmed for longer than GRACE: v3 empties the table
    assert _run(v3, tmp_path, grace=0.5) == ([x * 1000 for x in range(6)], 6)
    assert _run(v2, tmp_path)[1] == 6  # v2's results went with it
    assert _run(v3, tmp_path)[1] == 0  # and v3 kept its own


def _same_name(func):  # type: ignore[no-untyped-def]
    func.__qualname__ = func.__name__ = "versioned"
    return func


def test_more_than_max_live_versions_at_once_empties_the_table(tmp_path: Path) -> None:
    """A bound on what side-by-side versions pile up (a developer re-running edits)."""
    sizes = []
    for v in range(1, _versions.MAX_LIVE + 2):
        f = mmap_cached(path=tmp_path, version=v)(_same_name(lambda x, v=v: x * v))
        sizes.append(f.cache_info().currsize)
        assert f(1) == v and f(2) == 2 * v
    assert sizes == [0, 2, 4, 6, 0]


@pytest.mark.parametrize("record", [b"\xff\xfe", b"[1, 2]", b'{"k2|v=1": "soon"}', b"{" * 5000, b"9" * 70000])
def test_a_damaged_versions_record_is_no_record(tmp_path: Path, record: bytes) -> None:
    """Files are untrusted: a record that does not parse empties nothing and raises nothing."""
    f1 = mmap_cached(path=tmp_path, version=1)(_same_name(lambda x: x))
    assert f1(1) == 1
    path = f1.cache_parameters()["path"]
    from mmcache.decorators._table import close_all

    close_all()
    with MmapCache.open(path) as t:
        t.put(VERSIONS_KEY, record)
    f2 = mmap_cached(path=tmp_path, version=2)(_same_name(lambda x: -x))
    assert f2(1) == -1 and f2.cache_info().currsize == 2  # f1's result kept, f2's added
    with MmapCache.open(path) as t:
        assert set(_versions.load(t.get(VERSIONS_KEY))) == {"k2|v=2"}


def test_versions_record_is_bounded(tmp_path: Path) -> None:
    versions = {f"k2|v={i}": float(i) for i in range(100)}
    kept = _versions.load(_versions.dump(versions))
    assert len(kept) == _versions.MAX_RECORDED and min(kept.values()) == 100 - _versions.MAX_RECORDED


def _reopen(f: object) -> str:
    """Close this process's handles so the next call opens the table afresh; its path."""
    from mmcache.decorators._table import close_all

    close_all()
    return str(f.cache_parameters()["path"])  # type: ignore[attr-defined]


def test_a_record_lost_to_eviction_empties_nothing(tmp_path: Path) -> None:
    f1 = mmap_cached(path=tmp_path, version=1)(_same_name(lambda x: x))
    assert f1(1) == 1
    with MmapCache.open(_reopen(f1)) as t:
        assert t.delete(VERSIONS_KEY)  # as if evicted under max_entries pressure
    f2 = mmap_cached(path=tmp_path, version=2)(_same_name(lambda x: -x))
    assert f2(1) == -1 and f2.cache_info().currsize == 2


def test_tables_of_the_earlier_scheme(tmp_path: Path) -> None:
    """A bare tag and no record (written before versions were recorded): the
    same version keeps its results, another version empties it once."""
    f1 = mmap_cached(path=tmp_path, version=1)(_same_name(lambda x: x))
    assert f1(1) == 1
    path = _reopen(f1)
    with MmapCache.open(path) as t:
        t.delete(VERSIONS_KEY)
        t.put(TAG_KEY, b"k2|v=1")
    f1 = mmap_cached(path=tmp_path, version=1)(_same_name(lambda x: x))
    assert f1(1) == 1 and f1.cache_info().hits == 1  # its own: kept
    with MmapCache.open(_reopen(f1)) as t:
        t.delete(VERSIONS_KEY)
        t.put(TAG_KEY, b"k2|v=1")
    f2 = mmap_cached(path=tmp_path, version=2)(_same_name(lambda x: -x))
    assert f2.cache_info().currsize == 0  # another version's, of unknown age: emptied
    with MmapCache.open(path) as t:
        t.delete(VERSIONS_KEY)
        t.put(TAG_KEY, b"\xff\xfe not utf-8")  # untrusted: no error
    _reopen(f2)
    f3 = mmap_cached(path=tmp_path, version=3)(_same_name(lambda x: 3 * x))
    assert f3(1) == 3
