"""Issue #27 at the command line: --arrival, --stages and --trace on the fake target, what
result.json and the reports say about them, and their bad values (one usage line, exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from loadtest.cli import app

FAKE = "fake://?servers=4&service_ms=1"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtest.cli", *args, "--no-live"],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "COLUMNS": "200"},  # table cells unwrapped
    )


def _result(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "result.json").read_text())
    return data


def test_gamma_law_and_its_seed_are_recorded_and_named(tmp_path: Path):
    out = tmp_path / "gamma"
    done = _cli("server", "--url", FAKE, "--qps", "200", "--duration", "1", "--arrival",
                "gamma:2", "--seed", "7", "--output", str(out))  # fmt: skip
    assert done.returncode in (0, 3, 5), done.stderr
    data = _result(out)
    assert data["settings"]["arrival_law"] == {"cv": 2.0, "name": "gamma"}
    assert data["settings"]["schedule_seed"] == 7
    assert "gamma (CV 2) at 200 QPS" in done.stderr + done.stdout


def test_staged_run_reports_each_stage_and_fails_on_the_stage_that_misses(tmp_path: Path):
    """One server of 5 ms carries 200 QPS: 20 QPS is met, 1000 QPS for a second is not, so the
    run is INVALID by that stage alone, and each stage reports its own rate."""
    out = tmp_path / "staged"
    one = "fake://?servers=1&service_ms=5&law=constant"
    done = _cli("server", "--url", one, "--stages", "2s:20,1s:1000", "--target-latency", "50",
                "--output", str(out))  # fmt: skip
    assert done.returncode in (3, 5), done.stdout + done.stderr  # 5: this client fell behind too
    data = _result(out)
    stages = data["stages"]
    assert [s["spec"] for s in stages] == ["2s:20", "1s:1000"]
    assert [s["offered_qps"] for s in stages] == [20.0, 1000.0]
    assert sum(s["scheduled"] for s in stages) == data["summary"]["scheduled"]
    assert 20 <= stages[0]["scheduled"] <= 70 and stages[1]["scheduled"] > 800
    assert stages[0]["met"] and not stages[1]["met"]
    assert stages[0]["percentiles_ns"]["p99"] < 50_000_000
    assert stages[1]["latency_ns"] is None or stages[1]["latency_ns"] > 50_000_000
    # the server carried at most 200 QPS during the second stage, whatever it offered
    assert stages[1]["completed_qps"] <= 210 < 0.5 * stages[1]["scheduled_qps"]
    assert stages[0]["completed_qps"] == pytest.approx(stages[0]["scheduled_qps"], abs=2)
    checks = {c["name"]: c for c in data["verdict"]["checks"]}
    assert not checks["every stage met the bound"]["passed"]
    assert "stage 2 (1s:1000)" in checks["every stage met the bound"]["detail"]
    assert data["settings"]["qps"] == pytest.approx((2 * 20 + 1000) / 3)
    assert "Stages" in done.stdout and "played whole" in done.stderr
    # the timeline's offered (scheduled) rate shows the step
    line = data["timeline"]
    assert max(line["scheduled"][2:]) > 5 * max(line["scheduled"][:2])


def test_staged_run_valid_when_every_stage_is(tmp_path: Path):
    out = tmp_path / "ok"
    page = tmp_path / "report.html"
    done = _cli("server", "--url", FAKE, "--stages", "1s:30,1s:60", "--target-latency", "500",
                "--output", str(out), "--html", str(page))  # fmt: skip
    data = _result(out)
    assert all(s["met"] for s in data["stages"])
    html = page.read_text()
    assert "<h3>Stages</h3>" in html and "<td>1s:60</td>" in html
    checks = {c["name"]: c["passed"] for c in data["verdict"]["checks"]}
    assert checks["every stage met the bound"]
    # the minimum duration and count do not mark a short profile INVALID
    assert checks["min duration"] and checks["min queries"]
    assert done.returncode == (0 if data["verdict"]["valid"] else 3) or (
        done.returncode == 5 and not checks["client kept up"]  # a loaded 2-core machine
    )


def test_a_replayed_result_reproduces_its_schedule_bit_for_bit(tmp_path: Path):
    first, again = tmp_path / "first", tmp_path / "again"
    done = _cli("server", "--url", FAKE, "--qps", "300", "--duration", "1", "--arrival",
                "gamma:1.5", "--records", "--output", str(first))  # fmt: skip
    assert done.returncode in (0, 3, 5), done.stderr
    replay = _cli("server", "--url", FAKE, "--trace", str(first / "result.json"), "--records",
                  "--output", str(again))  # fmt: skip
    assert replay.returncode in (0, 3, 5), replay.stderr
    original, replayed = _result(first), _result(again)
    scheduled = original["records"]["columns"]["scheduled_ns"]
    assert replayed["records"]["columns"]["scheduled_ns"] == scheduled
    law = replayed["settings"]["arrival_law"]
    assert law["name"] == "timestamps" and law["times_ns"] == sorted(scheduled)
    # each query keeps its trace index: a records column (a drawn law's run has none)
    assert replayed["records"]["columns"]["trace_index"] == list(range(len(scheduled)))
    assert "trace_index" not in original["records"]["columns"]
    # qps is the trace's mean rate; a 1 s trace is not INVALID for being short of 60 s
    assert replayed["settings"]["qps"] == pytest.approx(len(scheduled) / (max(scheduled) / 1e9))
    checks = {c["name"]: c["passed"] for c in replayed["verdict"]["checks"]}
    assert checks["min duration"] and checks["min queries"]
    assert "played whole" in replay.stderr


def test_trace_with_mlperf_keeps_loadgens_minimum_duration(tmp_path: Path):
    trace = tmp_path / "t.csv"
    trace.write_text("time_ms\n" + "\n".join(str(10 * i) for i in range(50)) + "\n")
    out = tmp_path / "mlperf"
    done = _cli("server", "--url", FAKE, "--trace", str(trace), "--mlperf", "--target-latency",
                "100", "--output", str(out))  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    checks = {c["name"]: c["passed"] for c in _result(out)["verdict"]["checks"]}
    assert not checks["min duration"]


def test_trace_speedup_window_and_gap_cap_reach_the_schedule(tmp_path: Path):
    trace = tmp_path / "t.csv"
    times = [0, 100, 200, 5000, 5100, 9000]
    trace.write_text("time_ms\n" + "\n".join(map(str, times)) + "\n")
    out = tmp_path / "sped"
    done = _cli("server", "--url", FAKE, "--trace", str(trace), "--speedup", "2", "--max-gap",
                "0.5", "--trace-end", "8", "--records", "--output", str(out))  # fmt: skip
    assert done.returncode in (0, 3, 5), done.stderr
    ms = 1_000_000
    assert _result(out)["records"]["columns"]["scheduled_ns"] == [
        0, 50 * ms, 100 * ms, 600 * ms, 650 * ms
    ]  # fmt: skip


MISSING = "/nonexistent/trace.csv"
BAD = [
    (["--arrival", "weibull"], "--arrival"),
    (["--arrival", "gamma:nan"], "--arrival"),
    (["--arrival", "gamma:inf"], "--arrival"),
    (["--arrival", "gamma:1e300"], "--arrival"),
    (["--arrival", "gamma:-1"], "--arrival"),
    (["--arrival", "constant:2"], "--arrival"),
    (["--stages", "10:100"], "--stages"),
    (["--stages", "1s:nan"], "--stages"),
    (["--stages", "1s:-5"], "--stages"),
    (["--stages", "1s:1e300"], "--stages"),
    (["--stages", ""], "--stages"),
    (["--stages", "1s:10", "--qps", "5"], "--qps"),
    (["--stages", "1s:10", "--duration", "5"], "--duration"),
    (["--stages", "1s:10", "--trace", MISSING], "--stages"),
    (["--trace", MISSING, "--qps", "5"], "--qps"),
    (["--trace", MISSING, "--arrival", "gamma:2"], "--arrival"),
    (["--trace", MISSING, "--speedup", "0"], "--speedup"),
    (["--trace", MISSING, "--speedup", "1e300"], "--speedup"),
    (["--trace", MISSING, "--speedup", "nan"], "--speedup"),
    (["--trace", MISSING, "--max-gap", "-1"], "--max-gap"),
    (["--trace", MISSING, "--max-gap", "0"], "--max-gap"),
    (["--trace", MISSING, "--trace-start", "inf"], "--trace-start"),
    (["--trace", MISSING, "--trace-end", "1e300"], "--trace-end"),
    (["--trace", MISSING, "--trace-start", "5", "--trace-end", "2"], "--trace-end"),
    (["--trace", MISSING, "--trace-format", "parquet"], "--trace-format"),
    (["--trace", MISSING, "--trace-unit", "fortnight"], "--trace-unit"),
    (["--speedup", "2"], "--speedup"),
]


@pytest.mark.parametrize(("args", "flag"), BAD, ids=[" ".join(r[0]) for r in BAD])
def test_bad_arrival_flags_are_one_usage_line(args: list[str], flag: str):
    result = CliRunner().invoke(app, ["server", "--url", FAKE, *args])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"Invalid value for '{flag}'" in result.output, result.output


@pytest.mark.parametrize("command", ["find-peak", "sweep", "compare"])
def test_searches_take_the_law_and_refuse_bad_ones(command: str):
    result = CliRunner().invoke(app, [command, "--url", FAKE, "--arrival", "gamma:0"])
    assert result.exit_code == 2 and "Invalid value for '--arrival'" in result.output
    # each plays a shape at the rates it sets (its speed-up); two shapes contradict
    both = ["--stages", "1s:10", "--trace", MISSING]
    refused = CliRunner().invoke(app, [command, "--url", FAKE, *both])
    assert refused.exit_code == 2 and "Invalid value for '--stages'" in refused.output


def test_find_peak_refuses_a_shape_beside_a_mix(tmp_path: Path):
    mix = tmp_path / "mix.toml"
    mix.write_text('[[model]]\nmodel = "tiny"\nqps = 10\nbound_ms = 10\n')
    result = CliRunner().invoke(app, ["find-peak", "--mix", str(mix), "--stages", "1s:10"])
    assert result.exit_code == 2 and "Invalid value for '--stages'" in result.output


def test_a_missing_trace_is_one_error_line_and_nothing_runs(tmp_path: Path):
    done = _cli("server", "--url", FAKE, "--trace", str(tmp_path / "none.csv"), "--output",
                str(tmp_path / "out"))  # fmt: skip
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no such trace file" in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_find_peak_records_its_law(tmp_path: Path):
    out = tmp_path / "peak"
    done = _cli("find-peak", "--url", FAKE, "--arrival", "constant", "--budget", "4",
                "--probe-duration", "1", "--start-qps", "100", "--target-latency", "50",
                "--output", str(out))  # fmt: skip
    assert done.returncode in (0, 3, 5), done.stderr
    data = json.loads((out / "find-peak.json").read_text())
    assert data["settings"]["arrival_law"] == {"name": "constant"}
    assert "constant-gap arrivals" in done.stderr


def test_a_mix_entry_takes_its_own_law_and_refuses_a_bad_one():
    from loadtest.core.arrivals import POISSON, Gamma
    from loadtest.errors import SettingsError
    from loadtest.scenarios.experiments.mix_spec import MixDefaults, build_mix

    def build(*tables: dict[str, Any]) -> Any:
        return build_mix({"model": list(tables)}, [], MixDefaults(), "MIX.toml")

    spec = build(
        {"model": "tiny", "qps": 10, "bound_ms": 10, "arrival": "gamma:2"},
        {"name": "other", "model": "tiny", "qps": 10, "bound_ms": 10},
    )
    laws = [entry.settings.arrival_law for entry in spec.entries]
    assert laws == [Gamma(2.0), POISSON]
    with pytest.raises(SettingsError, match="mix entry 'tiny': unknown arrival law"):
        build({"model": "tiny", "qps": 10, "bound_ms": 10, "arrival": "weibull"})
    with pytest.raises(SettingsError, match="Offline entry has no arrival law"):
        build({"model": "tiny", "scenario": "Offline", "arrival": "constant"})


# --- find-peak over a shape: the search is over its speed-up -----------------------------------


def test_a_peak_probe_plays_a_trace_sped_up_to_its_rate_and_whole():
    import numpy as np

    from loadtest.core.arrivals import Timestamps
    from loadtest.core.settings import PeakSettings
    from loadtest.core.trace import TraceRows
    from loadtest.scenarios.searches.peak_run import probe_seconds

    s = 1_000_000_000
    trace = Timestamps(np.array([0, s, 2 * s, 3 * s]), rows=TraceRows(np.arange(4)), source="t")
    assert trace.mean_qps == pytest.approx(4 / 3)
    settings = PeakSettings(target_latency_ns=10**7, arrival_law=trace)
    assert settings.shaped
    probe = settings.probe(8 / 3, 500)
    law = probe.arrival_law
    assert isinstance(law, Timestamps)
    assert law.times_ns.tolist() == [0, s // 2, s, 3 * s // 2]
    assert law.rows is not None and law.rows.index.tolist() == [0, 1, 2, 3]
    assert (probe.min_duration_ns, probe.min_query_count) == (1, 1)
    assert probe_seconds(settings, 8 / 3) == pytest.approx(1.5)
    assert settings.probe(4 / 3, 500).arrival_law is trace  # ×1 plays it untouched


def test_a_peak_probe_over_stages_scales_their_rates_not_their_durations():
    from loadtest.core.arrivals import POISSON
    from loadtest.core.settings import PeakSettings
    from loadtest.core.stages import Staged, StagedArrivals, parse_stages
    from loadtest.scenarios.searches.peak_run import probe_seconds

    staged = Staged(POISSON, parse_stages("2s:100,3s:200"))  # mean 160
    settings = PeakSettings(target_latency_ns=10**7, arrival_law=staged)
    arrivals = settings.probe(320, 500).arrivals
    assert isinstance(arrivals, StagedArrivals) and arrivals.factor == pytest.approx(2)
    assert arrivals.profile.spec() == "2s:200,3s:400"
    assert probe_seconds(settings, 320) == probe_seconds(settings, 40) == 5


def test_find_peak_over_stages_judges_each_probe_by_every_stage(tmp_path: Path):
    """One server of 10 ms carries 100 QPS: at ×1 the 200 QPS stage queues up and misses."""
    out = tmp_path / "peak"
    one = "fake://?servers=1&service_ms=10&law=constant"
    done = _cli("find-peak", "--url", one, "--stages", "2s:20,2s:200", "--start-qps", "110",
                "--budget", "10", "--target-latency", "50", "--output", str(out))  # fmt: skip
    assert done.returncode in (0, 3), done.stdout + done.stderr
    data = json.loads((out / "find-peak.json").read_text())
    assert data["shape"]["mean_qps"] == pytest.approx(110)
    first = data["probes"][0]
    assert first["qps"] == pytest.approx(110)
    assert 0.75 * 440 < first["queries"] < 1.25 * 440  # the whole 4 s profile, not 10 s
    assert any("stage 2 (2s:200)" in reason for reason in first["reasons"]), first["reasons"]
    # each probe names its stages: the 20 QPS stage met the bound, the 200 QPS one did not
    assert [s["spec"] for s in first["stages"]] == ["2s:20", "2s:200"]
    assert first["stages_missed"] == [2] and first["stages"][0]["met"]
    assert first["stages"][1]["latency_ns"] is None or first["stages"][1]["latency_ns"] > 50e6
    said = " ".join(done.stdout.split())
    assert "stage 2: 200.0 |" in said and "missed | 2s:200" in said, said
    if data["peak_qps"] is not None:
        assert data["shape"]["peak_speedup"] == pytest.approx(data["peak_qps"] / 110)


def test_plan_from_a_peak_over_a_shape_says_so(tmp_path: Path):
    from test_plan import _peak_file

    path = _peak_file(tmp_path, 300.0)
    data = json.loads(path.read_text())
    data["shape"] = {"mean_qps": 200.0, "peak_speedup": 1.5}
    path.write_text(json.dumps(data))
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.cli", "plan", "--target-qps", "900", "--from", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    said = " ".join((done.stdout + done.stderr).split())
    assert "largest VALID speed-up (×1.5 of 200 QPS)" in said, said


def test_workers_keep_each_querys_trace_row_through_ties(tmp_path: Path):
    """Rows due at the same time, dealt to two workers and merged: each record's trace index
    still names its own row (its time and its sample)."""
    trace = tmp_path / "ties.csv"
    rows = [(10 * (i // 3), i % 7) for i in range(240)]  # three rows per 10 ms instant
    trace.write_text("time_ms,sample\n" + "".join(f"{t},{s}\n" for t, s in rows))
    out = tmp_path / "run"
    done = _cli("server", "--url", FAKE, "--trace", str(trace), "--workers", "2", "--records",
                "--samples", "8", "--output", str(out))  # fmt: skip
    assert done.returncode in (0, 3, 5), done.stdout + done.stderr
    data = _result(out)
    assert data["client"]["worker_count"] == 2
    columns = data["records"]["columns"]
    index = columns["trace_index"]
    assert sorted(index) == list(range(len(rows)))
    ms = 1_000_000
    assert [rows[i][0] * ms for i in index] == columns["scheduled_ns"]
    assert [rows[i][1] for i in index] == columns["sample_index"]


def test_the_cli_replays_a_loadgen_trace_with_its_gaps_and_samples(tmp_path: Path):
    from test_traces import LOADGEN_TRACE, _loadgen_schedule

    ts_ns, samples = _loadgen_schedule(LOADGEN_TRACE)
    out = tmp_path / "loadgen"
    done = _cli("server", "--url", FAKE, "--trace", str(LOADGEN_TRACE), "--samples", "16",
                "--records", "--target-latency", "50", "--output", str(out))  # fmt: skip
    assert done.returncode in (0, 3, 5), done.stdout + done.stderr
    columns = _result(out)["records"]["columns"]
    assert columns["scheduled_ns"] == (ts_ns - ts_ns[0]).tolist()  # to the nanosecond
    assert columns["sample_index"] == samples.tolist()
    assert columns["trace_index"] == list(range(len(ts_ns)))
    assert "LoadGen trace mlperf_log_trace.json: 40 queries" in done.stderr + done.stdout


# --- compare over a shape: every target plays the same shaped schedule at each rate -----------


def test_compare_plays_the_same_stages_on_every_target_and_judges_each_stage(tmp_path: Path):
    """One 10 ms server carries 100 QPS. --qps is the profile's mean: at 90 its 1:5 stages are
    30 and 150 QPS, and the second queues up and misses on both targets, which played the same
    schedule (the same queries due in each stage)."""
    out = tmp_path / "cmp"
    one = "fake://?servers=1&service_ms=10&law=constant"
    done = _cli("compare", "-t", "triton-grpc", "-t", "triton-http", "--url", one,
                "--qps", "40", "--qps", "90", "--stages", "1s:20,1s:100",
                "--target-latency", "100", "--percentile", "90", "--output", str(out))  # fmt: skip
    assert done.returncode in (0, 3, 5), done.stdout + done.stderr
    rows = json.loads((out / "compare.json").read_text())["rows"]
    assert [(r["target"], r["qps"]) for r in rows] == [
        ("triton-grpc", 40), ("triton-http", 40), ("triton-grpc", 90), ("triton-http", 90),
    ]  # fmt: skip
    for grpc, http in (rows[0:2], rows[2:4]):
        assert [s["scheduled"] for s in grpc["stages"]] == [s["scheduled"] for s in http["stages"]]
        low, high = grpc["stages"]
        assert high["offered_qps"] == pytest.approx(5 * low["offered_qps"])
        assert low["offered_qps"] + high["offered_qps"] == pytest.approx(2 * grpc["qps"])
    for row in rows[2:4]:
        assert row["stages_missed"] == [2] and not row["valid"], row["stages"]
    assert "stage 2 missed" in " ".join(done.stdout.split())


def test_compare_speeds_a_trace_up_to_each_rate_and_plays_it_whole(tmp_path: Path):
    trace = tmp_path / "t.csv"
    trace.write_text("time_ms\n" + "".join(f"{10 * i}\n" for i in range(21)))  # 100 QPS mean
    out = tmp_path / "cmp"
    done = _cli("compare", "-t", "triton-grpc", "--url", FAKE, "--qps", "400", "--trace",
                str(trace), "--target-latency", "100", "--output", str(out))  # fmt: skip
    assert done.returncode in (0, 3, 5), done.stdout + done.stderr
    (row,) = json.loads((out / "compare.json").read_text())["rows"]
    assert row["qps"] == 400 and row["summary"]["scheduled"] == 21  # every row, none more
    assert row["run"]["duration_ns"] < 0.5e9 + 0.2e9  # 200 ms at ×1, 50 ms at ×4 (+ the drain)


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--stages", "1s:10", "--duration", "5"], "--duration"),
        (["--stages", "1s:10", "--min-queries", "5"], "--min-queries"),
    ],
)
def test_compare_refuses_a_run_length_beside_a_shape(args: list[str], flag: str):
    result = CliRunner().invoke(
        app, ["compare", "-t", "triton", "--url", FAKE, "--qps", "5", *args]
    )
    assert result.exit_code == 2 and f"Invalid value for '{flag}'" in result.output, result.output
