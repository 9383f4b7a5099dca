"""Write a venv's installed distributions as a pinned constraints file.

Used by ``make pins``: the venv was resolved fresh (newest releases), and its
exact versions become what every later ``make`` installs, so a tool's new
release never changes a run until someone refreshes the pins on purpose.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HEADER = """\
# Pinned versions of everything `make` installs into a venv (dev tools, test
# peers, benchmark peers). The library's own runtime dependencies stay ranges
# in pyproject.toml; this file only fixes what the tests and tools resolve to.
# Written by `make pins` (requirements/write_pins.py); do not edit by hand.
"""
# pinned in build-constraints.txt (the build backend of the editable install)
BUILD_ONLY = ("setuptools==", "wheel==")


def main(venv: str, out: str) -> None:
    py = Path(venv) / "bin" / "python"
    frozen = subprocess.run(
        [str(py), "-m", "pip", "freeze", "--all", "--exclude-editable"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    lines = sorted(
        (ln for ln in frozen.splitlines() if "==" in ln and not ln.startswith(("#", *BUILD_ONLY))),
        key=str.lower,
    )
    Path(out).write_text(HEADER + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
