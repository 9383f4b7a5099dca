"""Keys: from what the caller gives to what a slot holds.

A key is str or bytes (str is stored UTF-8 encoded, with a flag so it comes
back as str). When the encoded key fits in ``key_size`` bytes the slot holds
it as is; otherwise the slot holds its 16-byte xxh3_128 digest. The probe
hash is xxh3_64 of the key (or the digest's first 8 bytes). The full key is
always in the heap record and compared on every hit, so neither truncation
nor a digest collision can hand one key another key's value.
"""

from __future__ import annotations

from xxhash import xxh3_64_intdigest, xxh3_128_digest

from ._core import layout


def encode_key(key: str | bytes) -> tuple[bytes, int]:
    """(encoded bytes, KF_STR or 0); TypeError / ValueError for bad keys."""
    if isinstance(key, str):
        kb, kf = str(key).encode("utf-8", "surrogatepass"), layout.KF_STR
    elif isinstance(key, bytes | bytearray | memoryview):
        kb, kf = bytes(key), 0
    else:
        raise TypeError(f"mmcache keys are str or bytes, not {type(key).__name__}")
    if not kb:
        raise ValueError("mmcache keys must not be empty")
    return kb, kf


def decode_key(kb: bytes, kf: int) -> str | bytes:
    """The key as it was given: str if it was a str."""
    return kb.decode("utf-8", "surrogatepass") if kf & layout.KF_STR else kb


def slot_key(kb: bytes, key_size: int) -> tuple[bytes, int, int]:
    """(bytes kept in the slot, KF_HASHED or 0, probe hash) for an encoded key."""
    if len(kb) <= key_size:
        return kb, 0, xxh3_64_intdigest(kb)
    d = xxh3_128_digest(kb)
    return d, layout.KF_HASHED, int.from_bytes(d[:8], "little")
