"""Fetch Django's own test suite for the installed Django version.

Django's wheels do not ship its test suite, but its source distribution on PyPI
does (``tests/``).  This module downloads the sdist of *exactly* the installed
Django version with pip, extracts its ``tests/`` tree once into a cache
directory outside the repository's tracked files and returns that path.

Cache directory: ``$MMCACHE_DJANGO_SRC`` if set, else ``<project>/.cache/django-src/``
(``.cache/`` is git-ignored).  Nothing of Django's is ever copied into the repository.

The function is idempotent and safe to run from several processes at once: every
process downloads and extracts into its own temporary directory inside the cache
directory and then atomically renames the finished tree into place; a process that
loses the race simply discards its copy.

Usable as a script: ``python tests/proofs/django_suite/fetch.py`` prints the tests path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path, PurePosixPath

PROJECT_ROOT = Path(__file__).resolve().parents[3]
ENV_VAR = "MMCACHE_DJANGO_SRC"
# A file whose presence proves that an extracted tree is complete (the rename
# into place is atomic, so a tree under its final name is always complete; this
# is a belt-and-braces check against a tree left behind by something else).
_SENTINEL = Path("tests") / "cache" / "tests.py"


class FetchError(RuntimeError):
    """The Django sources could not be downloaded or extracted."""


def installed_django_version() -> str:
    """The version of the Django distribution installed in this interpreter."""
    try:
        return dist_version("Django")
    except PackageNotFoundError as exc:  # pragma: no cover - depends on the env
        raise FetchError("Django is not installed in this interpreter") from exc


def cache_dir() -> Path:
    """Where sdists and extracted trees are kept."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser().resolve()
    return PROJECT_ROOT / ".cache" / "django-src"


def _download_sdist(version: str, dest: Path) -> Path:
    """Download the sdist of ``django==version`` into ``dest`` and return its path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-binary",
        ":all:",
        "--no-deps",
        "--disable-pip-version-check",
        "--quiet",
        f"django=={version}",
        "-d",
        str(dest),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise FetchError(
            f"pip download of django=={version} failed (exit {proc.returncode}):\n"
            f"{proc.stdout}\n{proc.stderr}"
        )
    sdists = [p for p in dest.iterdir() if p.name.endswith((".tar.gz", ".tgz"))]
    if len(sdists) != 1:
        raise FetchError(f"expected one sdist in {dest}, found {[p.name for p in dest.iterdir()]}")
    return sdists[0]


def _sdist_path(root: Path, version: str) -> Path:
    """Return the cached sdist for ``version``, downloading it if needed."""
    target = root / f"django-{version}.tar.gz"
    if target.is_file():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    try:
        downloaded = _download_sdist(version, tmp)
        # Atomic: a concurrent process may have done the same; either copy is fine.
        os.replace(downloaded, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _extract_tests(sdist: Path, dest: Path) -> None:
    """Extract the ``<top>/tests/`` subtree of ``sdist`` into ``dest/tests``."""
    with tarfile.open(sdist, "r:gz") as tar:
        members: list[tarfile.TarInfo] = []
        for member in tar.getmembers():
            parts = PurePosixPath(member.name).parts
            if len(parts) < 2 or parts[1] != "tests":
                continue
            if ".." in parts or member.name.startswith("/"):
                raise FetchError(f"unsafe path in {sdist.name}: {member.name!r}")
            if not (member.isfile() or member.isdir()):
                continue  # no links or devices: Django's tests/ has none we need
            member.name = str(PurePosixPath(*parts[1:]))
            members.append(member)
        if not members:
            raise FetchError(f"{sdist.name} has no tests/ directory")
        data_filter = getattr(tarfile, "data_filter", None)
        if data_filter is not None:
            tar.extractall(dest, members=members, filter=data_filter)
        else:  # pragma: no cover - Python < 3.11.4; members were checked above
            tar.extractall(dest, members=members)


def fetch_django_tests(version: str | None = None) -> Path:
    """Return the ``tests/`` directory of Django's sources for ``version``.

    ``version`` defaults to the installed Django version.  Downloads and extracts
    on first use only.
    """
    version = version or installed_django_version()
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"django-{version}"
    if (final / _SENTINEL).is_file():
        return final / "tests"

    sdist = _sdist_path(root, version)
    work = Path(tempfile.mkdtemp(prefix=f".extract-{version}-", dir=root))
    try:
        os.chmod(work, 0o755)  # mkdtemp makes it 0o700; the tree is not secret
        _extract_tests(sdist, work)
        if not (work / _SENTINEL).is_file():
            raise FetchError(f"{sdist.name} does not contain {_SENTINEL}")
        try:
            os.rename(work, final)
        except OSError:
            # Lost the race to a concurrent process (final exists and is not
            # empty): use its tree if it is complete.
            if not (final / _SENTINEL).is_file():
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return final / "tests"


def main() -> int:
    try:
        print(fetch_django_tests())
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
