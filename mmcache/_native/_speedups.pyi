from typing import Any

FALLBACK: object

def get(
    hot: tuple[Any, ...],
    views: list[Any],
    key: object,
    key_size: int,
    track: bool,
    next_check: int,
    local: list[int],
    default: Any,
    with_flags: bool,
) -> Any: ...
def xxh3_64(data: bytes | bytearray | memoryview, seed: int = 0) -> int: ...

class Getter:
    def __init__(self, handle: Any, view_min: int = 0) -> None: ...
    def __call__(self, key: object, default: Any = None, *, with_flags: bool = False) -> Any: ...
