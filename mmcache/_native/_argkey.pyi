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

def encode(value: object, typed: bool, /) -> bytes | None: ...
