"""A ready Prometheus collector for mmcache tables.

::

    from prometheus_client import REGISTRY
    from mmcache.contrib.prometheus import MmcacheCollector

    REGISTRY.register(MmcacheCollector(my_table, "/var/tmp/site-cache/mmcache"))
    # or every Django alias that uses MmapCacheBackend:
    REGISTRY.register(MmcacheCollector.for_django_caches())

Each scrape reads ``get_stats()`` of every source: the counters are already
summed over every process using the table, so one collector in one process
reports the whole host (add it in one process only, or the sums repeat under
different ``instance`` labels). Samples are labelled ``table="<path>"``;
names and help texts come from ``mmcache._metrics``. No subclass per backend
is needed (unlike django-prometheus).

A source is an ``MmapCache``, an object with a ``table`` attribute (the
Django backend, the cachelib backend) or the path of an index file (opened
for each scrape, never created).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mmcache import MmapCache
from mmcache._metrics import PREFIX, samples

Source = Any  # MmapCache | an object with .table | str path


def _stats(source: Source) -> dict[str, Any]:
    """One source's stats, tried twice: ``get_stats()`` sums file sizes and
    can meet a file that a concurrent rebuild just removed (FileNotFoundError);
    the retry reads the new generation. A scrape must not fail for that."""
    try:
        return _stats_once(source)
    except FileNotFoundError:
        return _stats_once(source)


def _stats_once(source: Source) -> dict[str, Any]:
    if isinstance(source, str):
        with MmapCache.open(source, eviction="fifo") as t:  # the policy is irrelevant: never writes
            return t.get_stats()
    table = source if isinstance(source, MmapCache) else source.table
    stats: dict[str, Any] = table.get_stats()
    return stats


class MmcacheCollector(Collector):
    """Collects the shared statistics of the given tables at each scrape."""

    def __init__(self, *sources: Source, lister: Callable[[], Iterable[Source]] | None = None) -> None:
        self._sources = sources
        self._lister = lister

    @classmethod
    def for_django_caches(cls) -> MmcacheCollector:
        """Every alias of ``settings.CACHES`` served by ``MmapCacheBackend``
        (looked up at each scrape, so aliases are opened lazily)."""

        def aliases() -> Iterator[Source]:
            from django.conf import settings
            from django.core.cache import caches

            from mmcache.contrib.django import MmapCacheBackend

            seen: set[str] = set()
            for alias in settings.CACHES:
                backend = caches[alias]
                if isinstance(backend, MmapCacheBackend) and backend.spec.path not in seen:
                    seen.add(backend.spec.path)  # aliases sharing a LOCATION share a table
                    yield backend

        return cls(lister=aliases)

    def collect(self) -> Iterator[Metric]:
        sources = list(self._sources) + (list(self._lister()) if self._lister else [])
        families: dict[str, Any] = {}
        for source in sources:
            st = _stats(source)
            path = str(st.get("path", ""))
            for name, kind, text, value in samples(st):
                fam = families.get(name)
                if fam is None:
                    make = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                    fam = families[name] = make(PREFIX + name, text, labels=["table"])
                fam.add_metric([path], value)
        yield from families.values()


__all__ = ["MmcacheCollector"]
