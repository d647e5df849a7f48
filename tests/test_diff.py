"""diff.py: the order-statistic bootstrap matches a plain bootstrap; noise is not a regression, a
real 30 % shift is; the weaker no-records rule; validity flips; scenario mismatch."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_results import synthetic_records

from loadtest.analysis import diff
from loadtest.rules.stats import summarize


def side(label: str, scale: float, seed: int, records: bool = True, n: int = 4000) -> diff.RunSide:
    recs = synthetic_records(n=n, scale=scale, seed=seed)
    summary = summarize(recs).to_dict()
    return diff.RunSide(
        label=label,
        scenario="Server",
        summary=summary,
        valid=True,
        latencies_ns=recs.latency_from_scheduled_ns() if records else None,
        offered_qps=500.0,
    )


def test_order_statistic_bootstrap_matches_plain_resampling():
    rng = np.random.default_rng(3)
    values = np.sort(rng.lognormal(0, 1, 400))
    fast = diff.bootstrap_percentile(values, 0.99, 20000, np.random.default_rng(1))
    k = diff.order_statistic_rank(len(values), 0.99) - 1
    plain = np.sort(
        values[np.random.default_rng(2).integers(0, len(values), (4000, len(values)))], axis=1
    )[:, k]
    for q in (0.05, 0.25, 0.5, 0.75, 0.95):
        assert np.quantile(fast, q) == pytest.approx(np.quantile(plain, q), rel=0.03)


def test_bootstrap_is_seeded():
    a, b = side("a", 1.0, 1), side("b", 1.0, 2)
    assert a.latencies_ns is not None and b.latencies_ns is not None
    first = diff.percentile_difference_interval(a.latencies_ns, b.latencies_ns, 0.99, seed=7)
    again = diff.percentile_difference_interval(a.latencies_ns, b.latencies_ns, 0.99, seed=7)
    assert first == again


def test_no_shift_is_not_significant():
    result = diff.diff_runs(side("a", 1.0, 1), side("b", 1.0, 2))
    assert result.method == diff.BOOTSTRAP
    assert not result.regressed
    p99 = next(c for c in result.changes if c.metric == "p99")
    assert p99.interval is not None and p99.interval.low < 0 < p99.interval.high
    assert diff.exit_code(result) == 0


def test_thirty_percent_shift_is_a_regression_and_the_reverse_an_improvement():
    worse = diff.diff_runs(side("a", 1.0, 1), side("b", 1.3, 2))
    judged = {c.metric: c.judgement for c in worse.changes}
    assert judged["p99"] == judged["p50"] == diff.REGRESSION
    assert worse.regressed and diff.exit_code(worse) == 3
    p99 = next(c for c in worse.changes if c.metric == "p99")
    assert p99.interval is not None and p99.interval.low > 0
    better = diff.diff_runs(side("a", 1.3, 1), side("b", 1.0, 2))
    assert not better.regressed
    assert {c.metric: c.judgement for c in better.changes}["p99"] == diff.IMPROVEMENT


def test_small_real_shift_below_min_effect_is_not_a_regression():
    # 3 % slower with 40 000 queries: significant statistically, but below the 5 % minimum effect.
    result = diff.diff_runs(side("a", 1.0, 1, n=40000), side("b", 1.03, 2, n=40000))
    p50 = next(c for c in result.changes if c.metric == "p50")
    assert p50.interval is not None and p50.interval.low > 0
    assert p50.judgement == diff.NO_CHANGE and not result.regressed


def test_without_records_the_weaker_threshold_rule_is_used_and_stated():
    small = diff.diff_runs(side("a", 1.0, 1, records=False), side("b", 1.07, 2))
    assert small.method == diff.THRESHOLD and "no per-query records in a" in small.method_text
    assert all(c.interval is None for c in small.changes)
    assert not small.regressed  # 7 % < 10 %
    big = diff.diff_runs(side("a", 1.0, 1, records=False), side("b", 1.3, 2, records=False))
    assert big.regressed


def test_validity_flip_is_a_regression():
    a, b = side("a", 1.0, 1), side("b", 1.0, 2)
    b = diff.RunSide(b.label, b.scenario, b.summary, False, b.latencies_ns, b.offered_qps)
    result = diff.diff_runs(a, b)
    assert result.validity is not None and result.validity.judgement == diff.REGRESSION
    assert result.regressed and "validity: VALID → INVALID" in diff.describe(result.regressions)


def test_different_scenarios_are_refused():
    a = side("a", 1.0, 1)
    b = diff.RunSide("b", "Offline", a.summary, True, a.latencies_ns)
    with pytest.raises(ValueError, match="one scenario"):
        diff.diff_runs(a, b)


def test_different_offered_loads_are_noted():
    a = side("a", 1.0, 1)
    b = side("b", 1.0, 2)
    b = diff.RunSide(b.label, b.scenario, b.summary, True, b.latencies_ns, offered_qps=800.0)
    assert any("different loads" in n for n in diff.diff_runs(a, b).notes)
