from collections.abc import Callable
from typing import Any

class KeyFn:
    def __init__(
        self,
        prefix: bytes,
        n: int,
        typed: bool,
        digest: Callable[[bytes], bytes],
        fallback: Callable[[tuple[Any, ...], dict[str, Any]], bytes],
    ) -> None: ...
    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any], /) -> bytes: ...

class Hit:
    get: Callable[[bytes, Any], Any] | None
    def __init__(
        self,
        keyfn: Callable[[tuple[Any, ...], dict[str, Any]], bytes],
        loads: Callable[[Any], Any],
        stats: list[int],
        miss: object,
        slow: Callable[..., Any],
    ) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, obj: object, objtype: type | None = None) -> Any: ...

def encode(value: object, typed: bool, /) -> bytes | None: ...
def xxh3_128_mid(data: bytes, /) -> bytes: ...
