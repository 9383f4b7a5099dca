"""Results of one suite: printed tables, ``results/<name>.json`` and ``.md``.

Every file names the machine (CPU model, cores, Python, package versions,
the mmcache commit) and the exact command, so a number is never quoted
without where it came from.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .harness import markdown_table

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = (
    "mmcache",
    "xxhash",
    "cloudpickle",
    "diskcache",
    "lmdb",
    "redis",
    "Django",
    "joblib",
    "matplotlib",
    "numpy",
)


@dataclass
class Target:
    """One goal from issue 7: ``measured`` against ``goal`` (None: not measurable here)."""

    name: str
    measured: str
    goal: str
    met: bool | None

    @property
    def verdict(self) -> str:
        if self.met is None and self.goal == "–":
            return "info"
        return {True: "met", False: "MISSED", None: "not measured"}[self.met]


@dataclass
class Section:
    title: str
    header: list[str]
    rows: list[list[str]]

    def render(self) -> str:
        return f"### {self.title}\n\n{markdown_table(self.header, self.rows)}\n"


@dataclass
class Report:
    """What one suite measured: raw rows (for JSON and charts) and tables (for people)."""

    name: str
    title: str
    mode: str
    command: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        """A remark (a skipped peer, a caveat): printed now and kept in the files."""
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def section(self, title: str, header: list[str], rows: list[list[str]]) -> None:
        s = Section(title, header, rows)
        self.sections.append(s)
        print("\n" + s.render(), flush=True)

    def target_section(self, title: str = "Targets (issue 7)") -> None:
        if self.targets:
            self.section(
                title,
                ["target", "measured", "goal", "verdict"],
                [[t.name, t.measured, t.goal, t.verdict] for t in self.targets],
            )

    @property
    def stem(self) -> str:
        return self.name if self.mode == "full" else f"{self.name}-{self.mode}"

    def write(self, machine: dict[str, Any], out: Path = RESULTS) -> tuple[Path, Path]:
        """Write ``<stem>.json`` and ``<stem>.md`` into ``out``."""
        out.mkdir(parents=True, exist_ok=True)
        data = {
            "suite": self.name,
            "title": self.title,
            "mode": self.mode,
            "command": self.command,
            "machine": machine,
            "rows": self.rows,
            "targets": [asdict(t) | {"verdict": t.verdict} for t in self.targets],
            "notes": self.notes,
        }
        jp = out / f"{self.stem}.json"
        jp.write_text(json.dumps(data, indent=1, default=str) + "\n")
        md = [
            f"# {self.title} ({self.mode})\n",
            f"Command: `{self.command}`\n",
            f"Machine: {machine_line(machine)}\n",
            *[s.render() for s in self.sections],
        ]
        if self.notes:
            md.append("### Notes\n\n" + "\n".join(f"- {n}" for n in self.notes) + "\n")
        mp = out / f"{self.stem}.md"
        mp.write_text("\n".join(md))
        return jp, mp


# --------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _git_rev() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "mmcache"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def machine_info(redis_version: str | None = None) -> dict[str, Any]:
    """The facts a reader needs to compare two result files."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 0
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": {p: v for p in PACKAGES if (v := _version(p)) is not None},
        "redis_server": redis_version,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "mmcache_commit": _git_rev(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "executable": sys.executable,
    }


def machine_line(m: dict[str, Any]) -> str:
    pk = ", ".join(f"{k} {v}" for k, v in m.get("packages", {}).items())
    rs = f", redis-server {m['redis_server']}" if m.get("redis_server") else ""
    return (
        f"{m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
        f"{m['implementation']} {m['python']} on {m['platform']}; {pk}{rs}; "
        f"mmcache commit {m.get('mmcache_commit')}; load average at start {m.get('load_average')}; "
        f"{m['date']}"
    )
