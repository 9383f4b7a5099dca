"""A peer process for the native/pure differential tests (tests/core/test_native.py).

Opens the table named on the command line with the options given as JSON,
then answers one JSON command per stdin line with one JSON line on stdout:
  ["put", key, value_hex, flags, ttl_or_null] -> null
  ["delete", key]                              -> bool
  ["get", key]                                 -> [value_hex, flags] or null
  ["mode"]                                     -> "native" or "pure"
A key is ["s", text] or ["b", hex]. Run with MMCACHE_PURE_PYTHON=1 it is the
pure-Python side of the comparison.
"""

from __future__ import annotations

import json
import sys

from mmcache import MmapCache, _native


def _key(k: list[str]) -> str | bytes:
    return k[1] if k[0] == "s" else bytes.fromhex(k[1])


def main() -> None:
    c = MmapCache(sys.argv[1], **json.loads(sys.argv[2]))
    out = sys.stdout
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd[0]
        r: object = None
        if op == "put":
            c.put(_key(cmd[1]), bytes.fromhex(cmd[2]), cmd[4], flags=cmd[3])
        elif op == "delete":
            r = c.delete(_key(cmd[1]))
        elif op == "get":
            got = c.get(_key(cmd[1]), with_flags=True)
            r = None if got is None else [got[0].hex(), got[1]]
        elif op == "mode":
            r = "native" if _native.AVAILABLE and type(c.get).__name__ == "Getter" else "pure"
        out.write(json.dumps(r) + "\n")
        out.flush()
    c.close()


if __name__ == "__main__":
    main()
