"""multiprocessing's ``spawn`` (macOS's default) and ``forkserver`` start
methods: a decorated function, a table and the Django backend shared with
the children they start (issue 21).

Each scenario runs in a fresh interpreter, as a user's script would: the
parent uses every face first, then starts children that each run threads.
``spawn`` children import everything anew (no ``os.register_at_fork``
handler runs); ``forkserver`` children are forked from a server that has
preloaded a module with a table open and written to, so they inherit its
maps, lock descriptor and stats stripe, which the at-fork handlers must make
their own (a shared ``flock`` descriptor would let two children hold the
writer lock at once: the counter below would lose increments).
"""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest
from support.helpers import ROOT, run_py

SCENARIO = """
    import json, multiprocessing as mp, os, sys

    method, d = sys.argv[1], sys.argv[2]
    os.environ["MMCACHE_DIR"] = os.path.join(d, "deco")
    os.environ["SPAWN_COUNT_FILE"] = os.path.join(d, "count")
    os.environ["SPAWN_SHARED_TABLE"] = os.path.join(d, "shared")
    django_dir = os.path.join(d, "django")

    if __name__ == "__main__":
        ctx = mp.get_context(method)
        if method == "forkserver":
            ctx.set_forkserver_preload(["_spawn_workers"])
        import _spawn_workers as W
        from django.core.cache import cache

        for k in range(10):
            W.square(k)
        W.SHARED.put("parent", b"here")
        W.configure_django(django_dir)
        cache.set("parent", "django here")
        cache.set("hits", 0)

        q = ctx.Queue()
        procs = [ctx.Process(target=W.decorator_job, args=(list(range(20)), q)) for _ in range(3)]
        procs += [ctx.Process(target=W.shared_table_job, args=(f"c{i}", 500, q)) for i in range(2)]
        procs += [ctx.Process(target=W.django_job, args=(django_dir, f"c{i}", 50, q)) for i in range(2)]
        for p in procs:
            p.start()
        reports = [q.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(60)
        runs = {}
        with open(os.environ["SPAWN_COUNT_FILE"]) as f:
            for line in f:
                k = line.split()[0]
                runs[k] = runs.get(k, 0) + 1
        print(json.dumps({
            "exitcodes": [p.exitcode for p in procs],
            "reports": reports,
            "runs": runs,
            "parent_pid": os.getpid(),
            "child_pids": [p.pid for p in procs],
            "counter": W.SHARED.get("counter").decode(),
            "shared_from": [W.SHARED.get(f"from-c{i}").decode() for i in range(2)],
            "deco_hits_here": [W.square(k)["square"] for k in range(20)],
            "django_hits": cache.get("hits"),
            "django_from": [cache.get(f"from-c{i}") for i in range(2)],
        }))
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_children_started_by_spawn_and_forkserver_share_every_face(tmp_path, method: str) -> None:  # type: ignore[no-untyped-def]
    if method not in mp.get_all_start_methods():
        pytest.skip(f"{method} is not available here")
    out = run_py(
        SCENARIO, method, str(tmp_path), env={"PYTHONPATH": f"{ROOT}:{ROOT / 'tests' / 'core'}"}, timeout=240
    )
    r = json.loads(out)
    assert r["exitcodes"] == [0] * 7, r
    pids = set(r["child_pids"])
    assert len(pids) == 7 and r["parent_pid"] not in pids
    by_kind: dict[str, list[object]] = {}
    for kind, pid, payload in r["reports"]:
        assert pid in pids
        by_kind.setdefault(kind, []).append(payload)
    # Decorator: every thread of every child got every right result; each key
    # was computed once in all (0..9 by the parent, 10..19 by one child).
    expected = [[k, k * k] for k in range(20)]
    assert by_kind["decorator"] == [[expected] * 3] * 3
    assert r["runs"] == {str(k): 1 for k in range(20)}, r["runs"]
    assert r["deco_hits_here"] == [k * k for k in range(20)]
    # A table opened before the children started: no lost update under the
    # writer lock (2 children x 2 threads x 500), each child's write seen here.
    assert by_kind["shared"] == ["here", "here"]
    assert r["counter"] == "2000"
    assert sorted(map(int, r["shared_from"])) == sorted(
        pid for kind, pid, _ in r["reports"] if kind == "shared"
    )
    # Django backend: the parent's value read in the children, theirs here,
    # incr atomic across processes and threads.
    assert by_kind["django"] == ["django here", "django here"]
    assert r["django_hits"] == 200
    assert [v["name"] for v in r["django_from"]] == ["c0", "c1"]
