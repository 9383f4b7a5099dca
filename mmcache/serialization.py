"""Value codecs: how Python objects become the bytes a record holds, and back.

The table stores bytes plus a 16-bit ``flags`` tag per record; the faces keep
the codec in that tag, so a reader never guesses how a value was written and
values written with different codecs can share one table.

Flag values (low byte: codec id; high byte: reserved, must be zero)::

    0  RAW          the value is ``bytes``, stored as is (the core's default tag)
    1  PICKLE       ``pickle.dumps`` (Django's own convention)
    2  CLOUDPICKLE  ``cloudpickle.dumps``: lambdas, local functions and classes
                    defined in ``__main__`` are stored by value

Exact ``bytes`` values are always stored RAW, whatever the codec asked for,
and come back as ``bytes`` without a pickle round trip. Pickling errors
(``pickle.PickleError``, ``TypeError``, ...) propagate unchanged.
"""

from __future__ import annotations

import pickle
from typing import Any, Final, Literal

from .errors import MmcacheError

RAW: Final = 0
PICKLE: Final = 1
CLOUDPICKLE: Final = 2

CodecName = Literal["raw", "pickle", "cloudpickle"]
CODECS: Final[dict[str, int]] = {"raw": RAW, "pickle": PICKLE, "cloudpickle": CLOUDPICKLE}
NAMES: Final[dict[int, str]] = {v: k for k, v in CODECS.items()}

DEFAULT_PROTOCOL: Final = pickle.HIGHEST_PROTOCOL


class UnknownCodecError(MmcacheError, ValueError):
    """A codec name that does not exist, or a record whose flags name no known
    codec (written by a newer mmcache, or not by mmcache's faces at all)."""


def codec_flag(codec: str) -> int:
    """The flag of a codec given by name; UnknownCodecError for a bad name."""
    try:
        return CODECS[codec]
    except (KeyError, TypeError):
        raise UnknownCodecError(_unknown(codec)) from None


def _unknown(codec: object) -> str:
    return f"unknown codec {codec!r}; choose one of {', '.join(sorted(CODECS))}"


def dumps(obj: Any, codec: str = "pickle", protocol: int = DEFAULT_PROTOCOL) -> tuple[bytes, int]:
    """Encode ``obj``; returns ``(data, flags)`` to store together.

    ``bytes`` are stored RAW; anything else goes through ``codec``. The
    ``"raw"`` codec accepts only bytes-like values (TypeError otherwise).
    """
    if type(obj) is bytes:
        return obj, RAW
    if codec == "pickle":
        return pickle.dumps(obj, protocol), PICKLE
    if codec == "cloudpickle":
        import cloudpickle  # a dependency of mmcache, imported on first use

        return cloudpickle.dumps(obj, protocol), CLOUDPICKLE
    if codec == "raw":
        if isinstance(obj, bytearray | memoryview):
            return bytes(obj), RAW
        raise TypeError(f"the raw codec stores bytes, not {type(obj).__name__}")
    raise UnknownCodecError(_unknown(codec))


def loads(data: bytes | memoryview, flags: int) -> Any:
    """Decode what ``dumps`` made, given the flags stored with it."""
    if flags == RAW:
        return data if type(data) is bytes else bytes(data)
    if flags in (PICKLE, CLOUDPICKLE):
        # cloudpickle's output is standard pickle data; pickle imports the
        # cloudpickle helpers it names when they are needed.
        return pickle.loads(data)
    raise UnknownCodecError(f"record flags {flags:#06x} name no known codec")


__all__ = [
    "CLOUDPICKLE",
    "CODECS",
    "NAMES",
    "PICKLE",
    "RAW",
    "CodecName",
    "UnknownCodecError",
    "codec_flag",
    "dumps",
    "loads",
]
