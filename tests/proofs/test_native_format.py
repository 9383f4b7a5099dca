"""mmcache/_native/format.h, the layout the compiled paths read and write,
against mmcache/_core/layout.py and record.py (the reference): every MMF_
constant that names a field or a value of the format must equal theirs."""

from __future__ import annotations

import re
from pathlib import Path

from mmcache._core import layout, record

HEADER = Path(__file__).resolve().parents[2] / "mmcache" / "_native" / "format.h"

# MMF_ name -> what layout.py says
EXPECTED = {
    "HEADER_BYTES": layout.HEADER_BYTES,
    "OFF_FLAGS": layout.OFF_FLAGS,
    "FLAG_RETIRED": layout.FLAG_RETIRED,
    "OFF_COUNTERS": layout.OFF_COUNTERS,
    "OFF_HEAP_SEG": layout.OFF_HEAP_SEG,
    "OFF_DIRTY": layout.OFF_DIRTY,
    "OFF_HEAP_TAIL": layout.OFF_HEAP_SEG + 8,  # HEAP_POS: seg, dirty, tail
    "OFF_BYTES": layout.OFF_BYTES,
    "OFF_WRITE_SEQ": layout.OFF_WRITE_SEQ,
    "OFF_LOGGING": layout.OFF_LOGGING,
    "OFF_LOG": layout.OFF_LOG,
    "OFF_LOG_ENTRIES": layout.OFF_LOG_ENTRIES,
    "SLOT_FIXED": layout.SLOT_FIXED,
    "SLOT_STATE": 0,
    "SLOT_KFLAGS": 1,
    "SLOT_KLEN": 2,
    "SLOT_ROSTER": layout.OFF_SLOT_ROSTER,
    "SLOT_SEG": layout.OFF_SLOT_LOC,
    "SLOT_OFF": layout.OFF_SLOT_LOC + 4,
    "SLOT_MTIME": layout.OFF_SLOT_MTIME,
    "SLOT_RECLEN": layout.OFF_SLOT_RECLEN,
    "EMPTY": layout.EMPTY,
    "OCCUPIED": layout.OCCUPIED,
    "DELETED": layout.DELETED,
    "KF_HASHED": layout.KF_HASHED,
    "KF_STR": layout.KF_STR,
    "KF_SIGNED": record.KF_SIGNED,
    "MIN_KEY_SIZE": layout.MIN_KEY_SIZE,
    "MAX_KEY_SIZE": layout.MAX_KEY_SIZE,
    "MAX_SLOT_SIZE": 1 << 16,
    "ROSTER_HEADER_BYTES": layout.ROSTER_HEADER_BYTES,
    "SEG_HEADER_BYTES": layout.SEG_HEADER_BYTES,
    "RECORD_HEADER": record.HEAD_BYTES,
    "REC_CSUM": 0,
    "REC_EXPIRE": record.OFF_EXPIRE,
    "REC_KLEN": 16,
    "REC_VLEN": 20,
    "REC_FLAGS": 24,
    "REC_KFLAGS": record.OFF_KFLAGS,
    "REC_MAGIC_AT": record.OFF_MAGIC,
    "REC_MAGIC": record.MAGIC,
    "REC_MAC_BYTES": record.MAC_BYTES,
}


def _defines() -> dict[str, int]:
    out = {}
    for m in re.finditer(r"^#define MMF_(\w+) (0x[0-9A-Fa-f]+|\d+)\b", HEADER.read_text(), re.M):
        out[m.group(1)] = int(m.group(2), 0)
    return out


def test_format_h_constants_match_layout() -> None:
    found = _defines()
    assert found == EXPECTED, {k: (found.get(k), v) for k, v in EXPECTED.items() if found.get(k) != v}


def test_the_record_struct_and_slot_head_agree_with_the_offsets() -> None:
    # layout's structs, packed at known values, put each field where format.h says
    rec = record.HEAD.pack(1, 2, 3, 4, 5, 6, record.MAGIC, 0)
    assert (rec[8], rec[16], rec[20], rec[24], rec[26], rec[27]) == (2, 3, 4, 5, 6, record.MAGIC)
    head = layout.SLOT_HEAD.pack(1, 2, 3, 4, 5, 6, 7, 8, 0)
    fields = (head[0], head[1], head[2], head[4], head[8], head[12], head[16], head[24])
    assert fields == (1, 2, 3, 4, 5, 6, 7, 8)
