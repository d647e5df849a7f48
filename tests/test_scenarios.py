"""Offline, SingleStream and MultiStream on the closed-loop runner, against the fake target."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_cli import expected_exit_code

from loadtest.core.settings import NS_PER_S, OfflineSettings, Scenario, StreamSettings
from loadtest.scenarios.mlperf.play import calibrate_offline, run_offline, run_stream
from loadtest.scenarios.mlperf.registry import interpret
from loadtest.targets.fake import FAKE_MODEL, FakeTarget, ServiceLaw

MS = 1_000_000


def _measure(play, target):
    async def go():
        await target.open()
        return await play(target)

    return asyncio.run(go())


def test_offline_issues_everything_at_once_under_the_in_flight_cap():
    settings = OfflineSettings(expected_qps=400, min_duration_ns=NS_PER_S, max_in_flight=8)
    target = FakeTarget(ServiceLaw("constant", 5 * MS), servers=4)
    measurement = _measure(lambda t: run_offline(t, FAKE_MODEL, 8, settings), target)
    records = measurement.outcome.records
    assert len(records) == settings.requests == 440  # 1.1 × 1 s × 400
    assert np.all(records.scheduled_ns == 0)  # one coalesced query, due at the start
    assert records.ok.all()
    # Never more than 8 outstanding: at any issue time, fewer than 8 others were in flight.
    issued, done = records.issued_ns, records.completed_ns
    in_flight_at_issue = [
        int(np.sum((issued < t) & (done > t))) for t in issued[:: max(1, len(issued) // 50)]
    ]
    assert max(in_flight_at_issue) <= 8
    summary, verdict = interpret(settings, measurement.outcome)
    # 4 servers × 5 ms: about 800 samples/s at most, so 440 samples take ≥ 0.55 s.
    assert summary.throughput_samples_per_s < 800
    assert summary.throughput_samples_per_s == pytest.approx(
        440 / (summary.final_ok_completed_ns / 1e9), rel=1e-2
    )
    # That is under the 1 s minimum: INVALID with LoadGen's advice to raise expected QPS.
    assert not verdict.valid
    assert any("expected QPS" in r for r in verdict.recommendations)


def test_offline_long_enough_is_valid():
    settings = OfflineSettings(expected_qps=100, min_duration_ns=NS_PER_S // 2, max_in_flight=4)
    target = FakeTarget(ServiceLaw("constant", 10 * MS), servers=1)  # 100/s: 55 samples ≈ 0.55 s
    measurement = _measure(lambda t: run_offline(t, FAKE_MODEL, 8, settings), target)
    _, verdict = interpret(settings, measurement.outcome)
    assert verdict.valid, verdict.reasons


def test_offline_auto_sizes_the_query_from_the_calibration():
    # 4 servers × 5 ms each: capacity = servers / service time = 800 samples/s.
    settings = OfflineSettings(
        expected_qps=None,
        min_duration_ns=NS_PER_S // 2,
        max_in_flight=8,
        calibration_ns=NS_PER_S // 2,
    )
    assert settings.expected_qps_source == "auto"
    target = FakeTarget(ServiceLaw("constant", 5 * MS), servers=4)

    async def play(t):
        sized = await calibrate_offline(t, 8, settings)
        return sized, await run_offline(t, FAKE_MODEL, 8, sized)

    sized, measurement = _measure(play, target)
    calibration = sized.calibration
    assert calibration is not None and sized.expected_qps_source == "calibrated"
    assert calibration.in_flight == 8 and calibration.seconds >= 0.5
    assert 0.85 * 800 < calibration.samples_per_s < 1.02 * 800
    assert sized.expected_qps == calibration.headroom * calibration.samples_per_s
    assert sized.query_samples == int(1.1 * 0.5 * sized.expected_qps)
    summary, verdict = interpret(sized, measurement.outcome)
    assert verdict.valid, verdict.reasons  # long enough: no "increase expected QPS"
    assert summary.throughput_samples_per_s < 1.1 * calibration.samples_per_s
    # At the calibrated rate the query lasts 1.1 × headroom × the minimum duration.
    assert summary.final_ok_completed_ns > 1.1 * calibration.headroom * 0.5 * NS_PER_S * 0.9


def test_offline_given_expected_qps_is_not_calibrated():
    settings = OfflineSettings(expected_qps=100, min_duration_ns=NS_PER_S)
    target = FakeTarget(ServiceLaw("constant", 5 * MS), servers=4)
    assert _measure(lambda t: calibrate_offline(t, 8, settings), target) is settings
    assert settings.expected_qps_source == "given" and settings.calibration is None


def test_offline_cli_default_is_calibrated_and_valid(tmp_path: Path):
    out = tmp_path / "off"
    result = _cli(
        "offline",
        "--url",
        "fake://?servers=4&service_ms=1",
        "--duration",
        "1",
        "--output",
        str(out),
    )
    data = json.loads((out / "result.json").read_text())
    assert result.returncode == 0, result.stderr
    assert data["verdict"]["valid"]
    assert data["settings"]["expected_qps_source"] == "calibrated"
    calibration = data["settings"]["calibration"]
    assert calibration["samples_per_s"] > 0 and calibration["in_flight"] == 64
    assert "calibrated:" in result.stdout


@pytest.mark.parametrize("scenario", [Scenario.SINGLE_STREAM, Scenario.MULTI_STREAM])
def test_streams_keep_one_query_in_flight_and_meet_both_minimums(scenario):
    spq = 1 if scenario is Scenario.SINGLE_STREAM else 8
    settings = StreamSettings(
        scenario=scenario,
        percentile=0.9 if spq == 1 else 0.99,
        samples_per_query=spq,
        min_duration_ns=NS_PER_S // 2,
        min_query_count=120 if spq == 1 else 700,  # p99 early stopping needs ≥ h*(1) + 1 = 662
    )
    target = FakeTarget(ServiceLaw("constant", 1 * MS), servers=4)
    measurement = _measure(lambda t: run_stream(t, FAKE_MODEL, 8, settings), target)
    records = measurement.outcome.records
    assert len(records) >= 120
    assert records.issued_ns[-1] >= NS_PER_S // 2
    # Closed loop: each query is issued after the previous one completed.
    assert np.all(records.issued_ns[1:] >= records.completed_ns[:-1])
    assert np.array_equal(records.scheduled_ns, records.issued_ns)
    summary, verdict = interpret(settings, measurement.outcome)
    assert summary.samples_per_query == spq
    estimate = verdict.early_stopping_estimate
    assert estimate is not None and estimate.estimate_ns is not None
    latencies = np.sort(records.latency_from_issue_ns())
    # The estimate is one of the measured latencies, at or above the plain percentile.
    assert estimate.estimate_ns in latencies
    assert estimate.estimate_ns >= latencies[int(len(latencies) * settings.percentile) - 1]


def test_stream_grows_past_its_first_allocation():
    settings = StreamSettings(
        scenario=Scenario.SINGLE_STREAM, percentile=0.9, min_duration_ns=1, min_query_count=3000
    )
    target = FakeTarget(ServiceLaw("constant", 0), servers=1)
    measurement = _measure(lambda t: run_stream(t, FAKE_MODEL, 8, settings), target)
    records = measurement.outcome.records
    assert len(records) == 3000 and records.ok.all()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtest.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_multi_stream_cli_writes_the_same_schema(tmp_path: Path):
    out = tmp_path / "ms"
    result = _cli(
        "multi-stream",
        "--url",
        "fake://?servers=1&service_ms=1",
        "--duration",
        "1",
        "--output",
        str(out),
    )
    data = json.loads((out / "result.json").read_text())
    assert result.returncode == expected_exit_code(data), result.stderr
    assert data["schema"] == "loadtest.result" and data["scenario"] == "MultiStream"
    assert data["summary"]["samples_per_query"] == 8
    assert "Scenario : MultiStream" in (out / "mlperf_log_summary.txt").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["offline", "--expected-qps", "0"], "--expected-qps must be > 0"),
        (["offline", "--max-in-flight", "0"], "--max-in-flight must be ≥ 1"),
        (["offline", "--mlperf"], "--mlperf needs an explicit --expected-qps"),
        (["single-stream", "--percentile", "0"], "--percentile must be in (0, 100)"),
        (["multi-stream", "--samples-per-query", "0"], "--samples-per-query must be ≥ 1"),
        (["offline", "--qps", "10"], "No such option"),  # a Server-only flag on Offline
    ],
)
def test_scenario_bad_flags(args: list[str], message: str):
    result = _cli(*args, "--url", "fake://")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert message in result.stderr


@pytest.mark.triton
@pytest.mark.solo
def test_offline_default_is_valid_on_triton(triton, tmp_path: Path):
    """No --expected-qps: the calibration sizes the query, so a short run is long enough."""
    out = tmp_path / "run"
    result = _cli(
        "offline",
        "--duration",
        "3",
        "--url",
        triton.grpc_url,
        "--model",
        "tiny",
        "--embedded",
        "never",
        "--output",
        str(out),
    )
    data = json.loads((out / "result.json").read_text())
    assert result.returncode == 0, result.stdout + result.stderr
    assert data["verdict"]["valid"], data["verdict"]
    assert data["settings"]["expected_qps_source"] == "calibrated"
    assert data["summary"]["errors"] == 0


@pytest.mark.triton
@pytest.mark.parametrize(
    "args",
    [
        ["offline", "--expected-qps", "200", "--duration", "2"],
        ["single-stream", "--duration", "2"],
        ["multi-stream", "--duration", "2"],
    ],
)
def test_scenarios_end_to_end_on_triton(triton, tmp_path: Path, args: list[str]):
    out = tmp_path / "run"
    result = _cli(
        *args,
        "--url",
        triton.grpc_url,
        "--model",
        "tiny",
        "--embedded",
        "never",
        "--output",
        str(out),
    )
    data = json.loads((out / "result.json").read_text())
    assert result.returncode == expected_exit_code(data), result.stderr
    assert data["summary"]["completed_ok"] == data["summary"]["scheduled"] > 0
    assert data["summary"]["errors"] == 0
