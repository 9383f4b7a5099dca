"""Run Django's own cache and session tests against an arbitrary cache backend.

Usage::

    python tests/proofs/django_suite/run_suite.py --backend dotted.path.Backend \\
        [--scope full|base] [--location-kind dir|file] [--skip NAME=REASON] [-v]

How it works:

1. ``fetch.py`` provides the ``tests/`` tree of the source distribution of the
   installed Django version (downloaded from PyPI once, cached outside the tracked
   files of this repository).
2. A throw-away test root is built in a temporary directory: every entry of
   Django's ``tests/`` is symlinked into it, except ``runtests.py`` (copied: Python
   resolves a symlinked script to put *its* directory on ``sys.path``) and the
   ``cache`` and ``sessions_tests`` apps, whose modules are written with Django's
   LocMemCache renamed to the backend under test, and generated modules
   (``generate.py`` says what and why). Nothing is written into Django's tree or
   into this repository.
3. ``--scope full`` (the default) runs both apps whole: Django's
   ``BaseCacheTests`` configured like its ``FileBasedCacheTests`` (every alias
   shares one ``LOCATION``, a directory, or a path prefix with
   ``--location-kind file``), LocMemCacheTests' own tests (LRU with
   MAX_ENTRIES=9), the middleware, ``cache_page``, i18n, HEAD and template
   response tests, and the ``cache`` and ``cached_db`` session engines. Tests
   of other backends or engines are skipped with their reason
   (``generate.EXCLUDED``). ``--scope base`` runs ``BaseCacheTests`` alone.
   ``--skip NAME=REASON`` skips one of its tests, with that reason.
4. Django's own ``tests/runtests.py`` runs them with ``--parallel=1`` and
   settings that make the backend the default cache.
5. The output is checked: every ``test*`` method of ``BaseCacheTests`` (found by
   parsing Django's ``cache/tests.py``) must have run, and every test that ran
   must be accounted for. A line per app and a final line
   ``django cache suite: ran N: N passed[, N failed], N skipped`` are printed, with
   each skip's reason; the exit status is non-zero on any failure, error,
   missing test, or skip whose reason is not one given here.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parents[2]


def _load(name: str) -> ModuleType:
    """Import a sibling module (``fetch``, ``generate``) however this file was started."""
    spec = importlib.util.spec_from_file_location(f"_mmcache_django_{name}", HERE / f"{name}.py")
    if spec is None or spec.loader is None:  # pragma: no cover
        raise ImportError(f"cannot load {HERE / name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


G = _load("generate")
CONFORMANCE_LABEL = f"cache.{G.CONFORMANCE_MODULE}.{G.CONFORMANCE_CLASS}"


def base_cache_test_names(cache_tests_py: Path) -> list[str]:
    """Names of the ``test*`` methods defined by ``BaseCacheTests``."""
    tree = ast.parse(cache_tests_py.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "BaseCacheTests":
            return sorted(
                item.name
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name.startswith("test")
            )
    raise RuntimeError(f"no BaseCacheTests class in {cache_tests_py}")


def build_test_root(django_tests: Path, backend: str, location_kind: str, scope: str,
                    skips: dict[str, str]) -> Path:  # fmt: skip
    """Create the temporary test root described in the module docstring."""
    root = Path(tempfile.mkdtemp(prefix="mmcache-django-suite-"))
    apps = ("cache", "sessions_tests")
    for entry in django_tests.iterdir():
        if entry.name in {*apps, "runtests.py", "__pycache__"}:
            continue
        (root / entry.name).symlink_to(entry)
    shutil.copy2(django_tests / "runtests.py", root / "runtests.py")
    for app in apps:
        G.write_app(django_tests, root, app)
    conformance_skips = {f"{G.CONFORMANCE_CLASS}.{k}": v for k, v in skips.items()}
    locmem = G.LOCMEM_CLASS + "."
    conformance_skips.update({k: v for k, v in G.EXCLUDED["cache"].items() if k.startswith(locmem)})
    texts = {
        root / f"{G.SUITE_MODULE}.py": G.BACKEND_MODULE.format(backend=backend, stores_env=G.STORES_ENV),
        root / f"{G.SETTINGS_MODULE}.py": G.SETTINGS,
        root / "cache" / f"{G.CONFORMANCE_MODULE}.py": G.CONFORMANCE.format(
            backend=G.SUITE_BACKEND,
            location_kind=location_kind,
            skips=conformance_skips,
            conformance=G.CONFORMANCE_CLASS,
            locmem=G.LOCMEM_CLASS,
            with_locmem=scope == "full",
        ),
        root / "sessions_tests" / f"{G.ENGINES_MODULE}.py": G.ENGINES.format(
            skips=G.EXCLUDED["sessions_tests"]
        ),
    }
    for path, text in texts.items():
        path.write_text(text, encoding="utf-8")
    (root / "stores").mkdir()
    return root


def child_env(root: Path | None = None) -> dict[str, str]:
    """Environment for the child: the project (and cwd) importable, no .pyc
    writes, the LocMem stores under ``root``."""
    env = dict(os.environ)
    paths = [str(PROJECT_ROOT), os.getcwd()]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    # Never write bytecode into the shared, cached Django tree.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("DJANGO_SETTINGS_MODULE", None)
    if root is not None:
        env[G.STORES_ENV] = str(root / "stores")
    return env


def check_backend_importable(backend: str, env: dict[str, str]) -> str | None:
    """Return an error message if ``backend`` cannot be imported in the child env."""
    module, _, cls = backend.rpartition(".")
    if not module:
        return f"--backend must be a dotted path to a class, got {backend!r}"
    code = f"import importlib, sys\nm = importlib.import_module({module!r})\ngetattr(m, {cls!r})\n"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"cannot import backend {backend!r}: {last}"
    return None


# "test_x (app.module.Class.test_x)" starts each verbose result line (and each
# FAIL:/ERROR: header); a test whose subtests failed prints no status on
# Python < 3.12, so the next description may follow on the same line.
_TEST_ID = re.compile(r"(test\w*) \(((\w+)\.[\w.]+\.(\w+))\.(test\w*)\)")
# unittest prints the reason's repr: in ' or " quotes.
_SKIPPED = re.compile(r"^test\w* \(([\w.]+)\)(?:\n[^\n]*)? \.\.\. skipped (['\"])(.*)\2$", re.M)


@dataclass
class Outcome:
    expected: list[str]  # BaseCacheTests' tests, all of which must run
    output: str
    returncode: int
    ran: int | None = None
    seen: dict[str, str] = field(default_factory=dict)  # "app.module.Class.test" -> app
    failed: set[str] = field(default_factory=set)
    other_errors: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # test id -> reason
    summary_line: str = ""

    @property
    def missing(self) -> list[str]:
        names = {t.rsplit(".", 1)[1] for t in self.seen if f".{G.CONFORMANCE_CLASS}." in t}
        return [name for name in self.expected if name not in names]

    def counts(self, app: str | None = None) -> tuple[int, int, int, int]:
        """(ran, passed, failed, skipped), of one app or of all."""
        ids = [t for t, a in self.seen.items() if app is None or a == app]
        failed = sum(t in self.failed for t in ids)
        skipped = sum(t in self.skipped for t in ids)
        return len(ids), len(ids) - failed - skipped, failed, skipped

    @property
    def n_failed(self) -> int:
        return len(self.failed) + len(self.missing) + len(self.other_errors)


def parse_output(output: str, expected: list[str], returncode: int) -> Outcome:
    """Read unittest's verbose (-v 2) output as printed by Django's runner."""
    outcome = Outcome(expected=expected, output=output, returncode=returncode)
    for match in _TEST_ID.finditer(output):
        if match.group(1) == match.group(5):
            outcome.seen[f"{match.group(2)}.{match.group(5)}"] = match.group(3)
    for match in _SKIPPED.finditer(output):
        if match.group(1) in outcome.seen:
            outcome.skipped[match.group(1)] = match.group(3)
    for match in re.finditer(r"^(?:FAIL|ERROR): (\S+) \(([^)\s]*)\)", output, re.M):
        test = match.group(2)
        if test in outcome.seen:
            outcome.failed.add(test)
        else:  # setUpClass, an import error of a module, ...
            outcome.other_errors.append(f"{match.group(1)} ({match.group(2)})")
    ran = re.findall(r"^Ran (\d+) tests? in ", output, re.M)
    if ran:
        outcome.ran = int(ran[-1])
        if outcome.ran != len(outcome.seen):
            outcome.other_errors.append(f"runtests.py ran {outcome.ran} tests; {len(outcome.seen)} were read")
    lines = re.findall(r"^(OK|FAILED)\b.*$", output, re.M)
    if lines:
        outcome.summary_line = lines[-1]
        unexpected = re.search(r"unexpected successes=(\d+)", lines[-1])
        if unexpected:
            outcome.other_errors.append(f"{unexpected.group(1)} unexpected success(es)")
    if outcome.ran is None:
        outcome.other_errors.append(f"runtests.py ran no test (exit {returncode})")
    return outcome


def run_runtests(root: Path, env: dict[str, str], labels: list[str], verbose: bool,
                 timeout: float) -> tuple[str, int]:  # fmt: skip
    """Run Django's runtests.py on the generated module; return (output, exit code)."""
    cmd = [
        sys.executable,
        str(root / "runtests.py"),
        *labels,
        f"--settings={G.SETTINGS_MODULE}",
        "--parallel=1",
        "--verbosity=2",
        "--noinput",
    ]
    if verbose:
        print("+", " ".join(cmd), f"(cwd={root})", flush=True)
    proc = subprocess.Popen(
        cmd,
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    assert proc.stdout is not None
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    watchdog = threading.Timer(timeout, kill)
    watchdog.start()
    chunks: list[str] = []
    try:
        for line in proc.stdout:
            chunks.append(line)
            if verbose:
                print(line, end="", flush=True)
        rc = proc.wait()
    finally:
        watchdog.cancel()
        proc.stdout.close()
    if timed_out.is_set():
        chunks.append(f"\n[run_suite] timed out after {timeout:.0f}s; killed runtests.py\n")
        rc = rc or 1
    return "".join(chunks), rc


def summary(ran: int, passed: int, failed: int, skipped: int) -> str:
    """The counts as "ran N: P passed, S skipped", with "F failed" only if
    some did: a passing run prints no line that reads like a failure."""
    return f"ran {ran}: {passed} passed, " + (f"{failed} failed, " if failed else "") + f"{skipped} skipped"


def report(outcome: Outcome, allowed: set[str], verbose: bool) -> int:
    """Print the findings; return the exit status."""
    if not verbose and (outcome.n_failed or outcome.returncode):
        # Show unittest's own failure report (from the first separator on).
        start = outcome.output.find("\n=====")
        print(outcome.output[start:] if start >= 0 else outcome.output[-20000:])
    print(
        f"runtests.py ran {outcome.ran if outcome.ran is not None else 'none'} "
        f"({outcome.summary_line or 'no result line'}, exit {outcome.returncode})"
    )
    # Skips by class and reason: "Class (N tests)" when all its tests were
    # skipped for one reason, else the tests by name.
    groups: dict[tuple[str, str], list[str]] = {}
    for test, reason in outcome.skipped.items():
        cls, name = test.rsplit(".", 1)
        groups.setdefault((cls, reason), []).append(name)
    for (cls, reason), names in sorted(groups.items()):
        whole = len(names) == sum(t.rsplit(".", 1)[0] == cls for t in outcome.seen)
        what = (
            f"{cls} ({len(names)} test{'s' * (len(names) > 1)})"
            if whole
            else f"{cls}.{{{', '.join(sorted(names))}}}"
        )
        print(
            f"  skipped: {what}: {reason}"
            + ("" if reason in allowed else "  <- not an exclusion of run_suite")
        )
    for name in sorted(outcome.failed):
        print(f"  failed:  {name}")
    for name in outcome.missing:
        print(f"  not run: {G.CONFORMANCE_CLASS}.{name}")
    for what in outcome.other_errors:
        print(f"  error:   {what}")
    passed_by_class: dict[str, int] = {}
    for test in outcome.seen:
        if test not in outcome.failed and test not in outcome.skipped:
            cls = test.rsplit(".", 1)[0]
            passed_by_class[cls] = passed_by_class.get(cls, 0) + 1
    for cls, n in sorted(passed_by_class.items()):
        print(f"  passed:  {cls} ({n})")
    for app in sorted(set(outcome.seen.values())):
        ran, passed, failed, skipped = outcome.counts(app)
        print(f"  {app}: {summary(ran, passed, failed, skipped)}")
    ran, passed, failed, skipped = outcome.counts()
    failed += len(outcome.missing) + len(outcome.other_errors)
    print(f"django cache suite: {summary(ran, passed, failed, skipped)}")
    unexplained = [t for t, reason in outcome.skipped.items() if reason not in allowed]
    bad = outcome.returncode != 0 or outcome.n_failed > 0 or bool(unexplained)
    return 1 if bad else 0


def _skip_arg(text: str) -> tuple[str, str]:
    name, sep, reason = text.partition("=")
    if not sep or not name.startswith("test") or not reason.strip():
        raise argparse.ArgumentTypeError(f"--skip takes test_name=reason, got {text!r}")
    return name, reason.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--backend", required=True, help="dotted path of the cache class")
    parser.add_argument(
        "--scope",
        choices=("full", "base"),
        default="full",
        help="the cache and sessions_tests apps whole (default), or BaseCacheTests alone",
    )
    parser.add_argument(
        "--location-kind",
        choices=("dir", "file"),
        default="dir",
        help="LOCATION shared by BaseCacheTests' aliases: a fresh directory (default) or a path prefix",
    )
    parser.add_argument(
        "--skip", type=_skip_arg, action="append", default=[], metavar="NAME=REASON",
        help="skip BaseCacheTests.NAME against this backend, for REASON (repeatable)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary test root")
    parser.add_argument("-v", "--verbose", action="store_true", help="stream runtests output")
    args = parser.parse_args(argv)
    skips = dict(args.skip)

    fetch = _load("fetch")
    try:
        django_tests: Path = fetch.fetch_django_tests()
    except fetch.FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(f"django cache suite: {summary(0, 0, 1, 0)}")
        return 2
    expected = base_cache_test_names(django_tests / "cache" / "tests.py")
    labels = ["cache", "sessions_tests"] if args.scope == "full" else [CONFORMANCE_LABEL]
    print(
        f"Django {fetch.installed_django_version()} tests from {django_tests}: {' '.join(labels)}\n"
        f"backend {args.backend}; BaseCacheTests' LOCATION kind {args.location_kind!r} shared by all aliases",
        flush=True,
    )

    problem = check_backend_importable(args.backend, child_env())
    if problem:
        print(f"error: {problem}")
        print(f"django cache suite: {summary(0, 0, len(expected), 0)}")
        return 1

    root = build_test_root(django_tests, args.backend, args.location_kind, args.scope, skips)
    try:
        output, rc = run_runtests(root, child_env(root), labels, args.verbose, args.timeout)
    finally:
        if args.keep:
            print(f"test root kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    allowed = set(skips.values()) | {r for app in G.EXCLUDED.values() for r in app.values()}
    return report(parse_output(output, expected, rc), allowed, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
