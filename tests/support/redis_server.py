"""A private ``redis-server`` for tests: 127.0.0.1, a free port, a temp dir.

``RedisServer.start()`` runs ``redis-server --save '' --appendonly no --port N
--bind 127.0.0.1`` in its own directory and waits until it answers PING;
``kill()`` sends SIGKILL (a crash, as tests need), ``restart()`` starts it
again on the same port (so clients can reconnect), ``stop()`` ends it and
removes the directory. ``redis_server()`` is the pytest fixture body: it
skips (with the reason) only when the ``redis-server`` binary is missing.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process this test run owns."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="mmcache-test-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start on ``self.port`` and wait for PING; raises if it does not come up."""
        assert self.proc is None, "already running"
        cmd = [self.binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no"]
        cmd += ["--dir", str(self.dir), "--daemonize", "no", "--logfile", str(self.dir / "redis.log")]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.ping():
                return
            time.sleep(0.02)
        log = (self.dir / "redis.log").read_text(errors="replace")[-2000:] if self.dir.exists() else ""
        self._end(signal.SIGKILL)
        raise RuntimeError(f"redis-server did not answer PING on port {self.port}:\n{log}")

    def ping(self) -> bool:
        """True if the server answers PING now (raw socket: no client needed)."""
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL the server (no shutdown, no goodbye to clients)."""
        self._end(signal.SIGKILL)

    def restart(self) -> None:
        """Start again on the same port (after ``kill``), empty."""
        self._end(signal.SIGKILL)
        for _ in range(50):  # the port may linger briefly
            try:
                self.start()
                return
            except RuntimeError:
                time.sleep(0.1)
        self.start()

    def stop(self) -> None:
        self._end(signal.SIGTERM)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _end(self, sig: signal.Signals) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(sig)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


def redis_server() -> Iterator[RedisServer]:
    """Fixture body: a started server, always stopped afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server); CI installs it")
    server = RedisServer(binary)
    try:
        server.start()
        yield server
    finally:
        server.stop()
