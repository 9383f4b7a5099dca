"""``manage.py mmcache stats|clear|verify [--alias NAME]``.

Acts on every CACHES alias that uses ``MmapCacheBackend`` (or on one, with
``--alias``). Aliases sharing a LOCATION share one table, so ``clear`` and
``verify`` handle each table once. ``verify`` exits non-zero if it finds a
problem. ``stats`` prints, under a heading per alias (its LOCATION and its
limits), the report ``mmcache stats LOCATION`` prints: one formatting
function, ``mmcache._cli_format.stats_report``.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.cache import caches
from django.core.management.base import BaseCommand, CommandError, CommandParser

from mmcache._cli_format import stats_report

from ...backend import MmapCacheBackend
from ...checks import mmcache_aliases


class Command(BaseCommand):
    help = "Show stats of, clear, or verify the mmcache tables behind CACHES."
    # A diagnostic tool: it must run even when a system check fails.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=("stats", "clear", "verify"))
        parser.add_argument("--alias", help="one CACHES alias (default: every mmcache alias)")
        parser.add_argument("--json", dest="as_json", action="store_true", help="stats as JSON")

    def handle(self, *args: Any, action: str, alias: str | None, as_json: bool, **options: Any) -> None:
        backends = self._backends(alias)
        if action == "stats":
            self._stats(backends, as_json=as_json)
        elif action == "clear":
            for name, backend in _one_per_table(backends):
                backend.clear()
                self.stdout.write(f"{name}: cleared {backend.spec.location}")
        else:
            self._verify(backends)

    def _backends(self, alias: str | None) -> list[tuple[str, MmapCacheBackend]]:
        names = [name for name, _params in mmcache_aliases()]
        if alias is not None:
            if alias not in names:
                raise CommandError(f"{alias!r} is not a CACHES alias using mmcache (those are: {names})")
            names = [alias]
        if not names:
            raise CommandError("no CACHES alias uses mmcache.contrib.django.MmapCacheBackend")
        return [(name, caches[name]) for name in names]

    def _stats(self, backends: list[tuple[str, MmapCacheBackend]], as_json: bool) -> None:
        stats = {name: backend.get_stats() for name, backend in backends}
        if as_json:
            self.stdout.write(json.dumps(stats, indent=2, sort_keys=True, default=str))
            return
        for n, (name, st) in enumerate(stats.items()):
            if n:
                self.stdout.write("")
            self.stdout.write(
                self.style.MIGRATE_HEADING(
                    f"{name}: {st['location']} (MAX_ENTRIES {st['max_entries']:,}, "
                    f"CULL_FREQUENCY {st['cull_frequency']}, CODEC {st['codec']})"
                )
            )
            for line in stats_report(st):
                self.stdout.write(line)

    def _verify(self, backends: list[tuple[str, MmapCacheBackend]]) -> None:
        bad = 0
        for name, backend in _one_per_table(backends):
            problems = backend.verify()
            if problems:
                bad += len(problems)
                self.stderr.write(f"{name}: {len(problems)} problem(s) in {backend.spec.location}")
                for p in problems:
                    self.stderr.write(f"  {p}")
            else:
                self.stdout.write(self.style.SUCCESS(f"{name}: ok ({backend.spec.location})"))
        if bad:
            raise CommandError(f"verify found {bad} problem(s)")


def _one_per_table(backends: list[tuple[str, MmapCacheBackend]]) -> list[tuple[str, MmapCacheBackend]]:
    seen: set[str] = set()
    out = []
    for name, backend in backends:
        if backend.spec.location not in seen:
            seen.add(backend.spec.location)
            out.append((name, backend))
    return out
