"""cachelib's own backend test mixins, run against ``mmcache.contrib.cachelib.MmapCache``.

The mixins (``CommonTests``, ``ClearTests``, ``HasTests``,
``DeleteManyWithPrefixTests``, ``SerializerTests``) come from cachelib's
source distribution, fetched at test time for the installed version (see
``_sdist_tests``); they are what cachelib runs against each of its own
backends. Nothing of cachelib's is copied here.
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


class TestMmapCacheCachelibSuite(
    _m["common"].CommonTests,
    _m["clear"].ClearTests,
    _m["has"].HasTests,
    _m["delete_many_with_prefix"].DeleteManyWithPrefixTests,
    _m["serializer"].SerializerTests,
):
    """Every test of the five mixins, against a fresh directory each."""
