"""Shared fixtures: real files in a temporary directory.

The tests are grouped by layer, each directory the spec of one (see
tests/README.md): core/ (the MmapCache table), faces/ (decorator, Django,
cachelib, CLI...), tiers/ (the Redis near-cache), proofs/ (cross-cutting
evidence). Plain helpers shared between them are in support/ (``from
support.helpers import run_py``); pytest puts tests/ on sys.path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def path(tmp_path: Path) -> str:
    """A fresh table path in its own directory."""
    return str(tmp_path / "table")


@pytest.fixture
def small() -> dict[str, int]:
    """Table parameters small enough for fast tests."""
    return {"size": 4096}


@pytest.fixture
def cache(path: str) -> Iterator[object]:
    from mmcache import MmapCache

    c = MmapCache(path, size=4096)
    yield c
    c.close()
