"""A shared second tier (L2) in Redis behind a host's mmcache table (L1).

mmcache is one host's cache; when a site runs on several hosts, they share a
Redis server and each keeps an mmcache table as its near cache. This package
holds what any face needs for that, built on redis-py and Redis's own
features only (MULTI/EXEC, Lua scripts, pub/sub):

- ``RedisL2`` (``client``): bytes in, bytes out; every write is announced on
  a pub/sub channel in the same transaction as the write itself.
- ``HostSubscriber`` (``subscriber``): one listener per host (elected with an
  ``flock`` beside the table) that removes announced keys from the table.
- ``guard``: fills the table from L2 only if no invalidation of that key's
  bucket arrived meanwhile, so a late fill never undoes an invalidation.

Needs the ``redis`` package. ``docs/TIERED.md`` says what consistency the
combination gives.
"""

from __future__ import annotations

from . import guard
from .client import FLUSH, UNREACHABLE, L2Unavailable, NotAnInteger, RedisL2
from .subscriber import HostSubscriber

__all__ = ["FLUSH", "UNREACHABLE", "HostSubscriber", "L2Unavailable", "NotAnInteger", "RedisL2", "guard"]
