"""The ``mmcache`` command: inspect and maintain a table from the shell.

    mmcache stats PATH [--format F]      counters, fill, heap bytes, hit rate (F: table, json, prometheus)
    mmcache ls PATH [--limit N] [GLOB]   keys with value size, codec, mtime, expiry
    mmcache get PATH KEY [--bytes-key] [--pickle]
    mmcache get LOCATION KEY [--prefix P] [--version N] [--raw-key]
    mmcache verify PATH                  "ok" and exit 0, or the problems and exit 2
    mmcache repair PATH                  fix what verify reports
    mmcache rebuild PATH [--size N]      compact the heap, optionally resize
    mmcache clear PATH [--yes]           remove every entry
    mmcache prune-decorator-tables [DIR] [--dry-run]
                                         remove @mmap_cached tables of an older key scheme

PATH is a table's index file, or a Django cache's LOCATION directory (the
backend keeps its table in ``LOCATION/mmcache``). On a LOCATION, ``get`` takes
KEY as the application passed it to ``cache.get``: Django's default key
function applied (``PREFIX:VERSION:KEY``, with ``--prefix`` for KEY_PREFIX and
``--version`` for VERSION, default '' and 1) and the value unpickled with the
codec stored beside it; ``--raw-key`` takes KEY as stored. ``--django-key``
does the same on an index file given by path. A project with its own
KEY_FUNCTION passes the key it makes with ``--raw-key``.

Exit status: 0 success; 1 an error (missing or unreadable table, bad value,
a miss on ``get``); 2 a usage error, or ``verify`` found the table damaged;
130 interrupted. Errors are one line on stderr, never a traceback.

The command works only through the public API: it opens an existing table
with ``MmapCache.open`` (it never creates one) and reads its parameters from
the file. Handles are opened with ``eviction="fifo"`` so that looking at
entries does not refresh their LRU recency. A progress line is drawn on
stderr only when stderr is a terminal. ``clear`` asks for confirmation on a
terminal and, when stdin is not one, refuses unless given ``--yes``.

What the public API implies: opening a table that a killed writer left
mid-update repairs it first, so ``verify`` then reports "ok"; ``stats``
leaves out ``max_entries``, ``max_bytes`` and ``eviction``, which describe
the opening handle, not the table.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import pickle
import pprint
import sys
import time
from collections.abc import Sequence
from typing import Any

from . import MmapCache, MmcacheError, __version__, _metrics
from ._cli_format import (
    Progress,
    format_expiry,
    format_time,
    glob_text,
    human_bytes,
    key_text,
    parse_bytes_key,
    stats_report,
    table,
    table_stats,
)
from ._cli_paths import resolve
from .errors import CorruptCacheError, UnsafePathError
from .serialization import CLOUDPICKLE, NAMES, PICKLE, RAW, UnknownCodecError, loads


class CliError(Exception):
    """A failure to report as one line on stderr, with an exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _open(path: str) -> MmapCache:
    """Open an existing table (never create one), by index file or Django
    LOCATION; eviction "fifo" so that looking refreshes no LRU recency."""
    return MmapCache.open(resolve(path)[0], eviction="fifo")


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


# ------------------------------------------------------------------ commands
def cmd_stats(args: argparse.Namespace) -> int:
    """Print the table's counters as an aligned table or as JSON."""
    with _open(args.path) as c:
        stats = c.get_stats()
    if args.format == "prometheus":
        _out(_metrics.prometheus_text([table_stats(stats)]).rstrip("\n"))
        return 0
    if args.json or args.format == "json":
        _out(json.dumps(table_stats(stats), indent=2))
        return 0
    for line in stats_report(stats):
        _out(line)
    return 0


def _codec(flags: int) -> str:
    return NAMES.get(flags, f"{flags:#06x}")


def cmd_ls(args: argparse.Namespace) -> int:
    """List live entries, sorted by key (str keys first), optionally filtered."""
    rows: list[tuple[str, str, str, str, str]] = []
    with _open(args.path) as c, Progress(f"listing {args.path}") as prog:
        prog.spin()
        entries = dict(c.entries())  # one pass over the roster; counts no hits
        keys = list(entries)
        if args.glob is not None:
            keys = [k for k in keys if fnmatch.fnmatchcase(glob_text(k), args.glob)]
        keys.sort(key=lambda k: (isinstance(k, bytes), k))
        matched = len(keys)
        if args.limit is not None:
            keys = keys[: args.limit]
        now = time.time_ns()
        for k in keys:
            e = entries[k]
            size = human_bytes(len(e.value))
            rows.append(
                (size, _codec(e.flags), format_time(e.mtime_ns), format_expiry(e.expire_ns, now), key_text(k))
            )
    if rows:
        for line in table([("SIZE", "CODEC", "MODIFIED", "EXPIRES", "KEY"), *rows], right=(True,)):
            _out(line)
    elif sys.stdout.isatty():
        print("no entries" + (f" match {args.glob!r}" if args.glob is not None else ""), file=sys.stderr)
    if matched > len(keys):
        print(f"mmcache: showing {len(keys)} of {matched} entries (--limit)", file=sys.stderr)
    return 0


def _decode(value: bytes, flags: int) -> Any:
    """The object a value holds: unpickled for the pickle codecs and for raw
    values that start like a pickle (protocol 2+); other raw values as bytes."""
    if flags in (PICKLE, CLOUDPICKLE) or (flags == RAW and value[:1] == b"\x80"):
        try:
            return pickle.loads(value)
        except Exception as e:  # unpickling runs arbitrary code: report any failure as one line
            raise CliError(
                f"cannot unpickle the value: {type(e).__name__}: {e} "
                "(is the module that defined it importable? try PYTHONPATH)"
            ) from None
    if flags == RAW:
        return value
    raise CliError(f"the value has codec flags {flags:#06x}, which this mmcache cannot decode")


def _django_mode(args: argparse.Namespace, is_location: bool) -> bool:
    """Whether KEY is a Django key (see the module docstring for the rule)."""
    asked = args.django_key or args.prefix is not None or args.key_version is not None
    if args.raw_key and asked:
        raise CliError("--raw-key takes KEY as stored: it excludes --django-key, --prefix and --version", 2)
    if args.bytes_key and (asked or (is_location and not args.raw_key)):
        raise CliError("a Django key is a str: --bytes-key goes with --raw-key", 2)
    return asked or (is_location and not args.raw_key)


def _get_django(c: MmapCache, args: argparse.Namespace) -> int:
    """``cache.get(KEY)`` as the application does it: Django's default key
    function, then the value decoded with the codec its flags name."""
    made = f"{args.prefix or ''}:{1 if args.key_version is None else args.key_version}:{args.key}"
    entry = c.get_entry(made)
    if entry is None:
        hint = ""
        if c.get_entry(args.key) is not None:
            hint = f"; {args.key!r} itself is a key: add --raw-key"
        raise CliError(f"no entry for Django key {args.key!r} (stored as {made!r}) in {args.path}{hint}")
    try:
        value = loads(entry.value, entry.flags)
    except UnknownCodecError as e:
        raise CliError(str(e)) from None
    except Exception as e:  # unpickling runs arbitrary code: report any failure as one line
        raise CliError(
            f"cannot unpickle the value: {type(e).__name__}: {e} "
            "(is the module that defined it importable? try PYTHONPATH)"
        ) from None
    _out(pprint.pformat(value, sort_dicts=False))
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    """Write one value to stdout: raw bytes, or pretty-printed with --pickle
    or for a Django key."""
    index, is_location = resolve(args.path)
    django = _django_mode(args, is_location)
    key: str | bytes = parse_bytes_key(args.key) if args.bytes_key else args.key
    with MmapCache.open(index, eviction="fifo") as c:
        if django:
            return _get_django(c, args)
        entry = c.get_entry(key)
    if entry is None:
        hint = " (a bytes key? add --bytes-key)" if isinstance(key, str) and key[:2] in ("b'", 'b"') else ""
        raise CliError(f"no entry for key {key!r} in {args.path}{hint}")
    if args.pickle:
        _out(pprint.pformat(_decode(entry.value, entry.flags), sort_dicts=False))
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(entry.value)
        sys.stdout.buffer.flush()
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Check every invariant; a damaged table (even one that will not open)
    exits 2, a table that cannot be checked at all exits 1."""
    try:
        with _open(args.path) as c, Progress(f"verifying {args.path}").spin():
            problems = c.verify()
    except CorruptCacheError as e:
        raise CliError(f"damaged: {e}", status=2) from None
    if not problems:
        _out("ok")
        return 0
    _out(f"{args.path}: {len(problems)} problem{'s' if len(problems) != 1 else ''} found:")
    for p in problems:
        _out(f"  - {p}")
    print(f"mmcache: {args.path} is inconsistent; `mmcache repair` fixes it", file=sys.stderr)
    return 2


def cmd_repair(args: argparse.Namespace) -> int:
    """Fix counters, roster and damaged slots; print what was fixed."""
    with _open(args.path) as c, Progress(f"repairing {args.path}").spin():
        fixed = c.repair()
    for line in fixed:
        _out(f"fixed: {line}")
    _out("nothing to repair" if not fixed else f"repaired {args.path}")
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    """Compact into a new generation, optionally with a new number of slots."""
    with _open(args.path) as c:
        before = c.get_stats()
        with Progress(f"rebuilding {args.path}").spin():
            c.atomic_rebuild(args.size)
        after = c.get_stats()
    dropped = before["occupied_count"] - after["occupied_count"]
    _out(
        f"rebuilt {args.path}: generation {before['generation']} -> {after['generation']}, "
        f"{after['occupied_count']:,} entries"
        + (f" ({dropped:,} expired or unreadable dropped)" if dropped else "")
        + (f", size {before['size']:,} -> {after['size']:,} slots" if before["size"] != after["size"] else "")
        + f", heap {human_bytes(before['heap_live_bytes'] + before['heap_dead_bytes'])}"
        f" -> {human_bytes(after['heap_live_bytes'] + after['heap_dead_bytes'])}"
    )
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    """Remove every entry. Without --yes it asks on a terminal and refuses
    when stdin is not one (a script must say --yes)."""
    with _open(args.path) as c:
        n = c.get_stats()["occupied_count"]  # not len(c): a damaged counter may not fit an int
        if not args.yes:
            if not sys.stdin.isatty():
                raise CliError(f"refusing to clear {args.path} without --yes (stdin is not a terminal)")
            sys.stderr.write(f"remove all {n:,} entries from {args.path}? [y/N] ")
            sys.stderr.flush()
            if sys.stdin.readline().strip().lower() not in ("y", "yes"):
                raise CliError("not cleared")
        c.clear()
    _out(f"cleared {args.path}: removed {n:,} entries")
    return 0


def cmd_prune_decorator_tables(args: argparse.Namespace) -> int:
    """Remove the decorator tables no current @mmap_cached reads (decorators._prune)."""
    from .decorators._location import default_dir
    from .decorators._prune import prune

    directory = args.path or default_dir()
    if not os.path.isdir(directory):
        raise CliError(f"{directory}: no such directory")
    found = prune(directory, dry_run=args.dry_run)
    for p in found:
        _out(f"{'would remove' if args.dry_run else 'removed'} {p.path} ({p.reason}, {human_bytes(p.size)})")
    total = human_bytes(sum(p.size for p in found))
    _out(
        f"{len(found)} stale decorator table(s) in {directory}, {total}{' (dry run)' if args.dry_run else ''}"
    )
    return 0


# -------------------------------------------------------------------- parser
def _count(text: str) -> int:
    """argparse type: a non-negative integer (underscores allowed)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return n


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-parser per command."""
    p = argparse.ArgumentParser(
        prog="mmcache",
        description="Inspect and maintain an mmcache table (PATH: its index file, or a Django LOCATION).",
        epilog="Exit status: 0 ok, 1 error or miss, 2 usage error or verify found damage.",
    )
    p.add_argument("--version", action="version", version=f"mmcache {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("path", metavar="PATH", help="the table's index file, or a Django LOCATION directory")
        sp.set_defaults(func=func)
        return sp

    sp = cmd("stats", cmd_stats, "counters, fill, heap bytes and hit rate")
    sp.add_argument("--json", action="store_true", help="machine-readable JSON (--format json)")
    sp.add_argument("--format", choices=("table", "json", "prometheus"), default="table", help="output")
    sp = cmd("ls", cmd_ls, "list keys with value size, codec, mtime and expiry")
    sp.add_argument(
        "glob",
        nargs="?",
        metavar="GLOB",
        help="only keys matching this shell pattern (bytes keys matched as UTF-8 text)",
    )
    sp.add_argument("--limit", type=_count, metavar="N", help="show at most N entries")
    sp = cmd("get", cmd_get, "write a value to stdout (exit 1 on a miss)")
    sp.add_argument("key", metavar="KEY", help="the key (a str key unless --bytes-key)")
    sp.add_argument(
        "--bytes-key",
        action="store_true",
        help="KEY is a bytes key: plain text (UTF-8) or a literal as ls shows it, b'\\x00ab'",
    )
    sp.add_argument(
        "--pickle",
        action="store_true",
        help="unpickle and pretty-print the value (runs pickle: trusted tables only)",
    )
    dj = sp.add_argument_group(
        "Django keys",
        "On a Django LOCATION, KEY is the key the application passed to cache.get: made into "
        "PREFIX:VERSION:KEY and the value unpickled (trusted caches only).",
    )
    dj.add_argument("--django-key", action="store_true", help="KEY is a Django key (PATH an index file)")
    dj.add_argument("--prefix", metavar="P", help="the cache's KEY_PREFIX (default '')")
    dj.add_argument("--version", dest="key_version", type=_count, metavar="N", help="VERSION (default 1)")
    dj.add_argument("--raw-key", action="store_true", help="KEY as stored, even on a Django LOCATION")
    cmd("verify", cmd_verify, "check consistency: 'ok' and exit 0, else the problems and exit 2")
    cmd("repair", cmd_repair, "fix counters, roster and damaged slots that verify reports")
    sp = cmd("rebuild", cmd_rebuild, "compact the heap and drop tombstones, optionally resize")
    sp.add_argument("--size", type=_count, metavar="N", help="new number of slots")
    sp = cmd("clear", cmd_clear, "remove every entry (asks first; without a terminal needs --yes)")
    sp.add_argument("--yes", "-y", action="store_true", help="do not ask")
    what = "remove @mmap_cached tables of an older key scheme (never read again)"
    sp = sub.add_parser("prune-decorator-tables", help=what, description=what)
    sp.add_argument("path", nargs="?", metavar="DIR", help="the cache directory (default: the decorator's)")
    sp.add_argument("--dry-run", action="store_true", help="list them, remove nothing")
    sp.set_defaults(func=cmd_prune_decorator_tables)
    return p


def _describe(e: BaseException, path: str | None) -> str:
    """One line for an expected failure of a command on ``path``."""
    return " ".join(_message(e, path).splitlines())


def _message(e: BaseException, path: str | None) -> str:
    if isinstance(e, UnsafePathError) and "owned by" in str(e):  # the core's hint names a Python argument
        return str(e).split("; pass ")[0] + "; run mmcache as the user that owns the table"
    if isinstance(e, MmcacheError | CliError):
        return str(e)
    if isinstance(e, OSError) and e.strerror:
        name = e.filename if e.filename is not None else path
        reason = e.strerror[0].lower() + e.strerror[1:]
        if isinstance(e, FileNotFoundError) and path is not None and name in (path, os.path.abspath(path)):
            reason = "no mmcache table at this path"
        return f"{name}: {reason}" if name is not None else reason
    return str(e) or type(e).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mmcache`` console script and ``python -m mmcache``."""
    parser = build_parser()
    # parse_known_args: argparse gives an optional positional (ls's GLOB) its
    # default as soon as PATH is read, so `ls PATH --limit N GLOB`, the order
    # the README shows, would leave GLOB over; it is put in its place here.
    args, extra = parser.parse_known_args(argv)
    if args.command == "ls" and args.glob is None and len(extra) == 1 and not extra[0].startswith("-"):
        args.glob = extra.pop()
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        status: int = args.func(args)
        return status
    except KeyboardInterrupt:
        print("mmcache: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`mmcache ls ... | head`): stop quietly, and
        # keep the interpreter from complaining when it flushes stdout.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except CliError as e:
        print(f"mmcache: {_describe(e, getattr(args, 'path', None))}", file=sys.stderr)
        return e.status
    except (MmcacheError, OSError, ValueError) as e:
        print(f"mmcache: {_describe(e, getattr(args, 'path', None))}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
