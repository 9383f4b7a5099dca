"""The ``mmcache`` command on what a Django user has in hand: the LOCATION
directory and the keys as the application wrote them. The caches are filled
by a real Django process (settings module, ``django.setup()``), and the
command and ``manage.py`` run as subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_cli import ENV, ROOT, assert_one_line_error, err, out, run

from mmcache import MmapCache

pytest.importorskip("django")

BACKEND = "mmcache.contrib.django.MmapCacheBackend"


@pytest.fixture
def site(tmp_path: Path) -> dict[str, str]:
    """Two Django caches filled by a real Django process: ``plain`` (default
    KEY_PREFIX and VERSION) and ``prefixed`` (KEY_PREFIX "site", VERSION 3)."""
    plain, prefixed = str(tmp_path / "plain-cache"), str(tmp_path / "prefixed-cache")
    (tmp_path / "cli_settings.py").write_text(
        textwrap.dedent(
            f"""
            SECRET_KEY = "x"
            INSTALLED_APPS = ["mmcache.contrib.django"]
            CACHES = {{
                "default": {{"BACKEND": {BACKEND!r}, "LOCATION": {plain!r}}},
                "prefixed": {{"BACKEND": {BACKEND!r}, "LOCATION": {prefixed!r},
                              "KEY_PREFIX": "site", "VERSION": 3}},
            }}
            """
        )
    )
    env = {
        **ENV,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]),
        "DJANGO_SETTINGS_MODULE": "cli_settings",
    }
    fill = """
        import django
        django.setup()
        from django.core.cache import caches
        for alias in ("default", "prefixed"):
            c = caches[alias]
            c.set("greeting", {"hello": [1, 2, 3]})
            c.set("raw", b"bytes as given")
            c.set("user:7", "seven")
            c.get("greeting")
    """
    subprocess.run([sys.executable, "-c", textwrap.dedent(fill)], env=env, check=True, timeout=120)
    return {"plain": plain, "prefixed": prefixed, "env_path": env["PYTHONPATH"]}


def manage(site: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {**ENV, "PYTHONPATH": site["env_path"], "DJANGO_SETTINGS_MODULE": "cli_settings"}
    return subprocess.run(
        [sys.executable, "-m", "django", "mmcache", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_table_name_agrees_with_the_backend() -> None:
    from mmcache._cli_paths import DJANGO_TABLE_NAME
    from mmcache.contrib.django._tables import TABLE_NAME

    assert DJANGO_TABLE_NAME == TABLE_NAME


@pytest.mark.parametrize("cmd", ["stats", "ls", "verify"])
def test_commands_take_a_location(site: dict[str, str], cmd: str) -> None:
    p = run(cmd, site["plain"])
    assert p.returncode == 0, err(p)
    text = out(p)
    if cmd == "stats":
        assert os.path.join(site["plain"], "mmcache") in text and "3 of " in text
    elif cmd == "ls":
        assert [line.split()[-1] for line in text.splitlines()[1:]] == [":1:greeting", ":1:raw", ":1:user:7"]
    else:
        assert text == "ok\n"


def test_get_takes_the_key_the_application_wrote(site: dict[str, str]) -> None:
    p = run("get", site["plain"], "greeting")
    assert p.returncode == 0, err(p)
    assert out(p) == "{'hello': [1, 2, 3]}\n"  # unpickled with the stored codec
    assert out(run("get", site["plain"], "user:7")) == "'seven'\n"
    assert out(run("get", site["plain"], "raw")) == "b'bytes as given'\n"
    # KEY_PREFIX and VERSION as the settings give them
    assert out(run("get", site["prefixed"], "user:7", "--prefix", "site", "--version", "3")) == "'seven'\n"
    e = assert_one_line_error(run("get", site["prefixed"], "user:7"))
    assert "stored as ':1:user:7'" in e


def test_get_raw_key_on_a_location(site: dict[str, str]) -> None:
    p = run("get", site["prefixed"], "site:3:raw", "--raw-key")
    assert p.returncode == 0 and p.stdout == b"bytes as given"  # raw: the stored bytes themselves
    p = run("get", site["prefixed"], "site:3:greeting", "--raw-key", "--pickle")
    assert out(p) == "{'hello': [1, 2, 3]}\n"
    # the made key given without --raw-key: the miss says what to do
    e = assert_one_line_error(run("get", site["prefixed"], "site:3:user:7"))
    assert "add --raw-key" in e


def test_get_django_key_on_an_index_file(site: dict[str, str]) -> None:
    index = os.path.join(site["plain"], "mmcache")
    assert out(run("get", index, "user:7", "--django-key")) == "'seven'\n"
    assert run("get", index, ":1:user:7").stdout == pickled_str(index, ":1:user:7")
    assert out(run("get", index, "user:7", "--version", "1")) == "'seven'\n"  # --version implies a Django key


def pickled_str(index: str, key: str) -> bytes:
    with MmapCache.open(index) as c:
        value = c.get(key)
    assert isinstance(value, bytes)
    return value


def test_get_option_conflicts_are_usage_errors(site: dict[str, str]) -> None:
    e = assert_one_line_error(run("get", site["plain"], "k", "--raw-key", "--prefix", "x"), status=2)
    assert "--raw-key" in e
    e = assert_one_line_error(run("get", site["plain"], "k", "--bytes-key"), status=2)
    assert "--bytes-key goes with --raw-key" in e


def test_a_directory_of_tables_is_named(tmp_path: Path) -> None:
    for name in ("alpha", "beta"):
        MmapCache(tmp_path / name, size=64).close()
    (tmp_path / "notes.txt").write_text("not a table")
    e = assert_one_line_error(run("stats", str(tmp_path)))
    assert "is a directory" in e and "holds 2 tables: alpha, beta" in e


def test_ls_in_the_readme_order(site: dict[str, str]) -> None:
    # `mmcache ls PATH [--limit N] [GLOB]`: GLOB after the option
    p = run("ls", site["plain"], "--limit", "1", "*user*")
    assert p.returncode == 0, err(p)
    assert [line.split()[-1] for line in out(p).splitlines()[1:]] == [":1:user:7"]
    p = run("ls", site["plain"], "--limit", "1", "*:1:*")
    assert len(out(p).splitlines()) == 2 and "showing 1 of 3" in err(p)
    either_order = [
        run("ls", site["plain"], *args) for args in (["*e*", "--limit", "5"], ["--limit", "5", "*e*"])
    ]
    assert [[line.split()[-1] for line in out(p).splitlines()[1:]] for p in either_order] == [
        [":1:greeting", ":1:user:7"]
    ] * 2
    p = run("ls", site["plain"], "a", "b")
    assert p.returncode == 2 and "unrecognized arguments: b" in err(p)


def test_manage_py_stats_prints_the_cli_report(site: dict[str, str]) -> None:
    p = manage(site, "stats", "--alias", "default")
    assert p.returncode == 0, p.stderr
    heading, *report = p.stdout.splitlines()
    assert heading.startswith(f"default: {site['plain']} (MAX_ENTRIES 300, CULL_FREQUENCY 3, CODEC pickle)")
    cli = run("stats", site["plain"])
    assert report == out(cli).splitlines()
