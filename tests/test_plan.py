"""Capacity plan arithmetic and its inputs (a measured peak or a find-peak result)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.analysis.capacity import plan_capacity
from loadtest.errors import SettingsError


def test_replicas_arithmetic():
    plan = plan_capacity(target_qps=1000, peak_qps=100, headroom=0.2, spare=1)
    assert plan.usable_qps_per_replica == pytest.approx(80)
    assert plan.replicas_for_load == 13  # ceil(1000 / 80)
    assert plan.replicas == 14
    assert plan.load_per_replica_qps == pytest.approx(1000 / 13)
    assert plan.utilization_of_peak == pytest.approx(1000 / 13 / 100)
    exact = plan_capacity(target_qps=400, peak_qps=100, headroom=0.0)
    assert exact.replicas == 4  # an exact multiple does not round up
    assert plan_capacity(target_qps=1, peak_qps=100).replicas == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_qps": 0, "peak_qps": 1}, "--target-qps"),
        ({"target_qps": 1, "peak_qps": 0}, "peak"),
        ({"target_qps": 1, "peak_qps": 1, "headroom": 1.0}, "--headroom"),
        ({"target_qps": 1, "peak_qps": 1, "spare": -1}, "--spare"),
        ({"target_qps": 1, "peak_qps": 1, "spare": 10**7}, "--spare"),
        ({"target_qps": 1e9, "peak_qps": 1e-9}, "more than 1,000,000"),
        ({"target_qps": 1e300, "peak_qps": 1e-300}, "more than 1,000,000"),
    ],
)
def test_bad_plan_inputs(kwargs, message):
    with pytest.raises(SettingsError, match=message):
        plan_capacity(**kwargs)


def test_a_plan_of_a_million_replicas_is_still_a_plan():
    plan = plan_capacity(target_qps=800_000, peak_qps=1, headroom=0.2)
    assert plan.replicas == 1_000_000


def test_an_absurd_plan_is_one_line_and_a_tiny_peak_keeps_its_digits():
    """#26: `plan --target-qps 1e9 --peak-qps 1e-9` printed 1.25e18 replicas and "0.0 QPS"."""
    absurd = _cli("--target-qps", "1e9", "--peak-qps", "1e-9")
    assert absurd.returncode == 1, absurd.stdout + absurd.stderr  # an error, not a bad flag
    assert "more than 1,000,000" in absurd.stderr and "Traceback" not in absurd.stderr
    assert len(absurd.stderr.strip().splitlines()) == 1, absurd.stderr
    tiny = _cli("--target-qps", "0.01", "--peak-qps", "0.004")
    assert tiny.returncode == 0, tiny.stderr
    assert "0.004 QPS per replica under that SLO" in tiny.stdout
    assert "0.0 QPS" not in tiny.stdout


def _peak_file(tmp_path: Path, peak: float | None, status: str = "bracketed") -> Path:
    path = tmp_path / "find-peak.json"
    path.write_text(
        json.dumps(
            {
                "schema": "loadtest.result",
                "schema_version": 1,
                "kind": "find-peak",
                "settings": {"percentile": 0.99, "target_latency_ns": 15_000_000},
                "peak_qps": peak,
                "status": status,
                "conclusion": "text",
            }
        )
    )
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtest.cli", "plan", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_plan_from_find_peak_result(tmp_path: Path):
    out = tmp_path / "plan.json"
    result = _cli(
        "--target-qps", "1000", "--from", str(_peak_file(tmp_path, 100.0)), "--output", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert "13 for the load" in result.stdout and "p99 ≤ 15 ms" in result.stdout
    assert json.loads(out.read_text())["replicas"] == 13


def test_plan_refuses_a_stricter_slo_and_an_empty_result(tmp_path: Path):
    stricter = _cli(
        "--target-qps", "10", "--from", str(_peak_file(tmp_path, 100.0)), "--target-latency", "10"
    )
    assert stricter.returncode == 1 and "stricter" in stricter.stderr
    empty = _cli("--target-qps", "10", "--from", str(_peak_file(tmp_path, None, "none-valid")))
    assert empty.returncode == 1 and "no probe met the SLO" in empty.stderr
    both = _cli("--target-qps", "10", "--peak-qps", "5", "--from", str(_peak_file(tmp_path, 1.0)))
    assert both.returncode == 1 and "exactly one" in both.stderr
    assert "Traceback" not in stricter.stderr + empty.stderr + both.stderr
