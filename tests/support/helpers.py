"""Plain helpers for every test layer: the project root, a fresh interpreter
to run code in, Django settings for in-process tests, polling, and JSON
replies from helper processes. (Fixtures stay in tests/conftest.py.)"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_py(code: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Run ``code`` in a fresh interpreter; return stdout, fail on non-zero exit."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def configure_django() -> None:
    """Settings for tests that use Django's cache API in this process (the
    first caller configures them; the mmcache app is installed for its checks
    and management command)."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=["mmcache.contrib.django"],
            CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
            USE_TZ=True,
        )
        django.setup()


def wait_until(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``pred`` until it returns something true (returned), or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def read_reply(proc: subprocess.Popen[str], timeout: float, detail: str = "") -> dict[str, Any]:
    """One JSON line from a helper process's stdout, or fail saying which process."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        raise AssertionError(f"host {proc.pid} gave no answer in {timeout} s (exit {proc.poll()}){detail}")
    reply: dict[str, Any] = json.loads(line)
    return reply
