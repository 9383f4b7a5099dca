"""Run the example site under gunicorn with several workers and show that they
share one cache.

    python example_project/run_demo.py [--workers 4] [--n 1000000] [--timeout 60]

Starts ``gunicorn -w 4`` on 127.0.0.1 (a free port chosen by the kernel), with
the cache in a fresh temporary directory, then:

1. asks one worker for ``/primes/<n>/``: a miss, computed and cached there;
2. sends bursts of concurrent requests until other workers answer: each one
   is a hit on the value the first worker stored (``cached_by`` != ``served_by``);
3. does the same for ``/report/<n>/`` (a ``cache_page`` view);
4. stops the server and prints the table's shared counters. Each worker
   adds its counts into the table now and then (at most every 0.25 s, when
   it next uses the cache) and at exit, so they are read once every worker
   has exited: they then include every request shown above.

The server is stopped in every case (error, Ctrl-C, SIGTERM), and the exit
status is 0 only if a hit across workers was seen. ``run_demo()`` is the same
as a function, for tests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
LISTENING_RE = re.compile(r"Listening at: http://([\d.]+):(\d+)")
BOOTED_RE = re.compile(r"Booting worker with pid: (\d+)")
RENDERED_BY_RE = re.compile(r'id="rendered-by">(\d+)<')
COMPUTED_BY_RE = re.compile(r'id="computed-by">(\d+)<')


class DemoError(RuntimeError):
    """The server did not start, or did not answer in time."""


@dataclass
class Server:
    """A running gunicorn master and what its log told us."""

    proc: subprocess.Popen[str]
    url: str = ""
    worker_pids: set[int] = field(default_factory=set)
    log: list[str] = field(default_factory=list)
    _lines: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def read_log(self) -> None:
        """Pump gunicorn's stderr (in a thread) so that its pipe never fills."""
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))
            self._lines.put(line)
        self._lines.put(None)

    def wait_ready(self, workers: int, deadline: float) -> None:
        """Block until gunicorn listens and has booted ``workers`` workers."""
        while not (self.url and len(self.worker_pids) >= workers):
            left = deadline - time.monotonic()
            if left <= 0:
                raise DemoError("gunicorn did not start in time:\n" + "\n".join(self.log[-30:]))
            try:
                line = self._lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                raise DemoError(f"gunicorn exited ({self.proc.poll()}):\n" + "\n".join(self.log[-30:]))
            if m := LISTENING_RE.search(line):
                self.url = f"http://{m.group(1)}:{m.group(2)}"
            if m := BOOTED_RE.search(line):
                self.worker_pids.add(int(m.group(1)))

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the master (it stops its workers), then SIGKILL the group."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stray workers, if any
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@contextlib.contextmanager
def running_server(cache_dir: str, workers: int = 4, timeout: float = 60.0) -> Iterator[Server]:
    """Start the example site under gunicorn; always stop it on exit."""
    env = dict(os.environ)
    env["MMCACHE_EXAMPLE_CACHE_DIR"] = cache_dir
    env["DJANGO_SETTINGS_MODULE"] = "mysite.settings"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    cmd = [
        sys.executable, "-m", "gunicorn",
        "--chdir", str(HERE),
        "--workers", str(workers),
        "--bind", "127.0.0.1:0",  # the kernel picks a free port; gunicorn logs it
        "--log-level", "info",
        "--timeout", "60",
        "--graceful-timeout", "5",
        "mysite.wsgi:application",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, start_new_session=True,  # its own process group: killpg reaches every worker
    )  # fmt: skip
    server = Server(proc)
    try:
        threading.Thread(target=server.read_log, name="gunicorn-log", daemon=True).start()
        server.wait_ready(workers, time.monotonic() + timeout)
        yield server
    finally:
        server.stop()


def fetch(url: str, timeout: float = 30.0) -> tuple[int, dict[str, str], str]:
    """GET ``url`` on a new connection: (status, headers, body)."""
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (local URL)
        return r.status, dict(r.headers.items()), r.read().decode()


def _bursts(call: Callable[[], Any], done: Callable[[list[Any]], bool], deadline: float) -> list[Any]:
    """Concurrent requests in bursts of 8 (so that busy workers leave the next
    connection to another one) until ``done(results)`` or the deadline."""
    results: list[Any] = []
    with ThreadPoolExecutor(8) as pool:
        while time.monotonic() < deadline:
            results.extend(pool.map(lambda _: call(), range(8)))
            if done(results):
                break
    return results


def _line(n: int, r: dict[str, Any]) -> str:
    return (
        f"GET /primes/{n}/  {r['cache']:<4}  count={r['count']}  "
        f"cached by pid {r['cached_by']}, served by pid {r['served_by']} ({r['ms']} ms)"
    )


def run_demo(workers: int = 4, n: int = 1_000_000, timeout: float = 60.0,
             cache_dir: str | None = None, say: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """Start the site, show cross-worker hits, stop it. Returns what was seen."""
    owned = cache_dir is None
    cache_dir = cache_dir or tempfile.mkdtemp(prefix="mmcache-demo-")
    deadline = time.monotonic() + timeout
    summary: dict[str, Any] = {"cache_dir": cache_dir}
    try:
        with running_server(cache_dir, workers, timeout) as srv:
            say(f"gunicorn at {srv.url} with {workers} workers: pids {sorted(srv.worker_pids)}")
            say(f"cache LOCATION: {cache_dir}")
            summary.update(url=srv.url, worker_pids=sorted(srv.worker_pids))

            # 1. one worker computes and caches the value
            _, _, body = fetch(f"{srv.url}/primes/{n}/")
            first = json.loads(body)
            say(_line(n, first))

            # 2. the other workers hit it
            def get_primes() -> dict[str, Any]:
                return json.loads(fetch(f"{srv.url}/primes/{n}/")[2])

            def other_workers_hit(rs: list[dict[str, Any]]) -> bool:
                return len({r["served_by"] for r in rs if r["served_by"] != r["cached_by"]}) >= min(
                    2, workers - 1
                )

            replies = _bursts(get_primes, other_workers_hit, deadline)
            cross = [r for r in replies if r["cache"] == "hit" and r["served_by"] != r["cached_by"]]
            shown: set[int] = set()
            for r in cross:
                if r["served_by"] not in shown:
                    shown.add(r["served_by"])
                    say(_line(n, r))
            served = {r["served_by"] for r in replies} | {first["served_by"]}
            summary.update(
                first=first,
                cross_worker_hits=len(cross),
                workers_that_served=sorted(served),
                workers_with_shared_hit=sorted(shown),
            )

            # 3. a cache_page view: the page rendered by one worker is served by the others
            def get_report() -> tuple[int, int]:
                _, headers, page = fetch(f"{srv.url}/report/{n}/")
                m = RENDERED_BY_RE.search(page)
                return (int(m.group(1)) if m else -1), int(headers.get("X-Served-By", -1))

            author, _ = get_report()
            _, _, page = fetch(f"{srv.url}/report/{n}/")
            m = COMPUTED_BY_RE.search(page)
            sieve_pid = int(m.group(1)) if m else -1
            say(f"GET /report/{n}/  prime_stats({n}) computed by pid {sieve_pid} "
                f"(@mmap_cached: {'shared with' if sieve_pid != author else 'computed in'} pid {author}, "
                "which rendered the page)")  # fmt: skip
            pages = _bursts(get_report, lambda ps: any(b != author for _, b in ps), deadline)
            by_author = sorted({b for a, b in pages if a == author and b != author})
            say(f"GET /report/{n}/  rendered by pid {author}, then served from the cache "
                f"by pids {by_author}")  # fmt: skip
            summary.update(report_rendered_by=author, report_served_by_others=by_author)
            # replies that were cache hits: /primes/ hits, and report pages
            # with the author's pid (after its first render, each came from the cache)
            seen = sum(r["cache"] == "hit" for r in replies) + 1 + sum(a == author for a, _ in pages)
        # 4. the counters every worker added to, read after they all exited
        st = table_stats(cache_dir)
        say(f"shared stats after the workers exited: entries={st['occupied_count']} sets={st['sets']} "
            f"hits={st['hits']} misses={st['misses']} "
            f"(among the hits: the {seen} cached replies this demo got)")  # fmt: skip
        summary.update(stats=st, cached_replies_seen=seen)
    finally:
        if owned:
            shutil.rmtree(cache_dir, ignore_errors=True)
    summary["shared"] = bool(summary.get("workers_with_shared_hit"))
    return summary


def table_stats(cache_dir: str) -> dict[str, Any]:
    """The Django cache's shared counters, read from its table (LOCATION/mmcache)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))  # run from a checkout: mmcache beside this directory
    from mmcache import MmapCache

    with MmapCache.open(os.path.join(cache_dir, "django", "mmcache"), eviction="fifo") as c:
        return c.get_stats()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--n", type=int, default=1_000_000, help="primes below n (the expensive part)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for the whole demo")
    args = parser.parse_args(argv)

    def on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally blocks: gunicorn is stopped

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        summary = run_demo(args.workers, args.n, args.timeout)
    except DemoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if summary["shared"]:
        print(f"OK: a value cached by pid {summary['first']['cached_by']} was a hit in "
              f"{len(summary['workers_with_shared_hit'])} other worker(s); gunicorn stopped.")  # fmt: skip
        return 0
    print("no hit across workers was seen (did only one worker answer?); gunicorn stopped.")
    return 1


if __name__ == "__main__":
    sys.exit(main())
