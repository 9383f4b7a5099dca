"""The code hash behind ``@mmap_cached``'s default invalidation (``_codehash``):
text that does nothing keeps it, every change of behaviour changes it."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from mmcache.decorators._codehash import code_hash


def _hash_of(src: str) -> str | None:
    ns: dict[str, Any] = {}
    exec(compile(textwrap.dedent(src), "<test>", "exec"), ns)
    return code_hash(ns["f"])


SAME = [  # pairs that do the same: one hash
    ("def f(x):\n    return x + 1\n", 'def f(x):\n    """Doc."""\n\n    return (x +\n        1)  # one\n'),
    (
        "def f(x):\n    class C:\n        'doc'\n        y = x\n    return C\n",
        "def f(x):\n    class C:\n        y = x\n    return C\n",
    ),
    ("def f(x):\n    return [i for i in x]\n", "def f(x):\n    return [\n        i\n        for i in x]\n"),
    ("def f(x):\n    pass\n", "def f(x):\n\n    pass\n"),
]
DIFFERENT = [  # pairs that differ in behaviour: two hashes
    ("def f(x):\n    return x + 1\n", "def f(x):\n    return x + 2\n"),
    ("def f(x):\n    return x + 1\n", "def f(x):\n    return x - 1\n"),
    ("def f(x, y=1):\n    return y\n", "def f(x, y=2):\n    return y\n"),
    ("def f(x, *, y=1):\n    return y\n", "def f(x, *, y=2):\n    return y\n"),
    ("def f(x):\n    return g(x)\n", "def f(x):\n    return h(x)\n"),
    ("def f(x):\n    return (lambda: 1)()\n", "def f(x):\n    return (lambda: 2)()\n"),
    (
        "def f(x):\n    try:\n        a()\n        b()\n    except E:\n        pass\n",
        "def f(x):\n    try:\n        a()\n    except E:\n        pass\n    b()\n",
    ),
    ("def f(x):\n    return 1 if x else 2\n", "def f(x):\n    return 1 if not x else 2\n"),
    ("def f(x):\n    return 'doc'\n", "def f(x):\n    return 'other'\n"),
    ("def f(x):\n    return {1, 2}\n", "def f(x):\n    return {1, 3}\n"),
]


@pytest.mark.parametrize(("a", "b"), SAME)
def test_code_hash_ignores_text_that_does_nothing(a: str, b: str) -> None:
    assert _hash_of(a) == _hash_of(b) is not None


@pytest.mark.parametrize(("a", "b"), DIFFERENT)
def test_code_hash_sees_every_change_of_behaviour(a: str, b: str) -> None:
    assert _hash_of(a) != _hash_of(b)


WRAPPED = """
import functools

def logged(fn):
    @functools.wraps(fn)
    def inner(*a, **kw):
        return fn(*a, **kw)
    return inner

@logged
def f(x):
    return x + {n}
"""


def test_a_function_under_other_decorators_is_hashed_down_its_wrapped_chain() -> None:
    # The outer code is the same generic wrapper: only f's own body tells them apart.
    assert _hash_of(WRAPPED.format(n=1)) != _hash_of(WRAPPED.format(n=2))
    assert _hash_of(WRAPPED.format(n=1)) == _hash_of(WRAPPED.format(n=1).replace("x + 1", "(x\n        + 1)"))


def test_no_python_code_no_hash() -> None:
    import functools

    assert code_hash(max) is None and code_hash(functools.partial(max, 1)) is None
