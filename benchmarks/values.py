"""The three value shapes every workload runs on.

``bytes`` values go to every store as they are; the small dict is pickled by
the caller for stores that hold bytes (mmcache, lmdb, Redis), as mmcache's
own faces do, and by diskcache itself; the ``dict`` floor keeps the object.
"""

from __future__ import annotations

import pickle
import random
from dataclasses import dataclass
from typing import Any

PROTOCOL = pickle.HIGHEST_PROTOCOL  # what diskcache and the mmcache faces use


@dataclass(frozen=True)
class ValueKind:
    name: str
    value: Any
    pickled: bool  # True: the caller pickles before a bytes store

    @property
    def stored_bytes(self) -> int:
        """Roughly what one value costs in a bytes store."""
        return len(pickle.dumps(self.value, PROTOCOL)) if self.pickled else len(self.value)


_rng = random.Random(7)
SMALL_DICT = {
    "id": 12345,
    "user": "alice",
    "email": "alice@example.com",
    "roles": ["admin", "dev"],
    "score": 98.5,
    "active": True,
}

BYTES_100 = ValueKind("100 B", _rng.randbytes(100), False)
DICT = ValueKind("dict", SMALL_DICT, True)
BYTES_10K = ValueKind("10 KB", _rng.randbytes(10 * 1024), False)
VALUES: tuple[ValueKind, ...] = (BYTES_100, DICT, BYTES_10K)
