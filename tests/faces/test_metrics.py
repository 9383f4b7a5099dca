"""Metrics: ``mmcache stats --format prometheus|json``, parsed by
prometheus_client's own parser; the ready collector; and django-debug-toolbar's
cache panel over the Django backend (a real request through the toolbar)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.helpers import run_py

from mmcache import MmapCache

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _fill(path: str) -> None:
    """Traffic from another process: its counters reach the shared sums."""
    run_py(
        """
        import sys
        from mmcache import MmapCache
        t = MmapCache(sys.argv[1], size=4096)
        for i in range(10):
            t.put(f"k{i}", b"x" * 100)
        for i in range(15):
            t.get(f"k{i}")
        t.delete("k0")
        t.close()
        """,
        path,
    )


def _samples(text: str) -> dict[str, dict[str, float]]:
    """{sample name: {table label: value}} from prometheus_client's parser."""
    out: dict[str, dict[str, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[s.labels["table"]] = s.value
    return out


def _cli(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "mmcache", "stats", *args], capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_cli_prometheus_output_parses_and_carries_the_shared_counters(tmp_path: Path) -> None:
    path = str(tmp_path / 'we"ird\\dir') + "/t"  # a label value that needs escaping
    Path(path).parent.mkdir()
    _fill(path)
    text = _cli(path, "--format", "prometheus")
    fams = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert fams["mmcache_hits"] == "counter" and fams["mmcache_entries"] == "gauge"
    s = _samples(text)
    assert s["mmcache_hits_total"] == {path: 10.0}
    assert s["mmcache_misses_total"] == {path: 5.0}
    assert s["mmcache_sets_total"][path] == 10.0
    assert s["mmcache_deletes_total"][path] == 1.0
    assert s["mmcache_entries"][path] == 9.0
    assert s["mmcache_slots"][path] == 4096.0
    assert 0 < s["mmcache_fill_ratio"][path] < 1


def test_cli_json_output(tmp_path: Path) -> None:
    path = str(tmp_path / "t")
    _fill(path)
    for args in (["--format", "json"], ["--json"]):
        st = json.loads(_cli(path, *args))
        assert st["hits"] == 10 and st["misses"] == 5 and st["occupied_count"] == 9


def test_collector_reports_every_source(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from mmcache.contrib.cachelib import MmapCache as CachelibCache
    from mmcache.contrib.prometheus import MmcacheCollector

    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    _fill(a)
    _fill(b)
    t = MmapCache(a, size=4096)
    t.get("k1")  # this process's hit: summed with the other process's
    c = CachelibCache(tmp_path / "flask")
    c.set("x", 1)
    c.get("x")
    reg = CollectorRegistry()
    reg.register(MmcacheCollector(t, b, c))
    s = _samples(generate_latest(reg).decode())
    flask_path = str(tmp_path / "flask" / "mmcache")
    assert s["mmcache_hits_total"] == {a: 11.0, b: 10.0, flask_path: 1.0}
    assert s["mmcache_entries"] == {a: 9.0, b: 9.0, flask_path: 1.0}


def test_collector_for_django_caches(tmp_path: Path) -> None:
    out = run_py(
        f"""
        import django
        from django.conf import settings
        ours = {{"BACKEND": "mmcache.contrib.django.MmapCacheBackend", "LOCATION": {str(tmp_path / "d")!r}}}
        settings.configure(CACHES={{
            "default": ours,
            "same": ours,
            "other": {{"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        }})
        django.setup()
        from django.core.cache import caches
        from prometheus_client import CollectorRegistry, generate_latest
        from mmcache.contrib.prometheus import MmcacheCollector
        caches["default"].set("a", 1)
        caches["default"].get("a")
        caches["same"].get("nope")
        reg = CollectorRegistry()
        reg.register(MmcacheCollector.for_django_caches())
        print(generate_latest(reg).decode())
        """
    )
    s = _samples(out)
    table = str(tmp_path / "d" / "mmcache")
    assert s["mmcache_hits_total"] == {table: 1.0}  # two aliases, one table, reported once
    assert s["mmcache_misses_total"] == {table: 1.0}


_TOOLBAR_SITE = """
import sys
import django
from django.conf import settings
from django.http import HttpResponse
from django.urls import include, path

def view(request):
    from django.core.cache import cache
    cache.set("greeting", "hello")
    cache.get("greeting")
    cache.get("missing")
    return HttpResponse("<html><body><p>%s</p></body></html>" % cache.get("greeting"))

settings.configure(
    DEBUG=True, ROOT_URLCONF=__name__, SECRET_KEY="t", INTERNAL_IPS=["127.0.0.1"],
    ALLOWED_HOSTS=["testserver"], STATIC_URL="/static/",
    INSTALLED_APPS=["django.contrib.staticfiles", "debug_toolbar"],
    MIDDLEWARE=["debug_toolbar.middleware.DebugToolbarMiddleware"],
    TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}],
    CACHES={"default": {"BACKEND": "mmcache.contrib.django.MmapCacheBackend", "LOCATION": sys.argv[1]}},
    DEBUG_TOOLBAR_CONFIG={"IS_RUNNING_TESTS": False},
)
django.setup()
urlpatterns = [path("", view), path("__debug__/", include("debug_toolbar.urls"))]
from django.test import Client
r = Client().get("/")
assert r.status_code == 200, r.status_code
html = r.content.decode()
assert "<p>hello</p>" in html and "djDebug" in html, html[:500]
print(html)
"""


def test_debug_toolbar_cache_panel_counts_calls_on_the_backend(tmp_path: Path) -> None:
    pytest.importorskip("debug_toolbar")
    html = run_py(_TOOLBAR_SITE, str(tmp_path / "cache"))
    # the panel's nav subtitle: "4 calls in N.NNms" (set, get, get, get)
    assert "4 calls in" in html, html[-3000:]
