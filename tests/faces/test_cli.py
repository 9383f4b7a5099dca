"""The ``mmcache`` command, run as a subprocess the way an operator runs it."""

from __future__ import annotations

import glob
import json
import os
import pickle
import pty
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from mmcache import MmapCache
from mmcache._core import layout as L
from mmcache._core import record
from mmcache.serialization import dumps

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
BINARY = bytes(range(256)) * 3 + b"\r\n\x00"
BYTES_KEY = b"bin\x00\xff"


def run(
    *args: str, input: bytes = b"", exe: Sequence[str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run the command with stdin, stdout and stderr all pipes (never a terminal)."""
    cmd = [*(exe or [sys.executable, "-m", "mmcache"]), *args]
    return subprocess.run(cmd, input=input, capture_output=True, env=ENV, timeout=120)


def out(p: subprocess.CompletedProcess[bytes]) -> str:
    return p.stdout.decode()


def err(p: subprocess.CompletedProcess[bytes]) -> str:
    return p.stderr.decode()


def assert_one_line_error(p: subprocess.CompletedProcess[bytes], status: int = 1) -> str:
    """A failure: the status, nothing on stdout, one line on stderr, no traceback."""
    assert p.returncode == status, (p.returncode, p.stdout, p.stderr)
    text = err(p)
    assert "Traceback" not in text
    assert text.startswith("mmcache: ") and text.endswith("\n") and text.count("\n") == 1, text
    assert p.stdout == b""
    return text


@pytest.fixture
def table(path: str) -> str:
    """A closed table holding str, bytes, pickled, expiring and binary entries."""
    with MmapCache(path, size=256) as c:
        c.put("user:1", b"hello")
        c.put("user:2", b"x" * 5000, expire=3600)
        c.put("blob", BINARY)
        c.put(BYTES_KEY, b"bytes-keyed")
        c.put("line\nbreak", b"z")
        data, flags = dumps({"a": [1, 2, 3], "b": "text"}, "pickle")
        c.put("obj", data, flags=flags)
        data, flags = dumps({"cp": (1, 2)}, "cloudpickle")
        c.put("cobj", data, flags=flags)
        c.put("rawpickle", pickle.dumps([4, 5]))  # a pickle stored with the raw tag
        c.get("user:1")
        c.get("absent")
    return path


def count(path: str) -> int:
    with MmapCache.open(path) as c:
        return int(c.get_stats()["occupied_count"])


# ------------------------------------------------------------------ general
def test_version_and_usage() -> None:
    p = run("--version")
    assert p.returncode == 0 and out(p).startswith("mmcache 0.")
    p = run()
    assert p.returncode == 2 and "usage: mmcache" in err(p)
    p = run("nosuchcommand", "x")
    assert p.returncode == 2 and "invalid choice" in err(p)
    p = run("--help")
    assert p.returncode == 0
    for name in ("stats", "ls", "get", "verify", "repair", "rebuild", "clear"):
        assert name in out(p)


def test_installed_console_script(table: str) -> None:
    exe = shutil.which("mmcache", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the mmcache console script is not installed next to this interpreter")
    p = run("--version", exe=[exe])
    assert p.returncode == 0 and out(p).startswith("mmcache ")
    p = run("get", table, "blob", exe=[exe])
    assert p.returncode == 0 and p.stdout == BINARY
    p = run("stats", "/nonexistent/table", exe=[exe])
    assert_one_line_error(p)


# -------------------------------------------------------------------- stats
def test_stats_table(table: str) -> None:
    p = run("stats", table)
    assert p.returncode == 0 and p.stderr == b""
    lines = out(p).splitlines()
    labels = [line.split("  ")[0] for line in lines]
    for label in ("path", "entries", "heap live", "heap dead", "heap segments", "hit rate", "on disk"):
        assert label in labels
    # values start in one column
    assert (
        len({len(line) - len(line[len(label) :].lstrip()) for line, label in zip(lines, labels, strict=True)})
        == 1
    )
    text = out(p)
    assert "8 of " in text and "% full" in text
    assert "hit rate         50.0 %" in text


def test_stats_json(table: str) -> None:
    p = run("stats", table, "--json")
    assert p.returncode == 0
    st = json.loads(p.stdout)
    assert st["path"] == os.path.abspath(table)
    assert st["occupied_count"] == 8 and st["size"] == 256
    assert st["hits"] == 1 and st["misses"] == 1 and st["hit_rate"] == 0.5
    assert 0 < st["fill"] < 1 and st["heap_live_bytes"] > 5000
    assert "eviction" not in st  # a handle option of the command itself, not the table's


# ----------------------------------------------------------------------- ls
def test_ls_lists_every_entry(table: str) -> None:
    p = run("ls", table)
    assert p.returncode == 0 and p.stderr == b""
    lines = out(p).splitlines()
    assert lines[0].split() == ["SIZE", "CODEC", "MODIFIED", "EXPIRES", "KEY"]
    rows = {line.rsplit("  ", 1)[1].strip(): line for line in lines[1:]}
    assert set(rows) == {
        "user:1", "user:2", "blob", repr(BYTES_KEY), repr("line\nbreak"), "obj", "cobj", "rawpickle",
    }  # fmt: skip
    assert "4.9 KiB" in rows["user:2"] and "in 59m" in rows["user:2"]
    assert "never" in rows["user:1"] and "5 B" in rows["user:1"]
    assert " pickle " in rows["obj"] and " cloudpickle " in rows["cobj"]
    assert time.strftime("%Y-%m-%d") in rows["blob"]
    # str keys first, sorted; then bytes keys
    assert lines[-1].endswith(repr(BYTES_KEY))


def test_ls_glob_and_limit(table: str) -> None:
    p = run("ls", table, "user:*")
    assert [line.split()[-1] for line in out(p).splitlines()[1:]] == ["user:1", "user:2"]
    p = run("ls", table, "bin*")  # bytes keys match as UTF-8 text
    assert out(p).splitlines()[1].endswith(repr(BYTES_KEY))
    p = run("ls", table, "user:*", "--limit", "1")
    assert p.returncode == 0 and len(out(p).splitlines()) == 2
    assert "showing 1 of 2" in err(p)
    p = run("ls", table, "nomatch*")
    assert p.returncode == 0 and p.stdout == b""
    p = run("ls", table, "--limit", "-1")
    assert p.returncode == 2 and "negative" in err(p)


def test_ls_key_roundtrips_into_get(table: str) -> None:
    shown = out(run("ls", table, "bin*")).splitlines()[1].rsplit("  ", 1)[1].strip()
    p = run("get", table, "--bytes-key", shown)
    assert p.returncode == 0 and p.stdout == b"bytes-keyed"


# ---------------------------------------------------------------------- get
def test_get_raw_is_byte_exact(table: str) -> None:
    p = run("get", table, "blob")
    assert p.returncode == 0 and p.stdout == BINARY and p.stderr == b""
    assert run("get", table, "user:1").stdout == b"hello"


def test_get_bytes_key(table: str) -> None:
    assert run("get", table, "--bytes-key", "b'bin\\x00\\xff'").stdout == b"bytes-keyed"
    with MmapCache.open(table) as c:
        c.put(b"plain", b"p")
    assert run("get", table, "plain", "--bytes-key").stdout == b"p"
    assert_one_line_error(run("get", table, "plain"))  # the str key "plain" is another key
    e = assert_one_line_error(run("get", table, "--bytes-key", "b'unterminated"))
    assert "not a valid bytes literal" in e


def test_get_pickle(table: str) -> None:
    p = run("get", table, "obj", "--pickle")
    assert p.returncode == 0 and out(p) == "{'a': [1, 2, 3], 'b': 'text'}\n"
    assert out(run("get", table, "cobj", "--pickle")) == "{'cp': (1, 2)}\n"
    assert out(run("get", table, "rawpickle", "--pickle")) == "[4, 5]\n"
    assert out(run("get", table, "user:1", "--pickle")) == "b'hello'\n"


def test_get_pickle_failures(path: str) -> None:
    with MmapCache(path, size=64) as c:
        c.put("mod", b"cno_such_module_xyz\nThing\n.", flags=1)
        c.put("odd", b"data", flags=0x0300)
    e = assert_one_line_error(run("get", path, "mod", "--pickle"))
    assert "cannot unpickle" in e and "no_such_module_xyz" in e
    e = assert_one_line_error(run("get", path, "odd", "--pickle"))
    assert "0x0300" in e
    assert run("get", path, "odd").stdout == b"data"


def test_get_miss(table: str) -> None:
    e = assert_one_line_error(run("get", table, "nope"))
    assert "no entry for key 'nope'" in e
    e = assert_one_line_error(run("get", table, "b'bin'"))
    assert "--bytes-key" in e


# ------------------------------------------------------------ verify, repair
def test_verify_ok(table: str) -> None:
    p = run("verify", table)
    assert p.returncode == 0 and out(p) == "ok\n" and p.stderr == b""


def _write_at(name: str, offset: int, data: bytes) -> None:
    with open(name, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_absurd_header_counter_is_repaired_on_open(table: str) -> None:
    _write_at(table, L.OFF_COUNTERS, b"\xff" * 8)  # occupied_count past the table size
    assert out(run("verify", table)) == "ok\n"
    assert run("get", table, "blob").stdout == BINARY


@pytest.mark.parametrize("counter", [L.U64.pack(3)], ids=["wrong"])
def test_verify_damaged_header_then_repair(table: str, counter: bytes) -> None:
    _write_at(table, L.OFF_COUNTERS, counter)  # occupied_count
    p = run("verify", table)
    assert p.returncode == 2, (p.stdout, p.stderr)
    text = out(p)
    assert "problem" in text.splitlines()[0] and "occupied_count" in text
    assert "Traceback" not in err(p) and "repair" in err(p)
    p = run("repair", table)
    assert p.returncode == 0 and "fixed:" in out(p)
    assert out(run("verify", table)) == "ok\n"
    assert run("get", table, "blob").stdout == BINARY


def test_verify_truncated_roster(table: str) -> None:
    (roster,) = glob.glob(table + ".roster.*")
    os.truncate(roster, 10)
    e = assert_one_line_error(run("verify", table), status=2)
    assert "damaged" in e and "roster" in e


def test_verify_damaged_record(table: str) -> None:
    (seg,) = glob.glob(table + ".heap.*")
    _write_at(seg, L.SEG_HEADER_BYTES + record.HEAD_BYTES, b"XXXX")  # inside the first record
    p = run("verify", table)
    assert p.returncode == 2 and "checksum" in out(p)


def test_repair_clean_table(table: str) -> None:
    p = run("repair", table)
    assert p.returncode == 0 and out(p) == "nothing to repair\n"


# --------------------------------------------------------- rebuild, clear
def test_rebuild(table: str) -> None:
    with MmapCache.open(table) as c:
        c.delete("user:1")
    p = run("rebuild", table, "--size", "1024")
    assert p.returncode == 0, p.stderr
    assert "generation 1 -> 2" in out(p) and "256 -> 1,024 slots" in out(p)
    st = json.loads(run("stats", table, "--json").stdout)
    assert st["size"] == 1024 and st["occupied_count"] == 7 and st["deleted_count"] == 0
    assert run("get", table, "blob").stdout == BINARY
    p = run("rebuild", table)
    assert p.returncode == 0 and "generation 2 -> 3" in out(p)


def test_rebuild_bad_size(table: str) -> None:
    p = run("rebuild", table, "--size", "abc")
    assert p.returncode == 2 and "not a whole number" in err(p) and "Traceback" not in err(p)
    assert "between 4 and" in assert_one_line_error(run("rebuild", table, "--size", "1"))
    assert "do not fit" in assert_one_line_error(run("rebuild", table, "--size", "4"))
    assert count(table) == 8 and out(run("verify", table)) == "ok\n"


def test_clear_needs_yes_without_terminal(table: str) -> None:
    e = assert_one_line_error(run("clear", table))
    assert "--yes" in e
    assert count(table) == 8
    p = run("clear", table, "--yes")
    assert p.returncode == 0 and "removed 8 entries" in out(p)
    assert count(table) == 0 and run("ls", table).stdout == b""


@pytest.mark.parametrize("answer", [b"y\n", b"n\n"])
def test_clear_asks_on_a_terminal(table: str, answer: bytes) -> None:
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mmcache", "clear", table],
            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
        )  # fmt: skip
        os.write(master, answer)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        os.close(slave)
        os.close(master)
    assert b"remove all 8 entries" in stderr
    if answer == b"y\n":
        assert proc.returncode == 0 and count(table) == 0
    else:
        assert proc.returncode == 1 and b"not cleared" in stderr and count(table) == 8


# ------------------------------------------------------------ user mistakes
COMMANDS = [["stats", "{}"], ["ls", "{}"], ["get", "{}", "k"], ["verify", "{}"], ["repair", "{}"],
            ["rebuild", "{}"], ["clear", "{}", "--yes"]]  # fmt: skip


def _argv(cmd: list[str], path: str) -> list[str]:
    return [path if a == "{}" else a for a in cmd]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c[0])
def test_missing_path(tmp_path: Path, cmd: list[str]) -> None:
    missing = str(tmp_path / "nothing")
    e = assert_one_line_error(run(*_argv(cmd, missing)))
    assert missing in e and "no mmcache table" in e
    assert os.listdir(tmp_path) == []  # nothing was created


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c[0])
def test_directory(tmp_path: Path, cmd: list[str]) -> None:
    e = assert_one_line_error(run(*_argv(cmd, str(tmp_path))))
    assert "is a directory" in e


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c[0])
def test_foreign_file(tmp_path: Path, cmd: list[str]) -> None:
    foreign = tmp_path / "notes.txt"
    content = b"just some text, not a cache\n" * 400
    foreign.write_bytes(content)
    status = 2 if cmd[0] == "verify" else 1
    e = assert_one_line_error(run(*_argv(cmd, str(foreign))), status=status)
    assert "not an mmcache index" in e
    assert foreign.read_bytes() == content and os.listdir(tmp_path) == ["notes.txt"]
    short = tmp_path / "short"
    short.write_bytes(b"tiny")
    assert "too short" in assert_one_line_error(run(*_argv(cmd, str(short))), status=status)


def test_other_format_version(table: str) -> None:
    _write_at(table, 8, L.U32.pack(L.FORMAT_VERSION + 1))
    e = assert_one_line_error(run("stats", table))
    assert "format version" in e


def test_unreadable(table: str) -> None:
    """A path this user may not reach: one line saying so, not 'no table there'."""
    parent = os.path.dirname(table)
    if os.geteuid() == 0:
        # Root reaches any file, and nobody cannot reach root's interpreter:
        # load the command as root, then drop to nobody before it runs.
        code = (
            "import gettext, locale, os, sys; from mmcache.cli import main; "
            "os.setgroups([]); os.setgid(65534); os.setuid(65534); sys.exit(main(sys.argv[1:]))"
        )
        cmd = [sys.executable, "-c", code, "stats", table]
        p = subprocess.run(cmd, capture_output=True, env=ENV, timeout=60)
    else:
        os.chmod(parent, 0o600)  # no search permission: the table cannot be reached
        try:
            p = run("stats", table)
        finally:
            os.chmod(parent, 0o700)
    assert "ermission denied" in assert_one_line_error(p)


def test_symlink_is_refused(table: str, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(table)
    assert "symlink" in assert_one_line_error(run("stats", str(link)))


# ------------------------------------------------------------------ progress
@pytest.mark.parametrize("cmd", [["verify"], ["rebuild"], ["ls"], ["repair"]], ids=lambda c: c[0])
def test_no_progress_when_piped(table: str, cmd: list[str]) -> None:
    p = run(cmd[0], table)
    assert p.returncode == 0 and p.stderr == b""
    assert b"\r" not in p.stdout and b"\x1b[" not in p.stdout


def _stderr_on_terminal(*args: str) -> tuple[int, bytes, bytes]:
    """Run with stderr on a pseudo-terminal; (status, stdout, terminal output)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "mmcache", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, env=ENV)  # fmt: skip
    os.close(slave)
    seen = b""
    try:
        while select.select([master], [], [], 60)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    return proc.wait(timeout=60), stdout, seen


@pytest.mark.parametrize("cmd", ["verify", "rebuild", "ls"])
def test_progress_on_a_terminal(table: str, cmd: str) -> None:
    status, stdout, seen = _stderr_on_terminal(cmd, table)
    assert status == 0
    label = {"verify": b"verifying", "rebuild": b"rebuilding", "ls": b"listing"}[cmd]
    assert label in seen and seen.endswith(b"\r\x1b[K")  # drawn, then erased
    assert b"\r" not in stdout  # the progress line never goes to stdout
