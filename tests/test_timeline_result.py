"""Issue #19: every result.json carries a per-second timeline, with or without --records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from loadtest.core.records import Records, Status
from loadtest.rules.stats import Timeline, timeline

MS = 1_000_000
S = 1_000_000_000


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtest.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_default_run_writes_the_timeline_without_records(tmp_path: Path):
    out = tmp_path / "run"
    result = _cli(
        "server",
        "--url",
        "fake://?servers=4&service_ms=2",
        "--qps",
        "300",
        "--duration",
        "2",
        "--output",
        str(out),
    )
    data = json.loads((out / "result.json").read_text())
    assert result.returncode in (0, 3, 5), result.stderr
    assert "records" not in data and data["schema_version"] == 1
    line = data["timeline"]
    assert line["bucket_ns"] == S
    columns = [
        "start_ns",
        "scheduled",
        "issued",
        "completed",
        "errors",
        "p50_latency_ns",
        "p99_latency_ns",
        "p99_send_lag_ns",
        "max_send_lag_ns",
        "in_flight",
    ]
    assert all(len(line[c]) == len(line["start_ns"]) >= 2 for c in columns)
    summary = data["summary"]
    assert sum(line["completed"]) == summary["completed_ok"]
    assert sum(line["scheduled"]) == summary["scheduled"]
    assert sum(line["issued"]) == summary["issued"]
    busy = [i for i, n in enumerate(line["completed"]) if n]
    assert all(0 < line["p50_latency_ns"][i] <= line["p99_latency_ns"][i] for i in busy)
    again = Timeline.from_dict(line)
    assert again.completed.tolist() == line["completed"]


def test_timeline_percentiles_and_errors_by_kind_per_second():
    n = 400
    scheduled = np.repeat(np.array([0, S], dtype=np.int64), n // 2) + np.tile(
        np.arange(n // 2, dtype=np.int64) * MS, 2
    )
    records = Records(scheduled_ns=scheduled, sample_index=np.zeros(n, dtype=np.int32))
    records.issued_ns[:] = scheduled + 10_000
    latency = np.tile(np.arange(1, n // 2 + 1, dtype=np.int64) * 100_000, 2)
    records.completed_ns[:] = scheduled + latency
    records.status[:] = Status.OK
    timeouts = records.error_code_for("timeout")
    records.status[-3:] = Status.ERROR
    records.error_code[-3:] = timeouts
    line = timeline(records)
    assert len(line) == 2
    first = np.sort(latency[: n // 2])
    assert line.p50_latency_ns[0] == first[100] and line.p99_latency_ns[0] == first[198]
    assert line.p99_send_lag_ns.tolist() == [10_000, 10_000]
    assert line.errors_by_kind["timeout"].tolist() == [0, 3]
    assert int(line.completed.sum()) == n - 3
    data = json.loads(json.dumps(line.to_dict()))
    assert Timeline.from_dict(data).errors_by_kind["timeout"].tolist() == [0, 3]
