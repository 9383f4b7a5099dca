"""A coverage-guided fuzzer (atheris, libFuzzer) over the compiled put, add
and delete's reading of a damaged table (tests/core/_native_write_craft.py:
the mapped index header, slots, heap and roster overwritten where and with
what the fuzzer likes, then one compiled write). Every answer must be the
put's None, the add's or delete's bool, or PURE (handed on); anything else,
an exception, or a crash is a finding.

    make fuzz-native            # after the get's fuzzer; FUZZ_SECONDS each

Built as for tests/core/fuzz_native.py (gcc's -fsanitize-coverage=trace-cmp).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import atheris  # noqa: E402

with atheris.instrument_imports():
    from _native_write_craft import DamagedTable  # noqa: E402

    from mmcache import _native  # noqa: E402

DIR = tempfile.mkdtemp(prefix="mmcache-fuzz-write-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
atexit.register(shutil.rmtree, DIR, True)  # libFuzzer ends the process with exit()
TABLE = DamagedTable(DIR)


def one(data: bytes) -> None:
    TABLE.one(atheris.FuzzedDataProvider(data))


def main() -> None:
    if not _native.AVAILABLE:
        sys.exit("fuzz_native_write: the compiled extension is not in use (" + _native.REASON + ")")
    atheris.Setup([*sys.argv, "-use_value_profile=1"], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
