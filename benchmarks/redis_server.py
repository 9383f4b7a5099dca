"""A throw-away ``redis-server`` on 127.0.0.1 for the Redis rows.

Started on a free loopback port with persistence off, in a temporary
directory; stopped by ``stop()``, which ``atexit`` also calls, so an
interrupted run leaves no server behind. Nothing here talks to any host
other than 127.0.0.1.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"


class LocalRedis:
    """One private server; ``url`` is None (and ``reason`` says why) when unavailable."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.dir: Path | None = None
        self.version: str | None = None
        self.reason: str | None = None

    @property
    def url(self) -> str | None:
        return f"redis://{HOST}:{self.port}/0" if self.port is not None else None

    def attach(self, port: int, version: str | None) -> None:
        """Use a server another process of this run started (it stays theirs to stop)."""
        self.port, self.version = port, version

    def start(self) -> bool:
        """Start the server; False (with ``reason`` set) when it cannot run here."""
        if self.proc is not None:
            return True
        binary = shutil.which("redis-server")
        if binary is None:
            self.reason = "redis-server not found on PATH (apt-get install redis-server)"
            return False
        try:
            import redis  # noqa: F401  (the client the rows use)
        except ImportError:
            self.reason = "the redis Python client is not installed (pip install redis)"
            return False
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        self.version = next((w[2:] for w in out.stdout.split() if w.startswith("v=")), out.stdout.strip())
        self.dir = Path(tempfile.mkdtemp(prefix="mmcache-bench-redis-"))
        atexit.register(self.stop)
        for _ in range(3):  # a free port can be taken between probe and bind: retry
            port = _free_port()
            cmd = [
                binary,
                "--bind",
                HOST,
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--protected-mode",
                "yes",
                "--daemonize",
                "no",
                "--logfile",
                str(self.dir / "redis.log"),
            ]
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            self.port = port
            if self._wait_ready():
                return True
            self._kill()
        self.port = None
        self.reason = f"redis-server did not start (see {self.dir / 'redis.log'})"
        return False

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        import redis

        assert self.proc is not None and self.port is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if redis.Redis(host=HOST, port=self.port, socket_timeout=1).ping():
                    return True
            except redis.ConnectionError:
                time.sleep(0.05)
        return False

    def _kill(self) -> None:
        p, self.proc = self.proc, None
        if p is None:
            return
        p.terminate()
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)

    def stop(self) -> None:
        """Stop the server and remove its directory; safe to call twice."""
        self._kill()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


_server: LocalRedis | None = None


ENV = "MMCACHE_BENCH_REDIS"  # "port version" of the run's server, for suite subprocesses


def server() -> LocalRedis:
    """The run's one server: attached from ``$MMCACHE_BENCH_REDIS``, else started on first use."""
    global _server
    if _server is None:
        _server = LocalRedis()
        shared = os.environ.get(ENV)
        if shared is not None:
            port, _, version = shared.partition(" ")
            if port:
                _server.attach(int(port), version or None)
            else:
                _server.reason = version or "no redis-server in this run"
        else:
            _server.start()
    return _server


def export(srv: LocalRedis) -> dict[str, str]:
    """Environment for a suite subprocess so it uses (or skips) this server."""
    if srv.port is None:
        return {ENV: f" {srv.reason}"}
    return {ENV: f"{srv.port} {srv.version or ''}".rstrip()}


def stop() -> None:
    if _server is not None:
        _server.stop()
