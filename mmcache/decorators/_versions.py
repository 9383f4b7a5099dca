"""Which code versions share a function's table, and when to empty it.

Every key carries the function's tag (``KEYSPACE``, ``version=``, code hash:
``_identity``), so one version can never read another's results, whatever
the table holds. Emptying the table when another version opens it is
therefore only about disk space, and doing it on every open made two
versions running side by side (a rolling deploy, gunicorn's ``max_requests``
restarts during one) empty each other's results at each process start.

So the table keeps a small record, ``VERSIONS_KEY``: each tag that used it
and when a process of that version last *confirmed* it (opened the table,
or stored a result: at most every ``CONFIRM_EVERY`` seconds per process, on
the miss path only). A process opening the table with tag T empties it only:

* if some recorded version is of an older ``KEYSPACE`` (no current code
  reads those entries), or
* if T is new to the table and no other version was confirmed in the last
  ``GRACE`` seconds: the others are abandoned (the function was edited, the
  deploy is over), which keeps the disk as tight as before when versions do
  not overlap, or
* if T is new and ``MAX_LIVE`` versions were already confirmed within
  ``GRACE``: a bound on what side-by-side versions may pile up (a developer
  editing and re-running within the hour).

Otherwise the versions share the table: results of a version nobody runs any
more are never read again and are the least recently used, so they are the
first to go when the table reaches its size limit (``max_entries``, or the
default 2**21 slots), or when their ``ttl`` ends. Disk growth is thus bounded
by the table's own limit, as for a single version, and in practice by
``MAX_LIVE`` versions' worth of results between two clean-ups.

The record is JSON, read from an untrusted file: anything that does not
parse as a map of tags to finite times counts as no record. A record lost to
eviction empties nothing (what the table holds is then unknown, and LRU
handles it: the table's tag says it had a record, ``_table.RECORDED``); a
table of the earlier scheme (a bare tag, no record) counts as one version,
abandoned unless it is the opener's own.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ._identity import KEYSPACE

__all__ = ["CONFIRM_EVERY", "GRACE", "MAX_LIVE", "VERSIONS_KEY", "dump", "load", "must_clear"]

VERSIONS_KEY = "mmcache:versions"
GRACE = 3600.0  # seconds without a confirmation after which a version counts as abandoned
CONFIRM_EVERY = GRACE / 8
MAX_LIVE = 4
MAX_RECORDED = 16  # versions kept in the record (the most recently confirmed)
_MARKER = re.compile(r"^k(\d+)$")


def keyspace(tag: str) -> int:
    """The key scheme a tag was written under (a tag with no marker is k1)."""
    m = _MARKER.match(tag.split("|", 1)[0])
    return int(m.group(1)) if m else 1


def load(raw: Any) -> dict[str, float]:
    """The record stored under ``VERSIONS_KEY`` (empty if missing or damaged)."""
    if not isinstance(raw, bytes | memoryview) or len(raw) > 64 * 1024:
        return {}
    try:
        data = json.loads(bytes(raw))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    out = {}
    for tag, when in data.items():
        if isinstance(when, int | float) and not isinstance(when, bool) and math.isfinite(when):
            out[tag] = float(when)
    return out


def dump(versions: dict[str, float]) -> bytes:
    """The record to store: the ``MAX_RECORDED`` most recently confirmed versions."""
    kept = sorted(versions.items(), key=lambda kv: kv[1], reverse=True)[:MAX_RECORDED]
    return json.dumps(dict(kept), separators=(",", ":")).encode()


def must_clear(versions: dict[str, float], mine: str, now: float) -> bool:
    """Whether a process of version ``mine`` opening the table empties it (module docstring)."""
    current = keyspace(KEYSPACE)
    if any(keyspace(tag) < current for tag in versions):
        return True
    if mine in versions:
        return False  # a version the table already serves: its results are here
    others = [when for tag, when in versions.items() if tag != mine]
    if not others:
        return False  # a new table, or the record was lost: nothing known to be abandoned
    live = sum(now - when < GRACE for when in others)
    return live == 0 or live >= MAX_LIVE
