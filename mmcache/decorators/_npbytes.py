"""The bytes of a numpy array or scalar that hold its value, for keys.

x87 80-bit extended floats (``np.longdouble`` / ``np.clongdouble`` on x86)
are stored in 12 or 16 bytes of which 10 hold the value: numpy leaves the
rest as it finds it, so two equal values could give different bytes, and a
key made of them would miss at random. Their padding is dropped here; every
other dtype's bytes are taken whole.
"""

from __future__ import annotations

import sys
from typing import Any

_X87_BYTES = 10  # sign, exponent and 64-bit significand


def _x87_part(dt: Any) -> int:
    """The size of one x87 float part of dtype ``dt`` (the element, or each
    half of a complex), or 0 if it has none."""
    if dt.kind not in "fc":
        return 0
    part: int = dt.itemsize // (2 if dt.kind == "c" else 1)
    # 63 explicit significand bits: x87 (IEEE quad has 112, double-double 105)
    return part if part > 8 and sys.modules["numpy"].finfo(dt).nmant == 63 else 0


def value_bytes(obj: Any) -> Any:
    """``obj``'s bytes for hashing: its own buffer (a C-contiguous array: no
    copy), else a bytes copy in C order, with x87 padding taken out."""
    np = sys.modules["numpy"]
    part = _x87_part(obj.dtype)
    if not part:
        if isinstance(obj, np.ndarray) and obj.flags.c_contiguous:
            try:
                memoryview(obj)
                return obj
            except (TypeError, ValueError, BufferError):  # dtypes without buffer support
                pass
        return obj.tobytes()
    raw = np.frombuffer(obj.tobytes(), dtype=np.uint8).reshape(-1, part)
    keep = slice(0, _X87_BYTES) if obj.dtype.byteorder in "=<|" else slice(part - _X87_BYTES, part)
    return raw[:, keep].tobytes()
