"""A streamed run's token figures in the HTML report and the CSV export (issue #28, deliverable 7).

The CSV is held to exact values on hand-made records whose answers are known row by row (a
several-token response, a one-token answer, a failure mid-stream, a query never sent, a server
that sends no count), and to the same arithmetic as rules/tokens.py on seeded ones. The HTML is
checked for its figures and their captions (fast, no browser; tests/test_report_browser.py draws
them in Chromium), and for the numbers the figures are drawn from. One short run on the fake
target goes through the real writer, `report` and `export` end to end.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
from synthetic_results import run_json, streamed_records, streamed_run_json, synthetic_records
from typer.testing import CliRunner

from loadtest.cli import app
from loadtest.core.records import NO_COUNT, Records, Status
from loadtest.core.units import NS_PER_MS
from loadtest.report.csv_export import (
    RECORD_COLUMNS,
    TOKEN_COLUMNS,
    read_records_csv,
    records_csv,
    summary_csv,
)
from loadtest.report.curves import (
    FROM_HISTOGRAM,
    FROM_RECORDS,
    FROM_SUMMARY,
    from_latencies,
    values_at_percentiles,
)
from loadtest.report.figures import RunSeries
from loadtest.report.html import render_html
from loadtest.report.resultfile import from_data
from loadtest.report.token_figures import tokens_per_second_figure
from loadtest.report.token_series import CREDITED_AT_COMPLETION, token_series, tokens_per_second
from loadtest.rules.stats import (
    decode_histograms,
    encode_histogram,
    exact_percentile,
    latency_histogram,
)
from loadtest.rules.tokens import RESPONSE_COUNT, SERVER_COUNT, TTFT_ORIGIN, per_query

MS = NS_PER_MS
TOKEN_FIGURES = ["fig-ttft", "fig-tpot", "fig-itl", "fig-chunks", "fig-tokens-per-s"]


def figure_ids(page: str) -> list[str]:
    return re.findall(r'<div class="figure" data-figure="([^"]+)"', page)


def _known_answers() -> Records:
    """Five queries whose every token column is known (times in ms from the first due time)."""
    records = Records(
        scheduled_ns=np.arange(5, dtype=np.int64) * 100 * MS,
        sample_index=np.arange(5, dtype=np.int32),
    )
    rows = (  # issued, first response, completed, responses, server count, status
        (1 * MS, 51 * MS, 141 * MS, 10, 10, Status.OK),  # 10 tokens, one per response
        (102 * MS, 130 * MS, 190 * MS + 1, 3, 7, Status.OK),  # 7 tokens in 3 responses
        (200 * MS + 500, 260 * MS, 260 * MS, 1, 1, Status.OK),  # one token: no TPOT
        (300 * MS, 320 * MS, 335 * MS, 2, NO_COUNT, Status.ERROR),  # failed after 2 responses
    )
    for i, (issued, first, completed, parts, count, status) in enumerate(rows):
        records.issued_ns[i], records.first_part_ns[i] = issued, first
        records.completed_ns[i], records.parts[i], records.final_count[i] = completed, parts, count
        records.status[i] = status
    records.error_code[3] = records.error_code_for("http stream: boom")
    return records  # query 4 was never sent


def test_records_csv_gives_each_streamed_query_its_known_token_columns():
    lines = records_csv(_known_answers()).splitlines()
    assert lines[0].split(",") == [*RECORD_COLUMNS, *TOKEN_COLUMNS]
    assert lines[1:] == [
        # first_part_ns, ttft_ns, ttft_from_send_ns, parts, final_count, tokens, tpot_ns last
        "0,0,0,1000000,141000000,ok,,141000000,1000000,"
        "51000000,51000000,50000000,10,10,10,10000000",  # (141 − 51) / 9
        "1,1,100000000,102000000,190000001,ok,,90000001,2000000,"
        "130000000,30000000,28000000,3,7,7,10000000",  # (60 ms + 1 ns) // 6, floored
        "2,2,200000000,200000500,260000000,ok,,60000000,500,"
        "260000000,60000000,59999500,1,1,1,",  # one token: no TPOT
        "3,3,300000000,300000000,335000000,error,http stream: boom,35000000,0,"
        "320000000,20000000,20000000,2,,,",  # failed: TTFT kept, no count, no TPOT
        "4,4,400000000,,,pending,,,,,,,0,,,",
    ]


def test_tokens_are_the_response_count_where_the_server_sends_none():
    records = Records(scheduled_ns=np.array([0, 50 * MS]), sample_index=np.zeros(2, np.int32))
    records.issued_ns[:] = [0, 50 * MS]
    records.first_part_ns[:] = [10 * MS, 70 * MS]
    records.completed_ns[:] = [50 * MS, 94 * MS]
    records.parts[:] = [5, 4]
    records.status[:] = Status.OK
    rows = list(csv.DictReader(io.StringIO(records_csv(records))))
    assert [(r["final_count"], r["tokens"], r["tpot_ns"]) for r in rows] == [
        ("", "5", str(10 * MS)),  # 40 ms over 4 gaps
        ("", "4", str(8 * MS)),  # 24 ms over 3
    ]
    data = streamed_run_json(records, "")
    summary = dict(csv.reader(io.StringIO(summary_csv(data))))
    assert summary["tokens.token_source"] == RESPONSE_COUNT
    assert summary["tokens.itl"] == ""  # no gap histogram: null in result.json, empty here


def test_streamed_records_csv_round_trips_exactly():
    records = _known_answers()
    text = records_csv(records)
    back = read_records_csv(text)
    for column in ("first_part_ns", "parts", "final_count", "status", "completed_ns"):
        assert np.array_equal(getattr(back, column), getattr(records, column)), column
    assert records_csv(back) == text


def test_the_csv_token_columns_are_the_figures_own_per_query_values():
    records, gaps = streamed_records(n=500, seed=3, per_response=3)
    records.status[7] = Status.ERROR  # a failure: in the CSV, out of the figures
    records.error_code[7] = records.error_code_for("boom")
    rows = list(csv.DictReader(io.StringIO(records_csv(records))))
    q = per_query(records)
    tpot = np.array([int(r["tpot_ns"]) for r in rows if r["tpot_ns"]])
    assert np.array_equal(np.sort(tpot), np.sort(q.tpot))
    ok = [r for r in rows if r["status"] == "ok"]
    assert np.array_equal([int(r["ttft_ns"]) for r in ok], q.ttft)
    assert np.array_equal([int(r["ttft_from_send_ns"]) for r in ok], q.ttft_from_send)
    assert rows[7]["tokens"] == "" and rows[7]["ttft_ns"] != ""
    data = streamed_run_json(records, gaps)
    summary = dict(csv.reader(io.StringIO(summary_csv(data))))
    assert int(summary["tokens.tpot.p99_ns"]) == exact_percentile(np.sort(tpot), 0.99)
    assert int(summary["tokens.ttft.p50_ns"]) == data["tokens"]["ttft"]["p50_ns"]
    assert int(summary["tokens.itl.count"]) == data["tokens"]["itl"]["count"] > 0
    assert summary["tokens.token_source"] == SERVER_COUNT
    assert summary["tokens.origins.ttft"] == TTFT_ORIGIN


def test_a_run_that_did_not_stream_exports_as_before():
    records = synthetic_records(n=50)
    assert records_csv(records).splitlines()[0].split(",") == list(RECORD_COLUMNS)
    assert not any(k.startswith("tokens") for k, _ in csv.reader(io.StringIO(summary_csv(
        run_json(records)))))  # fmt: skip


def test_tokens_per_second_credits_each_query_at_its_completion():
    records = Records(scheduled_ns=np.zeros(4, np.int64), sample_index=np.zeros(4, np.int32))
    records.issued_ns[:] = 0
    records.first_part_ns[:] = [100 * MS, 200 * MS, 300 * MS, 400 * MS]
    records.completed_ns[:] = [500 * MS, 900 * MS, 2200 * MS, 1500 * MS]
    records.parts[:] = records.final_count[:] = [10, 7, 3, 50]
    records.status[:] = [Status.OK, Status.OK, Status.OK, Status.ERROR]  # the 50 never count
    series = tokens_per_second(records)
    assert series.tokens.tolist() == [17, 0, 3] and series.centres_s.tolist() == [0.5, 1.5, 2.5]
    half = tokens_per_second(records, bucket_ns=500 * MS)
    assert half.tokens.tolist() == [0, 17, 0, 0, 3] and half.per_s.tolist() == [0, 34, 0, 0, 6]


def test_a_streamed_run_report_has_its_token_figures_with_origins():
    records, gaps = streamed_records(n=300, seed=1, per_response=2)
    data = streamed_run_json(records, gaps)
    page = render_html([from_data(data, "llm")])
    assert figure_ids(page) == ["fig-hdr", "fig-cdf", "fig-timeline", *TOKEN_FIGURES]
    for caption in (TTFT_ORIGIN, "from the actual send", CREDITED_AT_COMPLETION,
                    "exact from per-query records", "from the HDR histogram"):  # fmt: skip
        assert json.dumps(caption)[1:-1] in page, caption  # in a figure's JSON-escaped title
    assert "<h3>Tokens</h3>" in page and "TTFT from scheduled" in page
    assert f"{data['tokens']['tokens']:,} over 300 streamed queries" in page
    # What the figures are drawn from: the exact per-query values, through the summary's points.
    series = token_series(from_data(data, "llm"))
    assert series is not None and series.tokens_per_s is not None
    assert series.ttft.source == series.tpot.source == FROM_RECORDS
    assert series.itl is not None and series.itl.source == FROM_HISTOGRAM
    tpot = dict(zip(series.tpot.percentile.tolist(), series.tpot.latency_ns.tolist(), strict=True))
    assert tpot[0.99] == data["tokens"]["tpot"]["p99_ns"]
    assert series.tokens_per_s.tokens.sum() == data["tokens"]["tokens"]
    assert np.array_equal(series.tokens_per_response, records.final_count / records.parts)
    style = RunSeries("llm", 0, from_latencies(np.zeros(0)), None, True)
    drawn = tokens_per_second_figure([(style, series)]).data
    assert np.array_equal(drawn[0].y, series.tokens_per_s.per_s)
    assert drawn[1].y[0] == data["tokens"]["completed_tokens_per_s"]  # LoadGen's, dashed


def test_without_records_the_report_says_what_it_drew_from():
    records, gaps = streamed_records(n=200, seed=2)
    data = streamed_run_json(records, gaps, keep_records=False)
    page = render_html([from_data(data, "plain")])
    assert figure_ids(page) == ["fig-hdr", "fig-cdf", "fig-ttft", "fig-tpot", "fig-itl"]
    assert "need per-query records (--records), not in plain" in page
    series = token_series(from_data(data, "plain"))
    assert series is not None
    assert series.ttft.source == FROM_HISTOGRAM and series.tpot.source == FROM_SUMMARY
    del data["client"]  # as a single-stream run: no merged gap histogram, ITL from the summary
    data["tokens"]["itl"] = None
    page = render_html([from_data(data, "single")])
    assert "fig-itl" not in figure_ids(page) and "No ITL for single" in page


def test_a_streamed_run_on_the_fake_target_reports_and_exports_its_tokens(tmp_path: Path):
    # Every answer: first part 30 ms after the send, 5 more 5 ms apart, 6 tokens counted.
    url = "fake://?servers=64&law=constant&service_ms=30&parts=6&part_ms=5"
    run, page = tmp_path / "run", tmp_path / "report.html"
    done = CliRunner().invoke(app, [
        "server", "--url", url, "--qps", "50", "--duration", "0.4", "--min-queries", "20",
        "--target-latency", "500", "--records", "--output", str(run), "--html", str(page),
        "--no-live"])  # fmt: skip
    assert done.exit_code == 3, done.output  # INVALID: too short for early stopping
    assert figure_ids(page.read_text())[-5:] == TOKEN_FIGURES
    exported = CliRunner().invoke(app, ["export", str(run / "result.json")])
    assert exported.exit_code == 0 and "token columns" in exported.output, exported.output
    tokens = json.loads((run / "result.json").read_text())["tokens"]
    rows = list(csv.DictReader(io.StringIO((run / "records.csv").read_text())))
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == tokens["queries"] >= 20
    assert {(r["parts"], r["final_count"], r["tokens"]) for r in ok} == {("6", "6", "6")}
    for name, column in (("ttft", "ttft_ns"), ("tpot", "tpot_ns")):
        values = np.sort([int(r[column]) for r in ok])
        for p, key in ((0.5, "p50_ns"), (0.99, "p99_ns")):
            assert exact_percentile(values, p) == tokens[name][key], (name, key)
    assert all(30 * MS <= int(r["ttft_from_send_ns"]) <= int(r["ttft_ns"]) for r in ok)


def test_histogram_curves_read_the_same_values_as_hdrh_in_one_pass():
    # The ITL curve is always read off its histogram: values_at_percentiles must be hdrh's own
    # get_value_at_percentile, point for point (p = 0 takes the lowest equivalent value).
    rng = np.random.default_rng(4)
    gaps = rng.lognormal(np.log(8 * MS), 1.0, 20_000).astype(np.int64)
    histogram = decode_histograms([encode_histogram(latency_histogram(gaps))])
    percentiles = np.concatenate(([0.0, 0.001, 50.0, 99.0, 99.99, 100.0], rng.uniform(0, 100, 300)))
    expected = [histogram.get_value_at_percentile(float(p)) for p in percentiles]
    assert values_at_percentiles(histogram, percentiles).tolist() == expected


def test_a_malformed_tokens_object_still_renders():
    # Result files are read tolerantly: a figure that is not what it should be shows as "—".
    records, gaps = streamed_records(n=50, seed=5)
    data = streamed_run_json(records, gaps, keep_records=False)
    data["tokens"].update(
        ttft="?", tpot=[1], itl={"count": "many"}, bounds={"percentile": "x", "ttft_ns": 5}
    )
    data["client"]["hdr"]["part_gap"] = "not a histogram"
    page = render_html([from_data(data, "odd")])
    assert figure_ids(page) == ["fig-hdr", "fig-cdf", "fig-ttft", "fig-tpot"]
    assert "p99 TTFT ≤ 0.000 ms" in page and "No ITL for odd" in page
