"""Where a cached function's table lives: the directory and the file name.

Default directory: ``$MMCACHE_DIR`` if set, else the platform's per-user cache
directory plus ``mmcache`` (``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux and
other Unixes, ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows).
Directories this module creates are owner-only (0o700): cached values are as
private as the arguments that produced them.

Each function gets its own table, named by a readable slug of its qualified
name and a hash of its full identity, e.g. ``app.features.embed-3f2a9c0d1e4b5a67``
(plus the core's ``.heap.*``, ``.roster.*`` and ``.lock`` files beside it).
"""

from __future__ import annotations

import os
import re
import sys

from xxhash import xxh3_64_hexdigest

from .._core.fs import make_private_dirs

__all__ = ["DIR_MODE", "ENV_VAR", "default_dir", "ensure_dir", "table_path", "user_cache_dir"]

ENV_VAR = "MMCACHE_DIR"
DIR_MODE = 0o700
_SLUG_MAX = 60
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def user_cache_dir() -> str:
    """The platform's per-user cache directory (not created)."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser(r"~\AppData\Local")
    elif sys.platform == "darwin":
        base = os.path.expanduser("~/Library/Caches")
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        # The XDG spec: a relative value is invalid and must be ignored.
        base = xdg if os.path.isabs(xdg) else os.path.expanduser("~/.cache")
    return base


def default_dir() -> str:
    """``$MMCACHE_DIR``, else ``user_cache_dir()/mmcache``; read at each call."""
    env = os.environ.get(ENV_VAR)
    if env:
        return os.path.abspath(os.path.expanduser(env))
    return os.path.join(user_cache_dir(), "mmcache")


def ensure_dir(directory: str) -> None:
    """Create ``directory`` and any missing parents, each owner-only (0o700)."""
    make_private_dirs(directory, DIR_MODE)


def table_path(directory: str, identity: str) -> str:
    """The table file for a function ``identity`` (``"module:qualname"`` plus
    any salt): a readable slug, then 16 hex digits of the identity's hash."""
    name = identity.split("@", 1)[0].replace(":", ".").replace("<locals>", "locals")
    slug = _UNSAFE.sub("_", name).lstrip(".-") or "func"
    if len(slug) > _SLUG_MAX:  # keep both ends: the module and the function's own name
        slug = slug[: _SLUG_MAX // 3] + "~" + slug[-(_SLUG_MAX - _SLUG_MAX // 3 - 1) :]
    digest = xxh3_64_hexdigest(identity.encode("utf-8", "surrogatepass"))
    return os.path.join(directory, f"{slug}-{digest}")
