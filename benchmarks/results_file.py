"""Where a benchmark's output goes, and the header that makes it a record.

Every run is kept: by default a script writes a new file named after the benchmark and the
minute it started, `benchmarks/results/<name>-YYYY-MM-DD-HHMM.txt` (`-2`, `-3`... when two runs
share a minute), and an `--output` that already exists is refused unless `--force` is given. A
file the README or benchmarks/results/INDEX.md cites is therefore never rewritten by the next run.

The header (the command, machine, commit, start time and load average) is what lets a figure be
compared with another: the same code gives different absolute numbers on a busier machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


class Output:
    """print(), and keep every line for the results file."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.extend(text.split("\n"))

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(self.lines) + "\n")


def add_output_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """--output and --force, with the dated default under benchmarks/results/."""
    parser.add_argument(
        "--output",
        type=Path,
        help=f"write the whole output here too (default: a new {default_path(name).parent}/"
        f"{name}-<date>-<time>.txt); an existing file is refused unless --force",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing --output")


def default_path(name: str, started: time.struct_time | None = None) -> Path:
    """A new dated file name for this run: never one that exists."""
    stamp = time.strftime("%Y-%m-%d-%H%M", started or time.gmtime())
    path = RESULTS / f"{name}-{stamp}.txt"
    count = 2
    while path.exists():
        path = RESULTS / f"{name}-{stamp}-{count}.txt"
        count += 1
    return path


def claim_output(
    parser: argparse.ArgumentParser, output: Path | None, force: bool, name: str
) -> Path:
    """The file this run writes, checked before any load: an existing one is refused (one line,
    exit 2) unless --force."""
    if output is None:
        return default_path(name)
    if output.is_dir():
        parser.error(f"--output {output} is a directory: give a file name")
    if output.exists() and not force:
        parser.error(f"--output {output} exists: pass --force to replace it")
    return output


def git_commit() -> str:
    """The commit measured, and whether the work tree differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" + uncommitted changes" if dirty else "")


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min)"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def header(out: Output, script: str, cpus: int) -> None:
    """The lines every results file starts with."""
    out(" ".join([f"python benchmarks/{script}", *sys.argv[1:]]))
    out(f"machine: {cpus} CPUs ({cpu_model()}), python {sys.version.split()[0]}")
    out(f"commit: {git_commit()}")
    out(f"started {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average {load_average()}")


def footer(out: Output) -> None:
    out(f"\nfinished {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average {load_average()}")
