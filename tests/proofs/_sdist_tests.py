"""Fetch a third-party project's own ``tests/`` from its source distribution.

Like ``tests/proofs/django_suite/fetch.py`` (which it generalises for cachelib and
others): pip downloads the sdist of exactly the installed version, its
``tests/`` subtree is extracted once into ``<project>/.cache/<name>-src/``
(git-ignored) and renamed into place atomically, so concurrent test
processes are safe. Nothing of theirs is ever copied into the repository.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
from importlib.metadata import version as dist_version
from pathlib import Path, PurePosixPath

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class FetchError(RuntimeError):
    """The sources could not be downloaded or extracted."""


def fetch_tests(dist: str, sentinel: str) -> Path:
    """The ``tests/`` directory of ``dist``'s sdist (the installed version).

    ``sentinel`` is a file under ``tests/`` whose presence proves the tree.
    """
    ver = dist_version(dist)
    root = PROJECT_ROOT / ".cache" / f"{dist.lower()}-src"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{dist.lower()}-{ver}"
    if (final / "tests" / sentinel).is_file():
        return final / "tests"
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=root))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
             "--disable-pip-version-check", "--quiet", f"{dist}=={ver}", "-d", str(work)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise FetchError(f"pip download {dist}=={ver} failed:\n{proc.stdout}\n{proc.stderr}")
        sdists = [p for p in work.iterdir() if p.name.endswith((".tar.gz", ".tgz"))]
        if len(sdists) != 1:
            raise FetchError(f"expected one sdist, found {[p.name for p in work.iterdir()]}")
        tree = work / "tree"
        with tarfile.open(sdists[0], "r:gz") as tar:
            members = []
            for m in tar.getmembers():
                parts = PurePosixPath(m.name).parts
                if len(parts) < 2 or parts[1] != "tests" or not (m.isfile() or m.isdir()):
                    continue
                if ".." in parts or m.name.startswith("/"):
                    raise FetchError(f"unsafe path in {sdists[0].name}: {m.name!r}")
                m.name = str(PurePosixPath(*parts[1:]))
                members.append(m)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tree, members=members, filter="data")
            else:  # Python < 3.11.4: the members were checked above
                tar.extractall(tree, members=members)
        if not (tree / "tests" / sentinel).is_file():
            raise FetchError(f"{sdists[0].name} has no tests/{sentinel}")
        try:
            os.rename(tree, final)
        except OSError:
            if not (final / "tests" / sentinel).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final / "tests"


def load_definitions(path: Path, names: set[str], module_name: str) -> types.ModuleType:
    """A module holding only the top-level classes/functions ``names`` of
    ``path`` (and its imports), for a conftest whose other parts need
    plugins we do not run (cachelib's starts servers with pytest-xprocess)."""
    tree = ast.parse(path.read_text(), str(path))
    keep = [
        node
        for node in tree.body
        if (isinstance(node, ast.ClassDef | ast.FunctionDef) and node.name in names)
        or (isinstance(node, ast.Import | ast.ImportFrom) and not _imports_plugin(node))
    ]
    mod = types.ModuleType(module_name)
    mod.__file__ = str(path)
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(path), "exec"), mod.__dict__)
    return mod


def _imports_plugin(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").split(".")[0] == "xprocess"
    return any(a.name.split(".")[0] == "xprocess" for a in node.names)


def load_modules(
    tests_dir: Path, names: list[str], conftest: types.ModuleType | None = None
) -> dict[str, types.ModuleType]:
    """Import ``tests_dir/<name>.py`` for each name, with ``conftest`` as
    their ``conftest`` (ours is restored afterwards: pytest has imported it
    under that name)."""
    import importlib.util

    saved = sys.modules.get("conftest")
    if conftest is not None:
        sys.modules["conftest"] = conftest
    try:
        out = {}
        for name in names:
            spec = importlib.util.spec_from_file_location(f"_third_party_{name}", tests_dir / f"{name}.py")
            assert spec is not None and spec.loader is not None
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            out[name] = mod
        return out
    finally:
        if saved is None:
            sys.modules.pop("conftest", None)
        else:
            sys.modules["conftest"] = saved
