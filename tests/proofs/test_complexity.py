"""A complexity budget: no function of mmcache branches more than THRESHOLD
ways, so each stays readable as one responsibility (issue 18).

The count is McCabe's, from the ast: 1, plus one per if / elif, loop,
conditional expression, except clause, comprehension ``for`` and ``if``,
match case, and each extra operand of ``and`` / ``or`` (a condition of
three parts is two decisions). ALLOWED names the functions let past it,
each with its reason; an entry that is no longer needed fails the test, so
the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "mmcache"
THRESHOLD = 15

# "module:qualified name" -> why it may branch more.
_HOT = "a hot path written out in one function on purpose: every call shows in the benchmarks"
ALLOWED: dict[str, str] = {
    "mmcache.table:MmapCache._get_probe": _HOT + " (every get the memo does not answer)",
}


def complexity(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """McCabe's number of ``fn``'s own body (nested functions count apart)."""
    n = 1
    todo: list[ast.AST] = list(ast.iter_child_nodes(fn))
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        if isinstance(node, ast.If | ast.For | ast.AsyncFor | ast.While | ast.IfExp | ast.ExceptHandler):
            n += 1
        elif isinstance(node, ast.comprehension):
            n += 1 + len(node.ifs)
        elif isinstance(node, ast.match_case):
            n += 1
        elif isinstance(node, ast.BoolOp):
            n += len(node.values) - 1
        todo.extend(ast.iter_child_nodes(node))
    return n


def functions(tree: ast.Module) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function with its qualified name (Class.method, outer.inner)."""
    out: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                out.append((prefix + child.name, child))
                walk(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".")
            else:
                walk(child, prefix)

    walk(tree, "")
    return out


def measured() -> dict[str, int]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        module = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
        for name, fn in functions(ast.parse(path.read_text(), str(path))):
            out[f"{module}:{name}"] = complexity(fn)
    return out


def test_no_function_is_over_the_threshold() -> None:
    found = measured()
    over = {name: n for name, n in found.items() if n > THRESHOLD and name not in ALLOWED}
    assert over == {}, f"functions over complexity {THRESHOLD}: split them by responsibility"


def test_the_allow_list_names_only_what_needs_it() -> None:
    found = measured()
    stale = {name for name in ALLOWED if found.get(name, 0) <= THRESHOLD}
    assert stale == set(), "no longer over the threshold (or gone): remove from ALLOWED"


def test_the_count_is_mccabes() -> None:
    """The counter can fail: known shapes give known numbers."""
    src = '''
def f(a, b, c):
    if a and b or c:
        for x in range(3):
            pass
    elif b:
        pass
    try:
        y = [i for i in a if i]
    except ValueError:
        y = 1 if c else 2
    while a:
        def inner():
            if b:
                pass
        break
    return y
'''
    [(name, fn), (inner, _)] = functions(ast.parse(src))
    assert (name, inner) == ("f", "f.inner")
    # 1 + if + (and, or) + for + elif + comprehension (for, if) + except + ifexp + while
    assert complexity(fn) == 1 + 1 + 2 + 1 + 1 + 2 + 1 + 1 + 1
