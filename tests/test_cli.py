"""The CLI end to end: fast runs against the fake target, bad input as one clear line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

FAKE = "fake://?servers=4&law=exponential&service_ms=1"


def loadtest(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtest.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "160"},
    )


def expected_exit_code(data: dict) -> int:
    """The exit code a run's result.json implies (errors.ExitCode): 0 VALID, 5 INVALID only
    because the client fell behind, 3 any other INVALID."""
    verdict = data["verdict"]
    if verdict["valid"]:
        return 0
    checks = {c["name"]: c["passed"] for c in verdict["checks"]}
    causes = (
        "run complete",
        "no failed queries",
        "error budget",
        "outputs match reference",
        "no response cache",
    )
    client_only = checks.get("client kept up") is False and all(
        checks[name] for name in causes if name in checks
    )
    return 5 if client_only else 3


def assert_one_clear_error(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert text in result.stderr, result.stderr


def test_server_against_fake_writes_result_and_summary(tmp_path: Path):
    out = tmp_path / "run"
    # A generous late threshold: CI machines are shared, and this test is about the pipeline.
    result = loadtest(
        "server",
        "--url",
        FAKE,
        "--qps",
        "200",
        "--duration",
        "4",
        "--target-latency",
        "50",
        "--late-threshold",
        "20",
        "--output",
        str(out),
        "--records",
    )
    assert result.returncode == 0, result.stderr
    assert "Result is: VALID" in result.stdout
    assert "from scheduled time" in result.stdout
    data = json.loads((out / "result.json").read_text())
    assert data["schema"] == "loadtest.result" and data["scenario"] == "Server"
    assert data["verdict"]["valid"] is True
    assert data["settings"]["qps"] == 200 and data["settings"]["schedule_seed"] == 0
    summary = data["summary"]
    assert summary["scheduled"] == summary["completed_ok"] > 700
    assert summary["client_kept_up"] is True
    assert len(data["records"]["columns"]["scheduled_ns"]) == summary["scheduled"]
    text = (out / "mlperf_log_summary.txt").read_text()
    assert "Scenario : Server" in text and "VALID" in text


def test_slow_fake_is_invalid_with_reasons(tmp_path: Path):
    # One 20 ms server at 100 QPS is overloaded (capacity 50 QPS): the bound must fail.
    result = loadtest(
        "server",
        "--url",
        "fake://?servers=1&law=constant&service_ms=20",
        "--qps",
        "100",
        "--duration",
        "2",
        "--target-latency",
        "30",
        "--output",
        str(tmp_path / "o"),
    )
    assert "INVALID" in result.stdout
    data = json.loads((tmp_path / "o" / "result.json").read_text())
    assert data["verdict"]["valid"] is False
    assert result.returncode == expected_exit_code(data) != 0, result.stderr
    assert any("p99" in reason for reason in data["verdict"]["reasons"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--qps", "0"], "--qps must be > 0"),
        (["--qps", "-5"], "--qps must be > 0"),
        (["--duration", "0"], "--duration must be > 0"),
        (["--duration", "-1"], "--duration must be > 0"),
        (["--percentile", "100"], "--percentile must be in (0, 100)"),
        (["--target-latency", "0"], "--target-latency must be > 0"),
        (["--shape", "nonsense"], "--shape"),
        (["--mlperf", "--duration", "10"], "--mlperf needs --duration ≥ 600 s"),
    ],
)
def test_bad_flags_are_one_clear_line(args: list[str], message: str):
    result = loadtest("server", "--url", FAKE, "--target-latency", "10", *args)
    assert_one_clear_error(result, message)


def test_unknown_flag_is_a_usage_error_without_traceback():
    result = loadtest("server", "--qsp", "10")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "No such option" in result.stderr


def test_unreachable_server_is_one_clear_line():
    result = loadtest("server", "--url", "127.0.0.1:9", "--embedded", "never", "--qps", "10")
    assert_one_clear_error(result, "nothing answers at 127.0.0.1:9")


def test_model_without_default_bound_needs_target_latency():
    result = loadtest("server", "--url", FAKE, "--model", "my_model", "--qps", "10")
    assert_one_clear_error(result, "pass --target-latency")


def test_ctrl_c_writes_partial_result(tmp_path: Path):
    out = tmp_path / "partial"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loadtest.cli",
            "server",
            "--url",
            FAKE,
            "--qps",
            "200",
            "--duration",
            "60",
            "--target-latency",
            "50",
            "--output",
            str(out),
            "--no-live",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(4)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert "Traceback" not in stderr
    assert process.returncode == 130
    data = json.loads((out / "result.json").read_text())
    assert data["run"]["partial"] is True and "interrupted" in data["run"]["stop_reason"]
    assert data["verdict"]["valid"] is False
    assert 0 < data["summary"]["issued"] < data["summary"]["scheduled"]
    assert "partial" in stdout.lower()


@pytest.mark.triton
def test_server_end_to_end_on_embedded_triton(built_repository: Path, tmp_path: Path):
    out = tmp_path / "e2e"
    result = loadtest(
        "server",
        "--repository",
        str(built_repository),
        "--url",
        "127.0.0.1:9",
        "--qps",
        "50",
        "--duration",
        "4",
        "--output",
        str(out),
        "--records",
        "--html",
        str(tmp_path / "e2e.html"),
    )
    assert "starting the embedded Triton" in result.stderr
    data = json.loads((out / "result.json").read_text())
    assert result.returncode == expected_exit_code(data), result.stderr
    server = data["environment"]["server"]
    assert server["embedded"] is True and server["triton_version"] == "2.51.0"
    assert "Python-based backend" in server["embedded_backend"]
    assert data["summary"]["completed_ok"] == data["summary"]["scheduled"] > 100
    assert data["model"]["name"] == "tiny"
    # One result object: the server side is in result.json and in the HTML written from it.
    side = data["server_side"]
    assert side["split"]["requests"] == data["summary"]["completed_ok"]
    assert side["metrics"] is not None
    page = (tmp_path / "e2e.html").read_text()
    assert 'data-figure="fig-split-run-0"' in page
    assert "Server-side latency split: not recorded" not in page
    assert "not recorded in this run" not in page and "<td>cpu_utilization</td>" in page
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary file behind
    # The server started for the run is gone after it.
    pid = server["embedded_pid"]
    deadline = time.monotonic() + 15
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists()


@pytest.mark.triton
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_unknown_model_on_a_running_triton(triton, protocol: str):
    url = triton.grpc_url if protocol == "grpc" else triton.http_url
    result = loadtest(
        "server",
        "--url",
        url,
        "--protocol",
        protocol,
        "--model",
        "no_such_model",
        "--target-latency",
        "10",
        "--qps",
        "10",
        "--embedded",
        "never",
    )
    assert_one_clear_error(result, "no_such_model")


@pytest.mark.triton
def test_unknown_model_for_the_embedded_server(built_repository: Path):
    result = loadtest(
        "server",
        "--repository",
        str(built_repository),
        "--url",
        "127.0.0.1:9",
        "--model",
        "no_such_model",
        "--target-latency",
        "10",
    )
    assert_one_clear_error(result, "no_such_model")


@pytest.mark.triton
def test_wrong_input_shape_on_a_running_triton(triton):
    result = loadtest(
        "server",
        "--url",
        triton.grpc_url,
        "--model",
        "resnet50",
        "--shape",
        "input:3,100,100",
        "--qps",
        "5",
        "--embedded",
        "never",
    )
    assert_one_clear_error(result, "does not fit")


def test_piped_output_prints_every_table_in_full(tmp_path: Path):
    """A CI log is not a terminal: no cell may be cut to '…', whatever the table's width."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    args = ["server", "--url", FAKE, "--qps", "50", "--duration", "1", "--target-latency", "50"]
    args += ["--late-threshold", "20", "--no-live", "--output", str(tmp_path / "run")]
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert "…" not in result.stdout, result.stdout
    assert "Result is:" in result.stdout and "send lag p50" in result.stdout
    assert "µs per issued query (all generator processes, over the run)" in result.stdout


@pytest.mark.triton
def test_the_server_window_opens_after_the_workers_are_ready(built_repository: Path, tmp_path):
    """With 2 workers, each worker's warm-up request and the spawn fall before the window: Triton
    counts exactly the run's requests (before, the warm-ups made the counts disagree)."""
    out = tmp_path / "two"
    result = loadtest(
        "server",
        "--repository",
        str(built_repository),
        "--url",
        "127.0.0.1:9",
        "--qps",
        "40",
        "--duration",
        "3",
        "--workers",
        "2",
        "--late-threshold",
        "50",
        "--output",
        str(out),
    )
    assert result.returncode in (0, 3), result.stderr
    data = json.loads((out / "result.json").read_text())
    assert data["client"]["worker_count"] == 2
    split = data["server_side"]["split"]
    assert split["counts_match"] is True, data["server_side"]["notes"]
    assert split["requests"] == data["summary"]["completed_ok"]


@pytest.mark.triton
@pytest.mark.solo
def test_the_default_client_rule_holds_at_a_low_rate_on_the_embedded_triton(triton, tmp_path: Path):
    """Every other end-to-end test relaxes --late-threshold; this one keeps the default rule
    (send-lag p99 ≤ max(1 ms, 5 % of the bound), ≤ 1 % late) at a rate one process holds easily,
    so a regression in the issuer's precision fails CI.

    Over gRPC the send is stamped when grpc.aio writes it, about 0.25 ms after the issuer hands
    it over (measured idle: p50 0.23-0.27 ms, against 0.01 ms over HTTP), so a few late timer
    wake-ups of a shared 2-core VM can push the p99 of 400 sends just past 1 ms (seen once in
    three idle CI runs: 1.146 ms). A second run is allowed for that; an issuer that has really
    lost its precision fails both."""
    details = []
    for attempt in range(2):
        out = tmp_path / f"default-rule-{attempt}"
        result = loadtest(
            "server",
            "--url",
            triton.grpc_url,  # the session's warm server: no start-up beside the run
            "--embedded",
            "never",
            "--qps",
            "50",
            "--duration",
            "8",
            "--target-latency",
            "15",
            "--output",
            str(out),
        )
        data = json.loads((out / "result.json").read_text())
        checks = {c["name"]: c for c in data["verdict"]["checks"]}
        assert data["summary"]["send_lag"]["allowed_lag_ns"] == 1_000_000  # 5 % of 15 ms < 1 ms
        assert result.returncode == expected_exit_code(data), result.stderr
        if checks["client kept up"]["passed"]:
            assert result.returncode != 5, result.stderr
            return
        details.append(checks["client kept up"]["detail"])
    raise AssertionError(f"the client fell behind in both runs: {details}")
