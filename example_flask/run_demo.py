"""Run the example Flask app under gunicorn with several workers and show that
they share one cache: a value one worker computed is a hit in the others.

Starts ``gunicorn -w 4`` on 127.0.0.1 (a free port chosen by the kernel),
asks ``/primes/<n>`` in bursts of concurrent requests until workers other than
the one that computed it have answered it from the cache, shows a session
counter that survives moving between workers, and always stops gunicorn.

    python example_flask/run_demo.py [--workers 4] [--n 20000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
LISTENING_RE = re.compile(r"Listening at: http://([\d.]+):(\d+)")
BOOTED_RE = re.compile(r"Booting worker with pid: (\d+)")


@contextlib.contextmanager
def running_server(cache_dir: str, workers: int = 4, timeout: float = 60.0) -> Iterator[dict[str, Any]]:
    """gunicorn serving ``app:app``; yields {"url", "worker_pids", "master"}; always stopped."""
    env = dict(os.environ, MMCACHE_FLASK_CACHE_DIR=cache_dir)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "gunicorn", "--chdir", str(HERE), "--workers", str(workers),
           "--bind", "127.0.0.1:0", "--log-level", "info", "--graceful-timeout", "5", "app:app"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, start_new_session=True,  # its own process group: killpg reaches every worker
    )  # fmt: skip
    info: dict[str, Any] = {"url": "", "worker_pids": set(), "master": proc.pid, "log": []}
    ready = threading.Event()

    def pump() -> None:  # read gunicorn's log so that its pipe never fills
        assert proc.stderr is not None
        for line in proc.stderr:
            info["log"].append(line.rstrip())
            if m := LISTENING_RE.search(line):
                info["url"] = f"http://{m.group(1)}:{m.group(2)}"
            if m := BOOTED_RE.search(line):
                info["worker_pids"].add(int(m.group(1)))
            if info["url"] and len(info["worker_pids"]) >= workers:
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        if not ready.wait(timeout) or proc.poll() is not None or not info["url"]:
            raise RuntimeError("gunicorn did not start:\n" + "\n".join(info["log"][-30:]))
        time.sleep(0.5)  # workers import the app after "Booting"
        yield info
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # stray workers, if any
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


def get(url: str, opener: urllib.request.OpenerDirector | None = None, method: str = "GET") -> Any:
    """One request on a new connection; the JSON body."""
    req = urllib.request.Request(url, method=method)
    with (opener or urllib.request.build_opener()).open(req, timeout=30) as r:  # noqa: S310 (local URL)
        return json.loads(r.read())


def run_demo(workers: int = 4, n: int = 20_000, cache_dir: str | None = None, timeout: float = 60.0,
             say: Any = print) -> dict[str, Any]:  # fmt: skip
    """The demo; returns a summary (for the test)."""
    with contextlib.ExitStack() as stack:
        if cache_dir is None:
            cache_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="mmcache-flask-"))
        srv = stack.enter_context(running_server(cache_dir, workers, timeout))
        say(f"gunicorn master {srv['master']}, workers {sorted(srv['worker_pids'])} at {srv['url']}")
        first = get(f"{srv['url']}/primes/{n}")
        say(f"first: count={first['count']} computed by pid {first['cached_by']} in {first['ms']} ms")
        shared: set[int] = set()
        deadline = time.monotonic() + timeout
        with ThreadPoolExecutor(8) as pool:
            while time.monotonic() < deadline and len(shared) < min(2, workers - 1):
                for r in pool.map(lambda _: get(f"{srv['url']}/primes/{n}"), range(8)):
                    assert r["cached_by"] == first["cached_by"] and r["count"] == first["count"]
                    if r["served_by"] != r["cached_by"]:
                        shared.add(r["served_by"])
        say(f"hits served by other workers: {sorted(shared)} (all got pid {first['cached_by']}'s value)")
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        visits = [get(f"{srv['url']}/visits", opener) for _ in range(12)]
        session_workers = {v["served_by"] for v in visits}
        say(f"session counter {[v['visits'] for v in visits]} across workers {sorted(session_workers)}")
        stats = get(f"{srv['url']}/stats")
        say(f"table: {stats['hits']} hits, {stats['misses']} misses, {stats['sets']} sets (all processes)")
        return {"first": first, "shared": sorted(shared), "worker_pids": sorted(srv["worker_pids"]),
                "master": srv["master"], "visits": [v["visits"] for v in visits],
                "session_workers": sorted(session_workers), "stats": stats}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--n", type=int, default=20_000)
    args = ap.parse_args()
    summary = run_demo(args.workers, args.n)
    ok = bool(summary["shared"]) and summary["visits"] == list(range(1, 13))
    print("OK: workers share one cache" if ok else "FAILED: no shared hit seen")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
