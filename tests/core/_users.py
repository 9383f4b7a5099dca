"""A second user for the tests: run code in a forked child that dropped to it.

Hostile-file and read-only tests need a real other uid (files it owns, files
it may only read); only root can switch to one, so those tests skip otherwise.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable

import pytest

NOBODY = 65534
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def needs_root(why: str) -> pytest.MarkDecorator:
    """Skip unless root (a second uid, chown and mounts need it), saying why."""
    return pytest.mark.skipif(not IS_ROOT, reason=f"{why} needs root")


def in_child_as(uid: int, fn: Callable[[], None]) -> None:
    """Run ``fn`` in a forked child that dropped to ``uid`` (a real second user)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgid(uid)
            os.setuid(uid)
            fn()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child failed: see its traceback above"
