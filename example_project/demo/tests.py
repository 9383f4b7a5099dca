"""The example site's own tests, with Django's test client (no database).

Run from example_project/: ``python manage.py test demo``. The cache lives in
``MMCACHE_EXAMPLE_CACHE_DIR`` (set it to a scratch directory); each test
starts from an empty cache.
"""

import json
import os
from io import StringIO

from django.core.cache import cache
from django.core.management import call_command
from django.test import SimpleTestCase

from .compute import prime_stats


class ExampleSiteTests(SimpleTestCase):
    def setUp(self) -> None:
        cache.clear()

    def test_index_names_the_worker(self) -> None:
        r = self.client.get("/")
        self.assertEqual(r.status_code, 200)
        self.assertContains(r, str(os.getpid()))
        self.assertEqual(r["X-Served-By"], str(os.getpid()))

    def test_primes_miss_then_hit(self) -> None:
        first = self.client.get("/primes/1000/").json()
        self.assertEqual((first["cache"], first["count"], first["largest"]), ("miss", 168, 997))
        second = self.client.get("/primes/1000/").json()
        self.assertEqual(second["cache"], "hit")
        self.assertEqual(second["cached_at"], first["cached_at"])
        self.assertEqual(second["cached_by"], os.getpid())

    def test_primes_value_is_in_the_backend(self) -> None:
        self.client.get("/primes/100/")
        self.assertEqual(cache.get("primes:100")["count"], 25)

    def test_report_page_is_cached_whole(self) -> None:
        first = self.client.get("/report/2000/")
        self.assertEqual(first.status_code, 200)
        self.assertContains(first, 'id="count">303<')
        cache_entries = cache.get_stats()["occupied_count"]
        self.assertGreaterEqual(cache_entries, 2)  # cache_page stores headers and page
        second = self.client.get("/report/2000/")
        self.assertEqual(second.content, first.content)
        self.assertIn("max-age=60", second["Cache-Control"])

    def test_prime_stats(self) -> None:
        self.assertEqual([prime_stats(n)["count"] for n in (2, 3, 10, 5000)], [0, 1, 4, 669])
        self.assertEqual(prime_stats(5000)["largest"], 4999)

    def test_stats_page_and_json(self) -> None:
        self.client.get("/primes/500/")
        self.client.get("/primes/500/")
        page = self.client.get("/stats/")
        self.assertContains(page, f'id="pid">{os.getpid()}<')
        self.assertContains(page, "occupied_count")
        data = json.loads(self.client.get("/stats.json").content)
        self.assertEqual(data["pid"], os.getpid())
        self.assertGreaterEqual(data["django_cache"]["hits"], 1)
        self.assertGreaterEqual(data["django_cache"]["occupied_count"], 1)

    def test_system_checks_pass(self) -> None:
        out = StringIO()
        call_command("check", stdout=out)
        self.assertIn("no issues", out.getvalue())

    def test_management_command(self) -> None:
        self.client.get("/primes/100/")
        out = StringIO()
        call_command("mmcache", "verify", stdout=out)
        self.assertIn("default: ok", out.getvalue())
        out = StringIO()
        call_command("mmcache", "stats", "--json", stdout=out)
        self.assertGreaterEqual(json.loads(out.getvalue())["default"]["occupied_count"], 1)
        call_command("mmcache", "clear", stdout=StringIO())
        self.assertIsNone(cache.get("primes:100"))
