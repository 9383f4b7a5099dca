"""cachelib's and Flask-Caching's own backend tests, run against ``mmcache.contrib.cachelib.MmapCache``.

cachelib's mixins (``CommonTests``, ``ClearTests``, ``HasTests``,
``DeleteManyWithPrefixTests``, ``SerializerTests``) and Flask-Caching's
``GenericCacheTests`` come from their source distributions, fetched at test
time for the installed versions (see ``_sdist_tests``); they are what those
projects run against each of their own backends. Nothing of theirs is
copied here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _sdist_tests import fetch_tests, load_definitions, load_modules

from mmcache.contrib.cachelib import MmapCache

_TESTS = fetch_tests("cachelib", "common.py")
_conftest = load_definitions(_TESTS / "conftest.py", {"TestData", "under_uwsgi"}, "_cachelib_conftest")
_m = load_modules(_TESTS, ["common", "clear", "has", "delete_many_with_prefix", "serializer"], _conftest)


@pytest.fixture(autouse=True)
def cache_factory(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    def _factory(self: Any, *args: Any, **kwargs: Any) -> MmapCache:
        return MmapCache(tmp_path, *args, **kwargs)

    request.cls.cache_factory = _factory


_fc = load_modules(fetch_tests("Flask-Caching", "test_backend_cache.py"), ["test_backend_cache"])


class TestMmapCacheCachelibSuite(
    _m["common"].CommonTests,
    _m["clear"].ClearTests,
    _m["has"].HasTests,
    _m["delete_many_with_prefix"].DeleteManyWithPrefixTests,
    _m["serializer"].SerializerTests,
):
    """Every test of the five mixins, against a fresh directory each."""


class TestMmapCacheFlaskCachingSuite(_fc["test_backend_cache"].GenericCacheTests):
    """Flask-Caching's generic backend tests (it runs them on its SimpleCache,
    FileSystemCache, Redis and Memcached backends)."""

    _can_use_fast_sleep = False  # their fast sleep moves cachelib's clocks, not ours: sleep for real

    @pytest.fixture
    def make_cache(self, tmp_path: Path) -> Any:
        return lambda **kw: MmapCache(tmp_path, **kw)

    @pytest.fixture
    def clock(self) -> None:
        """Their conftest's fake clock (unused with real sleeps)."""
