"""Formatting helpers for the ``mmcache`` command: sizes, times, keys, aligned
tables and a progress line that appears only on a terminal."""

from __future__ import annotations

import ast
import shutil
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, TextIO

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(n: int) -> str:
    """``1536`` -> ``'1.5 KiB'``; whole bytes below 1 KiB."""
    if n < 1024:
        return f"{n} B"
    v = float(n)
    for unit in _UNITS[1:]:
        v /= 1024
        if v < 1024 or unit == _UNITS[-1]:
            return f"{v:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def human_duration(seconds: float) -> str:
    """A short duration with its two largest units: ``'3m 20s'``, ``'2d 4h'``."""
    s = max(0, int(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size or (unit == "s" and not parts):
            parts.append(f"{s // size}{unit}")
            s %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


def format_time(ns: int) -> str:
    """Local wall-clock time of a nanosecond timestamp, to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9))


def format_expiry(expire_ns: int | None, now_ns: int) -> str:
    """``'never'`` or how long until the entry expires (``'in 4m 10s'``)."""
    if expire_ns is None:
        return "never"
    return f"in {human_duration((expire_ns - now_ns) / 1e9)}"


def key_text(key: str | bytes) -> str:
    """A key as shown: a printable str as is, anything else as its repr
    (bytes keys as ``b'...'``, which ``parse_bytes_key`` reads back)."""
    if isinstance(key, str) and key.isprintable():
        return key
    return repr(key)


def glob_text(key: str | bytes) -> str:
    """The text a glob is matched against: a str key itself, a bytes key
    decoded as UTF-8 (undecodable bytes as ``\\xNN`` escapes)."""
    return key if isinstance(key, str) else key.decode("utf-8", "backslashreplace")


def parse_bytes_key(text: str) -> bytes:
    """A bytes key from the command line: a bytes literal as ``ls`` shows it
    (``b'\\x00ab'``), or plain text, encoded as UTF-8."""
    if text[:2] in ("b'", 'b"'):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ValueError(f"{text!r} is not a valid bytes literal") from None
        if isinstance(value, bytes):
            return value
    return text.encode("utf-8", "surrogateescape")


def table(rows: Sequence[Sequence[str]], right: Sequence[bool] = ()) -> list[str]:
    """Rows padded into aligned columns (the last column is never padded);
    ``right[i]`` right-aligns column ``i``."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [
            c.rjust(w) if i < len(right) and right[i] else c.ljust(w)
            for i, (c, w) in enumerate(zip(r[:-1], widths, strict=False))
        ]
        out.append("  ".join([*cells, r[-1]]).rstrip())
    return out


# get_stats() keys that describe the opening handle's options, not the table.
HANDLE_OPTIONS = ("max_entries", "max_bytes", "eviction")


def table_stats(stats: Mapping[str, Any]) -> dict[str, Any]:
    """A table's ``get_stats()`` without the opening handle's options, plus
    ``fill`` (live entries / capacity): what ``stats --json`` prints."""
    st = {k: v for k, v in stats.items() if k not in HANDLE_OPTIONS}
    st["fill"] = st["occupied_count"] / st["capacity"] if st["capacity"] else 0.0
    return st


def stats_report(stats: Mapping[str, Any]) -> list[str]:
    """The lines of ``mmcache stats`` (and of ``manage.py mmcache stats``,
    which prints the same report under a heading per alias)."""
    st = table_stats(stats)
    heap = st["heap_live_bytes"] + st["heap_dead_bytes"]
    dead_pct = 100 * st["heap_dead_bytes"] / heap if heap else 0.0
    rows = [
        ("path", st["path"]),
        ("generation", str(st["generation"])),
        ("entries", f"{st['occupied_count']:,} of {st['capacity']:,} ({100 * st['fill']:.1f} % full)"),
        ("tombstones", f"{st['deleted_count']:,}"),
        ("slots", f"{st['size']:,} x {st['slot_size']} B, keys up to {st['key_size']} B in the slot"),
        ("high water mark", f"{st['high_water_mark']:,}"),
        ("heap live", human_bytes(st["heap_live_bytes"])),
        ("heap dead", f"{human_bytes(st['heap_dead_bytes'])} ({dead_pct:.1f} % of the heap)"),
        ("heap segments", str(st["heap_segments"])),
        ("on disk", human_bytes(st["disk_bytes"])),
        ("hits", f"{st['hits']:,}"),
        ("misses", f"{st['misses']:,}"),
        ("hit rate", f"{100 * st['hit_rate']:.1f} %"),
        *((name, f"{st[name]:,}") for name in ("sets", "deletes", "evictions", "expirations", "rebuilds")),
    ]
    return table(rows)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """One self-erasing status line on stderr, drawn only when stderr is a
    terminal, so piped or captured output never contains it.

    With ``total`` it is a bar advanced by ``advance``; without, ``spin()``
    animates it from a thread while a blocking call runs. Use as a context
    manager: the line is erased on exit.
    """

    FRAMES = "|/-\\"

    def __init__(self, label: str, total: int | None = None, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _isatty(self.stream)
        self.label = label
        self.total = total
        self.done = 0
        self._start = self._last = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._frame = 0

    def __enter__(self) -> Progress:
        self._draw()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.enabled:
            with self._lock:
                self.stream.write("\r\x1b[K")
                self.stream.flush()

    def spin(self) -> Progress:
        """Animate the line from a background thread until exit."""
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mmcache-progress", daemon=True)
            self._thread.start()
        return self

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more items done; redraws at most ten times a second."""
        self.done += n
        if self.enabled and time.monotonic() - self._last >= 0.1:
            self._draw()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self._draw()

    def _draw(self) -> None:
        if not self.enabled:
            return
        self._last = now = time.monotonic()
        elapsed = f"{now - self._start:.1f}s"
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            text = f"{self.label} [{bar:<30}] {self.done}/{self.total} {frac:4.0%} {elapsed}"
        else:
            self._frame = (self._frame + 1) % len(self.FRAMES)
            text = f"{self.label} {self.FRAMES[self._frame]} {elapsed}"
        width = shutil.get_terminal_size((80, 24)).columns - 1
        with self._lock:
            self.stream.write("\r" + text[:width] + "\x1b[K")
            self.stream.flush()
