"""The MLPerf-style summary text: LoadGen's lines, in LoadGen's order, with our numbers."""

from __future__ import annotations

import re

import numpy as np

from loadtest.core.records import Records, Status
from loadtest.report.mlperf_summary import render_mlperf_summary
from loadtest.rules.stats import Summary, summarize
from loadtest.rules.validity import Verdict, judge_offline, judge_server, judge_single_stream

MS = 1_000_000
S = 1_000_000_000

PARAMETERS: dict[str, object] = {
    "samples_per_query": 1,
    "target_qps": 1000.0,
    "target_latency (ns)": 10 * MS,
    "min_duration (ms)": 500,
    "max_duration (ms)": 0,
    "min_query_count": 100,
    "schedule_rng_seed": 0,
    "sample_index_rng_seed": 1,
    "print_timestamps": False,
    "early_stopping_confidence": 0.99,
}


def server_records(n: int = 1000, latency_ns: int = 2 * MS, late: int = 0) -> Records:
    scheduled = np.arange(1, n + 1, dtype=np.int64) * MS
    records = Records(scheduled, np.zeros(n, dtype=np.int32))
    records.issued_ns[:] = scheduled
    records.issued_ns[n - late :] += 5 * MS if late else 0
    # latencies spread over latency_ns .. latency_ns + n − 1 ns so percentiles differ
    records.completed_ns[:] = records.issued_ns + latency_ns + np.arange(n)
    records.status[:] = Status.OK
    return records


def server(records: Records, min_duration_ns: int = S // 2) -> tuple[Summary, Verdict]:
    summary = summarize(records)
    verdict = judge_server(
        summary,
        records.latency_from_scheduled_ns(),
        target_latency_ns=10 * MS,
        percentile=0.99,
        min_duration_ns=min_duration_ns,
        min_query_count=100,
    )
    return summary, verdict


def render(summary: Summary, verdict: Verdict, scenario: str = "Server") -> str:
    return render_mlperf_summary(
        sut_name="grpc://localhost:8001 tiny",
        scenario=scenario,
        summary=summary,
        verdict=verdict,
        test_parameters=PARAMETERS,
    )


def test_valid_server_summary_lines() -> None:
    summary, verdict = server(server_records())
    text = render(summary, verdict)
    lines = text.splitlines()
    assert lines[:7] == [
        "=" * 48,
        "MLPerf Results Summary",
        "=" * 48,
        "SUT name : grpc://localhost:8001 tiny",
        "Scenario : Server",
        "Mode     : PerformanceOnly",
        f"Completed samples per second    : {summary.completed_samples_per_s:.2f}",
    ]
    expected_in_order = [
        "Result is : VALID",
        "  Performance constraints satisfied : Yes",
        "  Min duration satisfied : Yes",
        "  Min queries satisfied : Yes",
        "  Early stopping satisfied: Yes",
        "Early Stopping Result:",
        " * Run successful.",
        "Additional Stats",
        f"Scheduled samples per second : {summary.scheduled_samples_per_s:.2f}",
        f"Min latency (ns)                : {2 * MS}",
        f"Max latency (ns)                : {2 * MS + 999}",
        f"Mean latency (ns)               : {2 * MS + 499}",  # 499.5 truncated
        f"50.00 percentile latency (ns)   : {2 * MS + 500}",
        f"90.00 percentile latency (ns)   : {2 * MS + 900}",
        f"95.00 percentile latency (ns)   : {2 * MS + 950}",
        f"97.00 percentile latency (ns)   : {2 * MS + 970}",
        f"99.00 percentile latency (ns)   : {2 * MS + 990}",
        f"99.90 percentile latency (ns)   : {2 * MS + 999}",
        "Test Parameters Used",
        "samples_per_query : 1",
        "target_qps : 1000",  # doubles as LoadGen's iostream prints them
        "target_latency (ns): 10000000",  # LoadGen's spacing for unit-suffixed keys
        "min_duration (ms): 500",
        "min_query_count : 100",
        "print_timestamps : 0",
        "early_stopping_confidence : 0.99",
    ]
    positions = [lines.index(line) for line in expected_in_order]
    assert positions == sorted(positions)
    assert "Recommendations:" not in text
    assert summary.scheduled_samples_per_s == 1000.0
    assert text.endswith("\n")


def test_parsers_find_their_fields() -> None:
    # the regexes MLPerf result scripts use on this file
    summary, verdict = server(server_records())
    text = render(summary, verdict)

    def field(pattern: str) -> str:
        match = re.search(pattern, text)
        assert match is not None, pattern
        return match.group(1)

    assert field("Result is : (.+?)\n") == "VALID"
    assert float(field(r"Completed samples per second\s*: (.+?)\n")) > 0
    assert field("Scheduled samples per second : (.+?)\n") == "1000.00"
    assert int(field(r"99.00 percentile latency \(ns\)\s*: (\d+)")) == summary.latency.p99_ns


def test_invalid_server_summary() -> None:
    # latencies far above the 10 ms target on only 300 queries: constraint and early stopping fail
    summary, verdict = server(server_records(n=300, latency_ns=50 * MS), min_duration_ns=S)
    text = render(summary, verdict)
    lines = text.splitlines()
    assert "Result is : INVALID" in lines
    assert "  Performance constraints satisfied : NO" in lines
    assert "  Min duration satisfied : NO" in lines
    assert "  Min queries satisfied : Yes" in lines
    assert "  Early stopping satisfied: NO" in lines
    rec = lines.index("Recommendations:")
    assert lines[rec + 1] == " * Reduce target QPS to improve latency."
    assert any(line.startswith(" * INVALID because performance constraint: p99 ") for line in lines)
    assert " * Run unsuccessful." in lines
    assert " * Processed 300 queries." in lines
    # all 300 over latency: h*(300) + 300 − 300 more
    assert any(line.startswith(" * Would need to run at least ") for line in lines)
    assert lines.index("Early Stopping Result:") > rec


def test_client_bound_shows_in_extra_lines() -> None:
    summary, verdict = server(server_records(late=50))
    lines = render(summary, verdict).splitlines()
    assert "Result is : INVALID" in lines
    # LoadGen's four are all satisfied; our extra line says why it is INVALID
    for line in (
        "  Performance constraints satisfied : Yes",
        "  Min duration satisfied : Yes",
        "  Min queries satisfied : Yes",
        "  Early stopping satisfied: Yes",
        "  Client kept up with schedule (loadtest) : NO",
        "  No failed queries (loadtest) : Yes",
        "  Run completed (loadtest) : Yes",
    ):
        assert line in lines
    assert any("INVALID because client-bound" in line for line in lines)
    assert f"Send lag p99 (ns)               : {5 * MS}" in lines
    assert "Issued > 1000000 ns late        : 5.00 %" in lines


def test_latency_from_send_is_reported_separately() -> None:
    summary, verdict = server(server_records(late=50))
    lines = render(summary, verdict).splitlines()
    start = lines.index("Latency from actual send (what a coordinated-omission tool reports):")
    assert (
        lines[start + 1] == f"Min latency (ns)                : {summary.latency_from_issue.min_ns}"
    )


def test_offline_summary() -> None:
    n = 100
    records = Records(np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int32))
    records.issued_ns[:] = 0
    records.completed_ns[:] = np.linspace(S // 100, 2 * S, n).astype(np.int64)
    records.status[:] = Status.OK
    summary = summarize(records)
    verdict = judge_offline(summary, min_duration_ns=S)
    lines = render(summary, verdict, scenario="Offline").splitlines()
    assert "Samples per second: 50" in lines
    assert "Result is : VALID" in lines
    assert not any("Performance constraints" in line for line in lines)
    assert "  Early stopping satisfied: Yes" in lines
    assert "Early Stopping Result:" not in lines
    assert not any("Client kept up with schedule (loadtest)" in line for line in lines)


def test_single_stream_summary() -> None:
    n = 500
    records = Records(np.arange(n, dtype=np.int64) * 2 * MS, np.zeros(n, dtype=np.int32))
    records.issued_ns[:] = records.scheduled_ns
    records.completed_ns[:] = records.scheduled_ns + MS + np.arange(n)
    records.status[:] = Status.OK
    summary = summarize(records)
    verdict = judge_single_stream(summary, records.latency_from_issue_ns(), min_duration_ns=S // 2)
    lines = render(summary, verdict, scenario="SingleStream").splitlines()
    assert f"90th percentile latency (ns) : {MS + 450}" in lines
    assert "Result is : VALID" in lines
    assert " * Processed at least 64 queries (500)." in lines
    assert any(line.startswith("QPS w/ loadgen overhead         : ") for line in lines)
