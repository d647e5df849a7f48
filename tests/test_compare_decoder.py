"""`loadtest compare` on the suite decoder, without a server: the overhead arithmetic on known
differences, the refusals, and the whole comparison path played by two in-process decoder loops.
(tests/test_decoder_triton.py plays it against the real embedded Triton.)"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from decoder_compare import NAME, decoder_setup, play_in_process, play_peaks_in_process
from rich.console import Console
from test_cli import loadtest

from loadtest.analysis.compare import NO_DIFFERENCE
from loadtest.analysis.token_overhead import figure_overhead
from loadtest.core.settings import NS_PER_S, PeakSettings, Protocol
from loadtest.errors import ExitCode, SettingsError
from loadtest.models import build_repository
from loadtest.report.compare_peak_report import peak_search_json, peak_table, ratio_lines
from loadtest.report.compare_report import compare_json
from loadtest.report.compare_token_report import token_overheads
from loadtest.report.html import compare_peak_html
from loadtest.rules.tokens import SERVER_COUNT
from loadtest.rules.validity import EARLY_STOPPING, PERFORMANCE

MS = 1_000_000


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("decoder_compare")
    build_repository(repository, [NAME])  # ~1 s
    return repository


def test_a_known_overhead_comes_out_exactly_with_an_interval_around_it():
    rng = np.random.default_rng(3)
    native = rng.integers(4 * MS, 12 * MS, size=400)
    triton = native + 5 * MS  # every query 5 ms later: the same law, shifted
    figure = figure_overhead("ttft", triton, native, seed=0)
    assert figure is not None
    assert figure.p50_overhead_ns == figure.p99_overhead_ns == 5 * MS
    assert figure.p99_ratio == pytest.approx(figure.triton_p99_ns / figure.native_p99_ns)
    low, high = figure.p99_overhead_interval
    assert low <= 5 * MS <= high
    r_low, r_high = figure.p99_ratio_interval
    assert r_low <= figure.p99_ratio <= r_high
    # p99 ≈ 12 ms against ≈ 17 ms: each side's interval is narrow beside 5 ms, so they differ
    assert figure.verdict == "Triton higher"
    same = figure_overhead("ttft", native, native, seed=0)
    assert same is not None and same.p99_overhead_ns == 0 and same.verdict == NO_DIFFERENCE
    assert figure_overhead("tpot", triton, native[:0], seed=0) is None


def test_the_intervals_are_seeded():
    a = np.arange(1, 301) * MS
    b = a * 2
    one, two = figure_overhead("tpot", b, a, seed=4), figure_overhead("tpot", b, a, seed=4)
    assert one == two


def test_a_decoder_is_refused_where_compare_cannot_measure_it(repository: Path):
    setup = decoder_setup(repository, "127.0.0.1:1", 2, 1)
    with pytest.raises(SettingsError, match="grpc-stream"):
        type(setup)(
            flags=type(setup.flags)(**{**setup.flags.__dict__, "protocol": Protocol.GRPC}),
            targets=("triton-grpc", "native"),
            runs=setup.runs,
        )
    with pytest.raises(SettingsError, match=r"model\.py.s settings"):
        type(setup)(
            flags=setup.flags,
            targets=setup.targets,
            runs=setup.runs,
            native_overrides={"intra_op_threads": 2},
        )
    with pytest.raises(SettingsError, match="do not mix"):
        type(setup)(
            flags=setup.flags, targets=("triton-grpc-stream", "triton-grpc"), runs=setup.runs
        )
    # on the command line: one line and exit 1 (settings), before any server is looked for
    for extra in ([], ["--qps", "2", "--peak"], ["--qps", "2"]):
        result = loadtest(
            "compare", "--model", NAME, "--protocol", "grpc-stream", "--repository",
            str(repository), "--embedded", "never", *extra,
        )  # fmt: skip
        assert result.returncode == ExitCode.ERROR, result.stderr + result.stdout
        assert "Traceback" not in result.stderr
    assert "--target-latency" in result.stderr + result.stdout


def test_two_in_process_loops_compare_end_to_end(repository: Path):
    """The comparison path without Triton: every answer as long as asked on both sides, the
    overhead of a loop against itself small, every field finite, compare.json written."""
    played = play_in_process(decoder_setup(repository, "in-process", 4, 1.5))
    result = played.result
    assert [run.target for run in result.runs] == ["triton-grpc-stream", "native"]
    assert result.agreement == {"triton-grpc-stream": 0.0}  # same prompt, same token count
    for run in result.runs:
        records = run.measurement.outcome.records
        ok = records.ok
        assert ok.sum() == records.issued.sum() >= 4
        wanted = played.max_tokens[records.sample_index[ok]]
        assert (records.final_count[ok] == wanted).all()
    (row,) = token_overheads(result)
    assert (
        row.triton.tokens
        == row.native.tokens
        == sum(
            played.max_tokens[r] for r in result.runs[1].measurement.outcome.records.sample_index
        )
    )
    for figure in (row.ttft, row.tpot):
        assert figure is not None
        values = (
            figure.p50_overhead_ns,
            figure.p99_overhead_ns,
            figure.p50_ratio,
            figure.p99_ratio,
            *figure.p99_overhead_interval,
            *figure.p99_ratio_interval,
        )
        assert all(math.isfinite(v) for v in values)
    assert math.isfinite(row.tokens_per_s_ratio) and row.triton.completed_tokens_per_s > 0
    data = json.loads(
        json.dumps(compare_json(played.setup, played.session, result, {}, 0.0), allow_nan=False)
    )
    overhead = data["token_overhead"]
    assert overhead["definitions"]["ttft"].startswith("from the scheduled time")
    (entry,) = overhead["rows"]
    assert entry["ttft"]["p99_overhead_interval_ns"][0] is not None
    assert data["rows"][0]["tokens"]["token_source"] == SERVER_COUNT
    assert any("config parity" in line for line in data["compared"])


def test_fixed_rate_runs_under_token_bounds_are_judged_by_loadgens_llm_rule(repository: Path):
    """With token bounds each run's verdict holds p TTFT and p TPOT (early stopping on each)
    instead of the end-to-end bound, on both sides."""
    setup = decoder_setup(repository, "in-process", 4, 1.5, 2000 * MS, 200 * MS)
    played = play_in_process(setup)
    for run in played.result.runs:
        names = {check.name for check in run.verdict.checks}
        assert {"p99 TTFT", "p99 TPOT", "early stopping TTFT", "early stopping TPOT"} <= names
        assert not names & {PERFORMANCE, EARLY_STOPPING}
        passed = {check.name: check.passed for check in run.verdict.checks}
        assert passed["p99 TTFT"] and passed["p99 TPOT"]  # 4 QPS: far under 2 s and 200 ms


def test_the_peak_search_holds_the_token_bounds_on_both_sides(repository: Path):
    """compare's interleaved search under LoadGen's token bounds on two in-process loops: every
    probe judged by the token rule with its p99 TTFT, TPOT and tokens/s; the table shows TTFT /
    TPOT (not the search's ratio) and the headline names the rule."""
    setup = decoder_setup(repository, "in-process", 4, 1.0)
    ttft_bound, tpot_bound = 300 * MS, 30 * MS
    settings = PeakSettings(
        target_latency_ns=30 * MS,  # the stand-in: the tightest bound (compare's, find-peak's)
        percentile=0.9,  # early stopping at p90 needs ~60 queries a probe, p99's ~600
        probe_duration_ns=1 * NS_PER_S,
        budget_ns=18 * NS_PER_S,
        start_qps=20.0,  # no calibration: the budget goes to probes
        max_qps=40.0,
        resolution=0.25,
        sample_count=8,
        late_threshold_ns=50 * MS,
        ttft_bound_ns=ttft_bound,
        tpot_bound_ns=tpot_bound,
    )
    peaks = play_peaks_in_process(setup, settings)
    assert set(peaks.peaks) == {"triton-grpc-stream", "native"}
    for peak in peaks.peaks.values():
        assert peak.runs, peak
        for run in peak.runs:
            assert run.token_ratio is not None and run.ttft_ns and run.tpot_ns
            assert run.tokens_per_s and run.tokens_per_s > 0
            names = {check.name for check in run.verdict.checks}
            assert "p90 TTFT" in names and PERFORMANCE not in names
            # VALID exactly when both percentiles hold their bounds (and nothing else failed)
            if run.probe.valid:
                assert run.ttft_ns <= ttft_bound and run.tpot_ns <= tpot_bound
    console = Console(width=200, record=True)
    console.print(peak_table(peaks))
    text = console.export_text()
    assert "p90 TTFT / TPOT ms" in text and "tokens/s" in text
    assert "MLPerf token bounds p90 TTFT ≤ 300 ms and p90 TPOT ≤ 30 ms" in text
    data = json.loads(json.dumps(peak_search_json(peaks), allow_nan=False))
    assert data["rule"].startswith("MLPerf token bounds")
    for target in data["targets"]:
        assert all(probe["tokens_per_s"] > 0 for probe in target["probes"])
        if target["peak_qps"] is not None:
            assert target["tokens_per_s_at_peak"] > 0
    html = compare_peak_html({"peak_search": data})
    assert "Peak under MLPerf token bounds p90 TTFT" in html and "tokens_per_s_at_peak" in html
    for line in ratio_lines(peaks, 30, 0.9):
        assert "under MLPerf token bounds" in line or "÷ native peak" in line


def test_compare_refuses_token_bounds_it_cannot_hold(repository: Path):
    """One line and exit 1, before any server is looked for."""
    cases = [
        (["--model", "tiny", "--mlperf-model", "llama2-70b"], "answers whole"),
        (["--model", NAME, "--protocol", "grpc-stream", "--mlperf-model", "llama2-70b",
          "--target-latency", "2000"], "end-to-end bound"),
        (["--model", NAME, "--protocol", "grpc-stream"], "--mlperf-model"),
    ]  # fmt: skip
    for args, said in cases:
        result = loadtest("compare", *args, "--repository", str(repository), "--embedded", "never")
        assert result.returncode == ExitCode.ERROR, result.stderr + result.stdout
        assert "Traceback" not in result.stderr
        assert said in result.stderr + result.stdout, (args, result.stderr)
