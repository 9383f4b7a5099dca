"""Async methods that must stay atomic: run the sync method in a thread.

Django's ``BaseCache`` implements ``aincr``, ``aset_many``, ... by composing
``aget`` and ``aset``, which would lose the atomicity both of our backends
give their sync methods (the writer lock; Redis scripts). This mixin sends
them to the sync versions instead, with ``sync_to_async``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache.backends.base import DEFAULT_TIMEOUT


class AtomicAsyncMixin:
    """``a*`` methods delegating to the atomic sync methods of the backend."""

    async def aincr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        return await sync_to_async(self.incr, thread_sensitive=True)(key, delta, version=version)  # type: ignore[attr-defined]

    async def adecr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        return await sync_to_async(self.decr, thread_sensitive=True)(key, delta, version=version)  # type: ignore[attr-defined]

    async def aset_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        run = sync_to_async(self.set_many, thread_sensitive=True)  # type: ignore[attr-defined]
        failed: list[Any] = await run(data, timeout, version=version)
        return failed

    async def adelete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        await sync_to_async(self.delete_many, thread_sensitive=True)(keys, version=version)  # type: ignore[attr-defined]

    async def aincr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        run = sync_to_async(self.incr_version, thread_sensitive=True)  # type: ignore[attr-defined]
        new_version: int = await run(key, delta, version)
        return new_version

    async def adecr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        run = sync_to_async(self.decr_version, thread_sensitive=True)  # type: ignore[attr-defined]
        new_version: int = await run(key, delta, version)
        return new_version
