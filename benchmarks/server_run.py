"""`loadtest server` as a user runs it (a subprocess, the CLI), and its result.json read back.

The benchmarks that compare loadtest with another schedule or another tool measure the command
itself, start-up included, not a library call: what they time is what a user waits for. The
per-query columns (`--records`) come back as arrays, so every percentile the benchmarks print
is computed one way (`exact`, the method loadtest and LoadGen report: sorted[floor(n·p)]).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.core.records import Status
from loadtest.rules.stats import exact_percentile

REPO = Path(__file__).resolve().parent.parent
METHOD = "exact, sorted[floor(n·p)] (LoadGen's and loadtest's own)"


def exact(values_ns: np.ndarray, percentile: float) -> int:
    """The exact percentile (0 < percentile < 1) of unsorted values, in ns."""
    return exact_percentile(np.sort(values_ns), percentile)


@dataclass(frozen=True)
class ServerRun:
    """One `loadtest server` run: its exit code, result.json, per-query columns and timings."""

    exit_code: int
    result: dict[str, Any]
    scheduled_ns: np.ndarray  # from the run's start
    issued_ns: np.ndarray  # -1: never issued
    completed_ns: np.ndarray
    ok: np.ndarray  # bool
    ready_s: float  # command launched -> its run started (imports, trace, connect, samples)
    wall_s: float  # command launched -> command exited

    @property
    def latency_ns(self) -> np.ndarray:
        """Latency from the scheduled time of every successful query (MLPerf's)."""
        return (self.completed_ns - self.scheduled_ns)[self.ok]

    @property
    def send_lag_ns(self) -> np.ndarray:
        """Scheduled time -> request written, for every issued query."""
        issued = self.issued_ns >= 0
        return (self.issued_ns - self.scheduled_ns)[issued]

    @property
    def summary(self) -> dict[str, Any]:
        return dict(self.result["summary"])


def loadtest_server(url: str, arguments: list[str], output: Path, timeout_s: float) -> ServerRun:
    """Run `loadtest server --url URL ARGUMENTS --records --output OUTPUT` (no live view, never
    an embedded Triton); RuntimeError with its last line when it wrote no result."""
    command = [sys.executable, "-m", "loadtest.cli", "server", "--url", url, "--embedded", "never"]
    command += [*arguments, "--records", "--no-live", "--output", str(output)]
    launched_ns = time.time_ns()
    started = time.monotonic()
    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    wall_s = time.monotonic() - started
    path = output / "result.json"
    if not path.exists():
        tail = (finished.stderr or finished.stdout).strip().splitlines()[-1:]
        raise RuntimeError(f"loadtest server exited {finished.returncode}: {' '.join(tail)}")
    result = json.loads(path.read_text())
    columns = result["records"]["columns"]
    status = np.asarray(columns["status"])
    return ServerRun(
        exit_code=finished.returncode,
        result=result,
        scheduled_ns=np.asarray(columns["scheduled_ns"], dtype=np.int64),
        issued_ns=np.asarray(columns["issued_ns"], dtype=np.int64),
        completed_ns=np.asarray(columns["completed_ns"], dtype=np.int64),
        ok=status == Status.OK,
        ready_s=(int(result["run"]["started_unix_ns"]) - launched_ns) / 1e9,
        wall_s=wall_s,
    )
