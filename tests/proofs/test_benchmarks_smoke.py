"""The benchmark runner still runs (issue 7): two cheap suites in quick mode,
their result files and the breakdown chart. Nothing here is timed or
compared: speed is the benchmarks' business, not the tests'."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_quick_core_and_breakdown_write_their_results(tmp_path: Path) -> None:
    pytest.importorskip("diskcache")
    out = tmp_path / "results"
    only = "core,breakdown,native"
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--only", only, "--out", str(out)]
    r = subprocess.run([*cmd, "--tmp", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    core = json.loads((out / "core-quick.json").read_text())
    assert {row["workload"] for row in core["rows"] if row["peer"] == "mmcache"} >= {"get hit", "put"}
    native = json.loads((out / "native-quick.json").read_text())
    peers = {row["peer"] for row in native["rows"]}
    assert {"mmcache native", "mmcache pure"} <= peers, peers
    workloads = {row["workload"] for row in native["rows"]}
    expected = {"get hit, 1,000 hot keys", "get miss", "get hit, 1,000 entries", "face hit"}
    assert expected <= workloads, workloads
    assert {row["peer"] for row in native["rows"] if row["workload"] == "get miss"} >= {"diskcache"}
    faces = {row["peer"] for row in native["rows"] if row["workload"] == "face hit"}
    assert faces - {"django redis"} == {  # Django's RedisCache: where a redis-server runs
        "django mmcache", "django mmcache pure", "django locmem", "django filebased", "django diskcache",
        "decorator mmcache", "decorator mmcache pure", "decorator lru_cache",
    }  # fmt: skip
    profile = json.loads((out / "breakdown-quick.json").read_text())
    paths = {row["path"]: row for row in profile["rows"]}
    expected = {
        "get hit, small dict",
        "put overwrite, 100 B",
        "put overwrite, 10 KB",
        "decorator hit, dict result",
    }
    assert expected <= paths.keys()
    for row in paths.values():
        assert row["whole_ns"] > 0 and row["parts"] and all(ns >= 0 for ns in row["parts"].values()), row
        assert row["peer_ns"] is None or row["peer_ns"] > 0
    assert "### put overwrite, 100 B" in (out / "breakdown-quick.md").read_text()
    assert not list(tmp_path.glob("mmcache-bench-*")), "the runner left its stores behind"

    pytest.importorskip("matplotlib")
    from benchmarks import charts

    drawn = dict(charts.draw(["breakdown-quick"], out))
    png = out / "breakdown-quick.png"
    assert drawn == {png: None} and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
