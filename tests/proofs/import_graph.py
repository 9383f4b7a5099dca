"""The import graph of the mmcache package, read with ast (no import runs).

Used by test_import_layers.py; also runnable: ``python tests/proofs/import_graph.py``
prints every edge, the lazy ones (inside a function) marked.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "mmcache"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Import nodes that run (not under ``if TYPE_CHECKING``), each with
    whether it sits inside a function (a lazy import)."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def walk(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    walk(sub, lazy)
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append((child, lazy))
            walk(child, lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    walk(tree, False)
    return found


def _targets(mod: str, is_pkg: bool, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The mmcache modules one import statement loads."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    if node.level:
        base = mod.split(".")
        base = base if is_pkg else base[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join([*base, node.module] if node.module else base)
    else:
        prefix = node.module or ""
    out = set()
    for a in node.names:
        if f"{prefix}.{a.name}" in known:
            out.add(f"{prefix}.{a.name}")  # a submodule (from . import _layout)
        elif prefix in known:
            out.add(prefix)
    return out


def edges() -> dict[tuple[str, str], bool]:
    """{(importer, imported): lazy} for every runtime import between mmcache
    modules; ``lazy`` is True only if every such import is inside a function."""
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    known = set(files)
    out: dict[tuple[str, str], bool] = {}
    for mod, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        for node, lazy in _runtime_imports(tree):
            for target in _targets(mod, path.name == "__init__.py", node, known):
                if target != mod and not mod.startswith(target + "."):
                    out[(mod, target)] = out.get((mod, target), True) and lazy
    return out


def cycles(graph: dict[tuple[str, str], bool]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    succ: dict[str, list[str]] = {}
    for a, b in graph:
        succ.setdefault(a, []).append(b)
        succ.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return comps


if __name__ == "__main__":
    for (a, b), lazy in sorted(edges().items()):
        print(f"{a} -> {b}{'  (lazy)' if lazy else ''}")
    print("cycles:", cycles(edges()))
