"""report / export / diff end to end through the CLI, and bad input as one clear line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from synthetic_results import compare_json, find_peak_json, run_json, synthetic_records, write
from test_cli import assert_one_clear_error, expected_exit_code, loadtest

from loadtest.core.records import Records
from loadtest.report.csv_export import read_records_csv


def runs(tmp_path: Path) -> tuple[Path, Path, Path]:
    a = write(tmp_path / "a" / "result.json", run_json(synthetic_records(n=4000, seed=1)))
    same = write(tmp_path / "same" / "result.json", run_json(synthetic_records(n=4000, seed=2)))
    slow = write(
        tmp_path / "slow" / "result.json", run_json(synthetic_records(n=4000, scale=1.3, seed=3))
    )
    return a, same, slow


def test_report_writes_one_html_file(tmp_path: Path):
    a, _, slow = runs(tmp_path)
    peak = write(tmp_path / "peak.json", find_peak_json())
    out = tmp_path / "out" / "report.html"
    result = loadtest("report", str(a), str(slow), str(peak), "-o", str(out))
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    assert 'data-figure="fig-hdr"' in page and 'data-figure="fig-peak-2"' in page
    assert "Run: a" in page and "Run: slow" in page


def test_diff_exit_codes(tmp_path: Path):
    a, same, slow = runs(tmp_path)
    quiet = loadtest("diff", str(a), str(same))
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert "no significant regression" in quiet.stdout and "bootstrap" in quiet.stdout
    worse = loadtest("diff", str(a), str(slow))
    assert worse.returncode == 3, worse.stdout + worse.stderr
    assert "REGRESSION" in worse.stdout and "p99" in worse.stdout
    lenient = loadtest("diff", str(a), str(slow), "--min-effect", "50")
    assert lenient.returncode == 0


def test_diff_of_two_models_says_the_models_differ(tmp_path: Path):
    a, _, slow = runs(tmp_path)
    other = json.loads(slow.read_text())
    other["model"]["name"] = "resnet50"
    b = write(tmp_path / "other" / "result.json", other)
    result = loadtest("diff", str(a), str(b))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "different models" in result.stdout
    assert "REGRESSION (B worse than A — of different models, tiny and resnet50)" in result.stdout


def test_export_writes_csv_without_being_asked_for_it(tmp_path: Path):
    source = write(tmp_path / "run" / "result.json", run_json(synthetic_records(n=50)))
    result = loadtest("export", str(source))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "records.csv").exists()


def test_diff_without_records_says_it_uses_the_weaker_rule(tmp_path: Path):
    a = write(tmp_path / "a.json", run_json(synthetic_records(seed=1), keep_records=False))
    b = write(tmp_path / "b.json", run_json(synthetic_records(seed=2), keep_records=False))
    result = loadtest("diff", str(a), str(b))
    assert result.returncode == 0, result.stderr
    assert "no per-query records" in result.stdout and "weaker rule" in result.stdout


def test_export_csv_round_trip(tmp_path: Path):
    records = synthetic_records(n=800, errors=3)
    source = write(tmp_path / "run" / "result.json", run_json(records))
    result = loadtest("export", str(source), "--csv", "-o", str(tmp_path / "csv"))
    assert result.returncode == 0, result.stderr
    back = read_records_csv((tmp_path / "csv" / "records.csv").read_text())
    columns = json.loads(source.read_text())["records"]
    original = Records.from_columns(columns["columns"], columns["error_kinds"])
    for name in ("scheduled_ns", "sample_index", "issued_ns", "completed_ns", "status"):
        assert np.array_equal(getattr(back, name), getattr(original, name))
    summary = dict(csv.reader((tmp_path / "csv" / "summary.csv").open()))
    assert summary["completed_ok"] == str(original.ok.sum())


def test_export_without_records_writes_summary_and_timeline_only(tmp_path: Path):
    data = run_json(synthetic_records(), keep_records=False, with_timeline=True)
    source = write(tmp_path / "run" / "result.json", data)
    result = loadtest("export", str(source), "--csv")
    assert result.returncode == 0, result.stderr
    assert "summary only" in result.stdout
    assert (tmp_path / "run" / "summary.csv").exists()
    rows = list(csv.DictReader((tmp_path / "run" / "timeline.csv").open()))
    assert [int(r["completed"]) for r in rows] == data["timeline"]["completed"]
    assert not (tmp_path / "run" / "records.csv").exists()


def test_bad_input_is_one_clear_line(tmp_path: Path):
    good = write(tmp_path / "good.json", run_json(synthetic_records(n=200)))
    newer = write(
        tmp_path / "newer.json", {**run_json(synthetic_records(n=10)), "schema_version": 2}
    )
    truncated = tmp_path / "truncated.json"
    truncated.write_text(good.read_text()[:500])
    foreign = write(tmp_path / "foreign.json", {"name": "not ours", "values": [1, 2]})
    offline = write(
        tmp_path / "offline.json", run_json(synthetic_records(n=200), scenario="Offline")
    )
    cases = [
        (("report", str(newer), "-o", str(tmp_path / "r.html")), "schema_version 2"),
        (("report", str(truncated), "-o", str(tmp_path / "r.html")), "not valid JSON"),
        (("report", str(foreign), "-o", str(tmp_path / "r.html")), "not a loadtest result"),
        (("report", str(tmp_path / "missing.json")), "no such file"),
        (("diff", str(good), str(offline)), "one scenario"),
        (("diff", str(good), str(truncated)), "not valid JSON"),
        (("export", str(newer), "--csv"), "schema_version 2"),
    ]
    for args, text in cases:
        assert_one_clear_error(loadtest(*args), text)
    peak = write(tmp_path / "peak.json", find_peak_json())
    assert_one_clear_error(loadtest("diff", str(peak), str(good)), "diff compares two runs")
    cmp = write(tmp_path / "cmp.json", compare_json())
    assert_one_clear_error(loadtest("export", str(cmp), "--csv"), "one run's result.json")


def test_server_html_flag(tmp_path: Path):
    html = tmp_path / "report.html"
    result = loadtest(
        "server",
        "--url",
        "fake://?servers=4&service_ms=1",
        "--qps",
        "100",
        "--duration",
        "1",
        "--target-latency",
        "50",
        "--late-threshold",
        "20",
        "--records",
        "--no-live",
        "--output",
        str(tmp_path / "run"),
        "--html",
        str(html),
    )
    data = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result.returncode == expected_exit_code(data), result.stderr
    page = html.read_text()
    assert 'data-figure="fig-timeline"' in page and "Run: run" in page
