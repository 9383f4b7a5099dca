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

class Table:
    next_check: int
    @property
    def bound(self) -> bool: ...
    def bind(
        self,
        idx: Any,
        nslots: int,
        slot_size: int,
        key_size: int,
        rec_base: int,
        recency: Any,
        views: list[Any],
    ) -> None: ...
    def unbind(self) -> None: ...
    def take_counts(self) -> tuple[int, int]: ...

class Getter:
    def __init__(self, handle: Any, table: Table, view_min: int = 0) -> None: ...
    def __call__(self, key: object, default: Any = None, *, with_flags: bool = False) -> Any: ...
    def detach(self) -> None: ...

class Putter:
    def __init__(self, handle: Any, delete: bool = False, add: bool = False) -> None: ...
    # put(key, value, expire=None, *, flags=0, expire_at_ns=None) -> None;
    # add(the same) -> bool; delete(key) -> bool
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def counts(self) -> tuple[int, int]: ...

def rebuild_wanted(
    occ: int,
    dele: int,
    live: int,
    dead: int,
    nslots: int,
    index_bytes: int,
    size: int,
    cap: int,
    threshold: float,
    min_bytes: int,
    max_size: int | None,
) -> tuple[bool, int | None]: ...
def move_records(
    nm: Any,
    slots: list[int],
    start: int,
    key_size: int,
    slot_size: int,
    views: list[Any],
    dst: Any,
    dst_lim: int,
    dst_seg: int,
    tail: int,
) -> tuple[int, int, int, bool]: ...
def build_records(*args: Any) -> tuple[int, int, int, int, int, int, int, bool]: ...
