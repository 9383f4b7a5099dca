"""mmcache.serialization: codecs identified by the record flags."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import pytest

from mmcache import MmapCache, MmcacheError
from mmcache.serialization import (
    CLOUDPICKLE,
    CODECS,
    NAMES,
    PICKLE,
    RAW,
    UnknownCodecError,
    codec_flag,
    dumps,
    loads,
)


@pytest.mark.parametrize("codec", ["pickle", "cloudpickle"])
@pytest.mark.parametrize(
    "value", [None, 0, -7, 3.5, "text", "清", [1, (2, 3)], {"a": {1, 2}}, bytearray(b"x")]
)
def test_round_trip(codec: str, value: Any) -> None:
    data, flags = dumps(value, codec)
    assert type(data) is bytes
    assert flags == CODECS[codec]
    out = loads(data, flags)
    assert out == value and type(out) is type(value)


@pytest.mark.parametrize("codec", ["pickle", "cloudpickle", "raw"])
def test_bytes_are_stored_raw_whatever_the_codec(codec: str) -> None:
    blob = b"\x80\x05not a pickle"
    data, flags = dumps(blob, codec)
    assert (data, flags) == (blob, RAW)
    assert data is blob  # no copy
    assert loads(memoryview(blob), RAW) == blob
    assert type(loads(memoryview(blob), RAW)) is bytes


def test_raw_codec_takes_only_bytes_like() -> None:
    assert dumps(bytearray(b"ab"), "raw") == (b"ab", RAW)
    assert dumps(memoryview(b"abc")[1:], "raw") == (b"bc", RAW)
    with pytest.raises(TypeError, match="raw codec"):
        dumps("text", "raw")


def test_cloudpickle_stores_what_pickle_cannot() -> None:
    def make_adder(n: int) -> Callable[[int], int]:
        return lambda x: x + n

    with pytest.raises((pickle.PicklingError, AttributeError)):
        dumps(make_adder(1), "pickle")
    data, flags = dumps(make_adder(2), "cloudpickle")
    assert flags == CLOUDPICKLE
    assert loads(data, flags)(1) == 3


def test_pickle_protocol_is_honoured() -> None:
    data, _ = dumps({"a": 1}, "pickle", protocol=2)
    assert data[:2] == b"\x80\x02"


def test_pickling_errors_propagate_unchanged() -> None:
    class Unpicklable:
        def __getstate__(self) -> None:
            raise pickle.PickleError("refused")

    for codec in ("pickle", "cloudpickle"):
        with pytest.raises(pickle.PickleError, match="refused"):
            dumps(Unpicklable(), codec)


def test_unknown_codecs_and_flags() -> None:
    with pytest.raises(UnknownCodecError, match="json"):
        dumps(1, "json")
    with pytest.raises(UnknownCodecError):
        codec_flag("json")
    with pytest.raises(UnknownCodecError, match="0x0107"):
        loads(b"", 0x0107)
    assert issubclass(UnknownCodecError, MmcacheError) and issubclass(UnknownCodecError, ValueError)
    assert codec_flag("pickle") == PICKLE
    assert NAMES == {RAW: "raw", PICKLE: "pickle", CLOUDPICKLE: "cloudpickle"}


def test_flags_travel_with_the_record(tmp_path: Any) -> None:
    with MmapCache(str(tmp_path / "t"), size=64) as table:
        for key, value, codec in (
            ("a", {"x": 1}, "pickle"),
            ("b", b"raw", "pickle"),
            ("c", 2j, "cloudpickle"),
        ):
            data, flags = dumps(value, codec)
            table.put(key, data, flags=flags)
        for key, value in (("a", {"x": 1}), ("b", b"raw"), ("c", 2j)):
            e = table.get_entry(key)
            assert e is not None and loads(e.value, e.flags) == value
