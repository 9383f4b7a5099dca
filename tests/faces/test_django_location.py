"""A Django LOCATION that is not a directory: the error names the option.
Real settings in a fresh process (settings.configure), as a site starts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from support.helpers import run_py

pytest.importorskip("django")

CODE = """
    from django.conf import settings
    settings.configure(CACHES={{"default": {{
        "BACKEND": "mmcache.contrib.django.MmapCacheBackend", "LOCATION": {location!r}}}}})
    import django
    django.setup()
    from django.core.cache import cache
    from django.core.exceptions import ImproperlyConfigured
    try:
        cache.set("k", 1)
    except ImproperlyConfigured as e:
        print("ImproperlyConfigured:", e)
"""


@pytest.mark.parametrize("under", [False, True], ids=["is-a-file", "under-a-file"])
def test_location_that_is_a_file(tmp_path: Path, under: bool) -> None:
    afile = tmp_path / "settings-typo"
    afile.write_bytes(b"someone's file")
    location = afile / "cache" if under else afile
    out = run_py(textwrap.dedent(CODE.format(location=str(location))))
    assert out.startswith("ImproperlyConfigured: mmcache's Django backend: LOCATION "), out
    assert repr(str(location)) in out and "not a directory" in out
    assert ("lies under " + repr(str(afile))) in out if under else "is an existing file" in out
    assert afile.read_bytes() == b"someone's file"
