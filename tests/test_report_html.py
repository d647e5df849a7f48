"""The HTML report (no browser): self-contained, every section present, tolerant of missing parts.
tests/test_report_browser.py renders the same pages in headless Chromium."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from synthetic_results import compare_json, find_peak_json, run_json, synthetic_records

from loadtest.errors import ResultFileError
from loadtest.report import curves
from loadtest.report.figures import ORIGIN
from loadtest.report.html import render_html
from loadtest.report.resultfile import COMPARE, FIND_PEAK, RUN, from_data
from loadtest.rules.stats import exact_percentile


def figure_ids(page: str) -> list[str]:
    return re.findall(r'<div class="figure" data-figure="([^"]+)"', page)


def test_run_report_is_self_contained_with_all_plots():
    page = render_html([from_data(run_json(synthetic_records()), "a")])
    assert figure_ids(page) == ["fig-hdr", "fig-cdf", "fig-timeline"]
    assert page.count("<script") == page.count("</script>")
    assert not re.search(r"<script[^>]+src=", page)  # plotly.js inlined, no CDN
    assert not re.search(r"<link[^>]+href=\"?https?:", page)
    assert page.count("plotly.js v") <= 2  # the library once (its banner), not per figure
    assert json.dumps(ORIGIN)[1:-1] in page  # each figure's title (JSON-escaped) says the origin
    assert "sorted[floor(n·p)]" in page
    assert "✓" in page and "VALID" in page
    assert "not recorded in this run" in page  # no :8002 metrics in this run


def test_same_input_same_bytes():
    data = run_json(synthetic_records(n=500))
    assert render_html([from_data(data, "a")]) == render_html([from_data(data, "a")])


def test_client_bound_and_invalid_runs_are_flagged():
    records = synthetic_records(n=1000, errors=3)
    records.issued_ns[:] = records.scheduled_ns + 5_000_000  # everything 5 ms late
    page = render_html([from_data(run_json(records), "late")])
    assert "Client-bound run" in page and "client-bound" in page
    assert "INVALID" in page and "✗" in page and "What to do" in page


def test_run_without_records_uses_histogram_and_says_no_timeline():
    data = run_json(synthetic_records(), keep_records=False)
    page = render_html([from_data(data, "h")])
    assert figure_ids(page) == ["fig-hdr", "fig-cdf"]
    assert "HDR histogram" in page and "Timeline: not available" in page


def test_run_without_records_draws_the_timeline_it_wrote():
    records = synthetic_records(n=2000, errors=5)
    data = run_json(records, keep_records=False, with_timeline=True)
    page = render_html([from_data(json.loads(json.dumps(data)), "t")])
    assert figure_ids(page) == ["fig-hdr", "fig-cdf", "fig-timeline"]
    assert "Timeline: not available" not in page and "No timeline for" not in page


def test_find_peak_and_compare_sections():
    page = render_html(
        [
            from_data(find_peak_json(), "peak"),
            from_data(compare_json(), "cmp"),
            from_data(compare_json(with_split=False), "bare"),
        ]
    )
    assert figure_ids(page) == ["fig-peak-0", "fig-split-1"]
    assert "peak 700 QPS" in page and "SLO 50 ms" in page
    assert "triton-grpc @ 300 QPS" in page
    assert "Server-side latency split: not recorded" in page
    # Energy per inference, derived: 900 J / 9,000 inferences = 0.1 J, in the row's last cell.
    assert '<td class="num">900</td><td class="num">9,000</td><td class="num">0.1</td></tr>' in page


def test_metrics_are_shown_when_recorded():
    metrics = {"gpu_utilization": 0.5, "gpu_power_w": 200.0, "energy_j": 100.0}
    data = run_json(synthetic_records(n=1000), metrics=metrics)
    page = render_html([from_data(data, "m")])
    assert "gpu_power_w" in page and "energy_per_inference_j (derived)" in page
    assert "not recorded in this run" not in page


def test_kinds():
    assert from_data(run_json(synthetic_records(n=10)), "r").kind == RUN
    assert from_data(find_peak_json(), "p").kind == FIND_PEAK
    assert from_data(compare_json(), "c").kind == COMPARE
    with pytest.raises(ResultFileError, match="schema_version 2"):
        from_data({**find_peak_json(), "schema_version": 2}, "p")
    with pytest.raises(ResultFileError, match="not a loadtest result"):
        from_data({"hello": 1}, "x")


def test_curve_from_records_hits_the_loadgen_percentiles():
    values = np.random.default_rng(0).integers(1_000, 10_000_000, 5000)
    curve = curves.from_latencies(values)
    ordered = np.sort(values)
    for p in (0.5, 0.9, 0.99, 0.999):
        at = np.flatnonzero(np.isclose(curve.percentile, p))
        assert len(at) == 1 and curve.latency_ns[at[0]] == exact_percentile(ordered, p)
    assert curve.latency_ns[-1] == ordered[-1]


def test_histogram_curve_is_close_to_exact():
    data = run_json(synthetic_records(n=5000), keep_records=False)
    curve = curves.best_curve(data["summary"], None)
    assert curve.source == curves.FROM_HISTOGRAM and curve.count == 5000
    p99 = data["summary"]["latency"]["p99_ns"]
    at = np.searchsorted(curve.percentile, 0.99)
    assert curve.latency_ns[at] == pytest.approx(p99, rel=0.002)  # 3 significant figures


def test_percentile_ticks():
    values, labels = curves.percentile_ticks(2000)
    assert labels == ["0%", "50%", "90%", "99%", "99.9%"]
    assert values == [1.0, 2.0, 10.0, 100.0, 1000.0]
