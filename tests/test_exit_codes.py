"""One exit-code scheme for every scenario command (errors.ExitCode), the error budget and the
error-rate abort, end to end through the CLI against the fake target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import assert_one_clear_error, loadtest

from loadtest.errors import ExitCode

QUICK = "fake://?servers=8&law=constant&service_ms=1"


def _server(tmp_path: Path, url: str, *extra: str) -> tuple[int, dict, str]:
    out = tmp_path / "run"
    result = loadtest(
        "server",
        "--url",
        url,
        "--target-latency",
        "50",
        "--no-live",
        "--output",
        str(out),
        *extra,
    )
    data = json.loads((out / "result.json").read_text()) if (out / "result.json").exists() else {}
    return result.returncode, data, result.stdout + result.stderr


def test_a_valid_run_exits_0(tmp_path):
    # 600 queries pass early stopping at p99 (459 needed) with none over the bound.
    code, data, output = _server(
        tmp_path,
        QUICK,
        "--qps",
        "150",
        "--duration",
        "4",
        "--min-queries",
        "600",
        "--late-threshold",
        "30",
    )
    assert data["verdict"]["valid"] is True, output
    assert code == ExitCode.OK


def test_an_invalid_run_exits_3(tmp_path):
    code, data, output = _server(
        tmp_path,
        QUICK + "&fail_every=3",
        "--qps",
        "100",
        "--duration",
        "2",
        "--late-threshold",
        "20",
    )
    assert data["verdict"]["valid"] is False
    assert code == ExitCode.INVALID, output


def test_a_run_invalid_only_because_the_client_fell_behind_exits_5(tmp_path):
    # The fake blocks the client's own event loop 8 ms per query: the client cannot keep 100 QPS.
    code, data, output = _server(
        tmp_path, QUICK + "&loop_block_ms=8", "--qps", "100", "--duration", "2"
    )
    checks = {c["name"]: c["passed"] for c in data["verdict"]["checks"]}
    assert checks["client kept up"] is False and checks["no failed queries"] is True
    assert code == ExitCode.CLIENT_BOUND, output


def test_abort_on_error_rate_stops_a_lost_run_early_with_its_own_reason(tmp_path):
    code, data, output = _server(
        tmp_path,
        QUICK + "&fail_every=2",
        "--qps",
        "200",
        "--duration",
        "10",
        "--abort-on-error-rate",
        "0.2",
        "--window",
        "1",
        "--late-threshold",
        "20",
    )
    run = data["run"]
    assert run["stop_reason"].startswith("aborted: error rate"), run
    assert run["partial"] is True and run["interrupted"] is False
    assert run["duration_ns"] < 3e9  # stopped near the first answers, not after 10 s
    assert code == ExitCode.INVALID, output
    summary = (tmp_path / "run" / "mlperf_log_summary.txt").read_text()
    assert "Result is : INVALID" in summary


def test_error_budget_is_stated_in_the_verdict_and_the_summary(tmp_path):
    code, data, output = _server(
        tmp_path,
        QUICK + "&fail_every=200",
        "--qps",
        "100",
        "--duration",
        "4",
        "--late-threshold",
        "20",
        "--error-budget",
        "0.05",
    )
    verdict = data["verdict"]
    assert verdict["rules"] == "error-budget" and verdict["error_budget"] == 0.05
    checks = {c["name"]: c for c in verdict["checks"]}
    assert checks["error budget"]["passed"] is True and "no failed queries" not in checks
    summary = (tmp_path / "run" / "mlperf_log_summary.txt").read_text()
    assert "Errors within the error budget (loadtest) : Yes" in summary
    assert "Rules : error budget of 5 %" in summary
    assert code in (ExitCode.OK, ExitCode.INVALID), output


@pytest.mark.parametrize(
    "command", [["server"], ["offline", "--expected-qps", "100"], ["single-stream"]]
)
def test_error_budget_is_refused_with_mlperf(command):
    result = loadtest(*command, "--url", QUICK, "--mlperf", "--error-budget", "0.01")
    assert result.returncode == ExitCode.ERROR
    assert_one_clear_error(result, "--error-budget is not MLPerf's rule")


def test_help_documents_the_exit_codes():
    result = loadtest("server", "--help")
    text = " ".join(result.stdout.split())
    assert "Exit codes: 0 VALID" in text and "5 INVALID only because the client" in text
