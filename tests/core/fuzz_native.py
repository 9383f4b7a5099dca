"""A coverage-guided fuzzer (atheris, libFuzzer) over the native get's slot
and record parsing: a valid one-entry table (tests/core/_native_craft.py) whose
index and heap bytes the fuzzer overwrites where and with what it likes.
Every answer must be the default, FALLBACK or the intact value; anything
else, or a crash, is a finding.

    make fuzz-native            # bounded: FUZZ_SECONDS (default 60)

The extension is built for it with gcc's -fsanitize-coverage=trace-cmp,
whose comparison hooks (the key, magic, length and checksum compares)
libFuzzer uses as its guidance (value profile); atheris instruments the
Python side. (Edge coverage of the C code would need clang's
-fsanitize=fuzzer-no-link, not available here.)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import atheris  # noqa: E402

with atheris.instrument_imports():
    from _native_craft import HB, call, table  # noqa: E402

    from mmcache import _native  # noqa: E402

IDX, HEAP, ROSTER, _ = table(b"key", b"value" * 20)
KEYS = (b"key", "key", b"k", b"kez", b"key\0")


def one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    idx, heap = bytearray(IDX), bytearray(HEAP)
    key = KEYS[fdp.ConsumeIntInRange(0, len(KEYS) - 1)]
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        buf = idx if fdp.ConsumeBool() else heap
        lo = HB if buf is idx else 0
        at = fdp.ConsumeIntInRange(lo, len(buf) - 1)
        chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 8))
        buf[at : at + len(chunk)] = chunk[: len(buf) - at]
    if fdp.ConsumeBool():
        heap = heap[: fdp.ConsumeIntInRange(0, len(heap))]  # a map shorter than its records
    r = call(_native.get, idx, [memoryview(heap)], ROSTER, key)
    if not (r == "MISS" or r is _native.FALLBACK or r == b"value" * 20):
        raise AssertionError(f"native get answered {r!r}")


def main() -> None:
    if not _native.AVAILABLE:
        sys.exit("fuzz_native: the compiled extension is not in use (" + _native.REASON + ")")
    atheris.Setup([*sys.argv, "-use_value_profile=1"], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
