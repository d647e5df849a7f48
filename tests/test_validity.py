"""validity.py: early stopping cross-checked independently, and every verdict path.

The independent reference is exact rational arithmetic on the binomial distribution (math.comb and
fractions.Fraction, no floating point, no scipy): odds(h, t) = P[X ≤ t] for X ~ Binomial(h + t,
1 − q) over-latency queries, q = p − d. That equals I_q(h, t + 1) because "at most t failures among
h + t trials" is "at least h successes among h + t", and P[Binomial(n, q) ≥ h] = I_q(h, n − h + 1).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import pytest

from loadtest.core.records import Records, Status
from loadtest.rules.stats import Summary, summarize
from loadtest.rules.validity import (
    CLIENT_KEPT_UP,
    EARLY_STOPPING,
    MIN_DURATION,
    MIN_QUERIES,
    NO_FAILURES,
    PERFORMANCE,
    REDUCE_QPS,
    RUN_COMPLETE,
    Verdict,
    early_stopping_min_passes,
    early_stopping_odds,
    judge_offline,
    judge_server,
    judge_single_stream,
    server_early_stopping,
    stream_early_stopping_estimate,
)

MS = 1_000_000
S = 1_000_000_000


# --- the independent reference -----------------------------------------------------------------


def exact_odds(h: int, t: int, q: Fraction) -> Fraction:
    """P[at most t failures among h + t queries], each passing with probability q; exact."""
    n = h + t
    return sum((math.comb(n, k) * (1 - q) ** k * q ** (n - k) for k in range(t + 1)), Fraction(0))


def exact_passes(h: int, t: int, p: float, c: float) -> bool:
    # the same threshold double the code compares against: 1 - c
    return h >= 1 and exact_odds(h, t, Fraction(str(p))) < Fraction(1 - c)


def brute_force_min_passes(t: int, p: float, c: float = 0.99) -> int:
    h = 1
    while not exact_passes(h, t, p, c):
        h += 1
    return h


@pytest.mark.parametrize("p", [0.5, 0.9, 0.99])
@pytest.mark.parametrize(("h", "t"), [(1, 0), (5, 3), (44, 0), (63, 1), (459, 0), (700, 2)])
def test_betainc_equals_binomial_cdf(p: float, h: int, t: int) -> None:
    exact = float(exact_odds(h, t, Fraction(str(p))))
    assert early_stopping_odds(h, t, p) == pytest.approx(exact, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize(("p", "ts"), [(0.5, range(0, 8)), (0.9, range(0, 6)), (0.99, [0, 1])])
def test_min_passes_matches_brute_force_scan(p: float, ts: range | list[int]) -> None:
    for t in ts:
        assert early_stopping_min_passes(t, p) == brute_force_min_passes(t, p)


@pytest.mark.parametrize(("p", "t"), [(0.99, 10), (0.99, 100), (0.9, 50), (0.9, 400), (0.95, 37)])
def test_min_passes_is_minimal_by_exact_arithmetic(p: float, t: int) -> None:
    h = early_stopping_min_passes(t, p)
    assert exact_passes(h, t, p, 0.99)
    assert not exact_passes(h - 1, t, p, 0.99)


def test_known_loadgen_values() -> None:
    # LoadGen Server logs at p99, c = 0.99, no over-latency query: "Processed 300 queries. Would
    # need to run at least 159 more" and "Processed 21 ... 438 more": h*(0) = 459.
    assert early_stopping_min_passes(0, 0.99) == 459
    assert early_stopping_min_passes(0, 0.99) == math.ceil(math.log(0.01) / math.log(0.99))
    # A LoadGen log with 100 queries, all over 15 ms: "Would need to run at least 12471 more
    # queries": h*(100) + 100 − 100 = 12471.
    assert server_early_stopping(100, 100, 0.99).min_queries_needed - 100 == 12471
    # SingleStream p90 needs h*(1) + 1 = 64 queries; h*(0) at p90 = ceil(log .01 / log .9) = 44.
    assert early_stopping_min_passes(1, 0.90) + 1 == 64
    assert early_stopping_min_passes(0, 0.90) == 44


def loadgen_min_passing_finder(p: float, d: float = 0.0, c: float = 0.99) -> Callable[[int], int]:
    """A line-by-line port of LoadGen's MinPassingQueriesFinder (early_stopping.cc): a cache of
    earlier answers brackets [min_h, max_h) and a lower_bound-style binary search runs inside.
    Only the search is ported; odds comes from the code under test."""
    cache: dict[int, int] = {}

    def find_min_passing(min_h: int, max_h: int, t: int) -> int:
        count = max_h - min_h
        while count > 0:
            step = count // 2
            h = min_h + step
            if early_stopping_odds(h, t, p, d) < 1 - c:
                count = step
            else:
                min_h = h + 1
                count -= step + 1
        return min_h

    def finder(t: int) -> int:
        if t in cache:
            return cache[t]
        below = sorted(k for k in cache if k < t)
        x0, y0 = -1, 0
        x1, y1 = 0, math.ceil(math.log(1 - c) / math.log(p - d))
        if below:
            x1, y1 = below[-1], cache[below[-1]]
            if len(below) > 1:
                x0, y0 = below[-2], cache[below[-2]]
        min_slope = (p - d) / (1 - p + d)
        max_slope = (y1 - y0) * (x1 - x0)
        min_h = int((t - x1) * min_slope + y1)
        max_h = int((t - x1) * max_slope + y1 + 1)
        cache[t] = find_min_passing(min_h, max_h, t)
        return cache[t]

    return finder


@pytest.mark.parametrize("p", [0.9, 0.99, 0.999])
def test_matches_loadgen_search_sequentially(p: float) -> None:
    finder = loadgen_min_passing_finder(p)
    for t in range(0, 300):
        assert early_stopping_min_passes(t, p) == finder(t), t


@pytest.mark.parametrize("p", [0.9, 0.99])
def test_matches_loadgen_search_cold(p: float) -> None:
    for t in (0, 1, 7, 50, 333, 2000):
        assert early_stopping_min_passes(t, p) == loadgen_min_passing_finder(p)(t)


def test_monotone() -> None:
    hs = [early_stopping_min_passes(t, 0.99) for t in range(200)]
    assert all(b >= a for a, b in itertools.pairwise(hs))
    needed = [h + t for t, h in enumerate(hs)]
    assert all(b > a for a, b in itertools.pairwise(needed))
    # each extra failure costs at least p/(1 − p) = 99 more passes
    assert all(b - a >= 99 for a, b in itertools.pairwise(hs))
    # odds uses q = p − d: with a tolerance, few failures are less likely by chance, so fewer
    # passes suffice; a higher confidence needs more
    assert early_stopping_min_passes(5, 0.99, tolerance=0.001) < hs[5]
    assert early_stopping_min_passes(5, 0.99, confidence=0.999) > hs[5]
    assert early_stopping_min_passes(5, 0.99, confidence=0.9) < hs[5]


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        early_stopping_min_passes(-1, 0.99)
    with pytest.raises(ValueError):
        early_stopping_min_passes(0, 1.0)
    with pytest.raises(ValueError):
        early_stopping_min_passes(0, 0.99, confidence=1.0)


def test_server_early_stopping_boundary_and_text() -> None:
    needed = early_stopping_min_passes(3, 0.99) + 3
    passed = server_early_stopping(needed, 3, 0.99)
    assert passed.passed and passed.text == " * Run successful."
    failed = server_early_stopping(needed - 1, 3, 0.99)
    assert not failed.passed
    assert failed.text == (
        f" * Run unsuccessful.\n * Processed {needed - 1} queries.\n"
        " * Would need to run at least 1 more queries,\n"
        " with the run being successful if every additional\n"
        " query were under latency."
    )


def loadgen_stream_t(n: int, p: float) -> int | None:
    """LoadGen's SingleStream loop (results.cc), literally: walk i = 2, 3, … ."""
    finder = loadgen_min_passing_finder(p)
    if n < finder(1) + 1:
        return None
    t = 1
    for i in range(2, n + 1):
        if n < finder(i) + i:
            t = i - 1
            break
    return t


@pytest.mark.parametrize("n", [64, 65, 100, 250, 1000, 3001])
def test_stream_estimate_matches_loadgen_loop(n: int) -> None:
    latencies = np.arange(1, n + 1, dtype=np.int64) * 1000  # sorted; value = rank · 1000
    estimate = stream_early_stopping_estimate(latencies, 0.90)
    t = loadgen_stream_t(n, 0.90)
    assert t is not None
    assert estimate.overlatency == t and estimate.discarded == t - 1
    assert estimate.estimate_ns == latencies[n - t]
    assert estimate.text.endswith(f"90th percentile estimate: {latencies[n - t]}")
    # conservative: never below the plain percentile
    assert estimate.estimate_ns >= latencies[int(n * 0.9)]


def test_stream_estimate_not_enough_queries() -> None:
    estimate = stream_early_stopping_estimate(np.arange(63), 0.90)
    assert estimate.estimate_ns is None and not estimate.passed
    assert estimate.min_queries_needed == 64
    assert estimate.text == (
        " * Only processed 63 queries.\n * Need to process at least 64 queries for early stopping."
    )


# --- verdicts ----------------------------------------------------------------------------------


def server_run(
    n: int = 1000,
    gap_ns: int = MS,
    latency_ns: int = 2 * MS,
    late: int = 0,
    late_by_ns: int = 5 * MS,
    errors: int = 0,
    pending: int = 0,
    slow: int = 0,
    slow_ns: int = 50 * MS,
) -> tuple[Summary, np.ndarray]:
    """n queries due every gap_ns from gap_ns on (like LoadGen's schedule), answered in latency_ns.
    The last `late` rows are sent late_by_ns late; the first `errors` rows fail; the next
    `pending` rows are never answered; the next `slow` rows take slow_ns."""
    scheduled = np.arange(1, n + 1, dtype=np.int64) * gap_ns
    records = Records(scheduled_ns=scheduled, sample_index=np.zeros(n, dtype=np.int32))
    records.issued_ns[:] = scheduled
    if late:
        records.issued_ns[n - late :] += late_by_ns
    records.completed_ns[:] = records.issued_ns + latency_ns
    records.status[:] = Status.OK
    code = records.error_code_for("timeout")
    records.status[:errors] = Status.ERROR
    records.error_code[:errors] = code
    records.status[errors : errors + pending] = Status.PENDING
    records.completed_ns[errors : errors + pending] = -1
    records.completed_ns[errors + pending : errors + pending + slow] = (
        scheduled[errors + pending : errors + pending + slow] + slow_ns
    )
    return summarize(records), records.latency_from_scheduled_ns()


def judge(
    summary: Summary,
    latencies: np.ndarray,
    min_duration_ns: int = S // 2,
    min_query_count: int = 100,
    interrupted: bool = False,
    stop_reason: str = "",
) -> Verdict:
    return judge_server(
        summary,
        latencies,
        target_latency_ns=10 * MS,
        percentile=0.99,
        min_duration_ns=min_duration_ns,
        min_query_count=min_query_count,
        interrupted=interrupted,
        stop_reason=stop_reason,
    )


def failed_names(verdict: Verdict) -> list[str]:
    return [c.name for c in verdict.checks if not c.passed]


def detail(verdict: Verdict, name: str) -> str:
    check = verdict.check(name)
    assert check is not None
    return check.detail


def test_valid_server_run() -> None:
    verdict = judge(*server_run())
    assert verdict.valid, verdict.reasons
    assert verdict.scenario == "Server"
    assert [c.name for c in verdict.checks] == [
        PERFORMANCE,
        MIN_DURATION,
        MIN_QUERIES,
        EARLY_STOPPING,
        NO_FAILURES,
        CLIENT_KEPT_UP,
        RUN_COMPLETE,
    ]
    assert verdict.reasons == () and verdict.recommendations == ()
    assert detail(verdict, PERFORMANCE) == "performance constraint: p99 2 ms ≤ 10 ms target"
    assert detail(verdict, MIN_DURATION) == "min duration: schedule spans 1 s ≥ 0.5 s"
    assert detail(verdict, CLIENT_KEPT_UP).startswith("client kept up with its schedule")
    assert verdict.early_stopping is not None and verdict.early_stopping.passed
    assert verdict.early_stopping.overlatency == 0


def test_performance_constraint_fails() -> None:
    # 2 % of queries take 50 ms: p99 (index 990) is 50 ms. Failing the percentile with the same p
    # always fails early stopping too (t > 1 % of n needs n ≥ ~100 t).
    verdict = judge(*server_run(slow=20))
    assert not verdict.valid
    assert failed_names(verdict) == [PERFORMANCE, EARLY_STOPPING]
    assert verdict.reasons[0] == "performance constraint: p99 50 ms > 10 ms target"
    assert verdict.recommendations[0] == REDUCE_QPS


def test_slow_queries_below_one_percent_pass() -> None:
    # 2 slow of 1000 at p99: index 990 is fast; early stopping passes iff h*(2) + 2 ≤ 1000
    summary, latencies = server_run(slow=2)
    verdict = judge(summary, latencies)
    assert verdict.passed(PERFORMANCE)
    assert verdict.early_stopping is not None and verdict.early_stopping.overlatency == 2
    assert verdict.passed(EARLY_STOPPING) == (early_stopping_min_passes(2, 0.99) + 2 <= 1000)


def test_min_duration_fails_alone() -> None:
    verdict = judge(*server_run(), min_duration_ns=2 * S)
    assert failed_names(verdict) == [MIN_DURATION]
    assert verdict.reasons == ("min duration: schedule spans 1 s < 2 s",)
    assert "pre-generates more queries" in verdict.recommendations[0]


def test_min_queries_fails_alone() -> None:
    verdict = judge(*server_run(), min_query_count=2000)
    assert failed_names(verdict) == [MIN_QUERIES]
    assert verdict.reasons == ("min queries: 1000 issued < 2000",)


def test_early_stopping_fails_alone() -> None:
    # 300 flawless queries: fewer than h*(0) = 459
    verdict = judge(*server_run(n=300, gap_ns=2 * MS))
    assert failed_names(verdict) == [EARLY_STOPPING]
    assert verdict.early_stopping is not None
    assert verdict.early_stopping.min_queries_needed == 459
    assert "Would need to run at least 159 more queries" in verdict.early_stopping.text
    assert verdict.recommendations == (
        "Run at least 159 more queries (a longer run) with every additional query under "
        "latency, or reduce target QPS.",
    )


def test_failed_queries_invalidate_and_count_as_overlatency() -> None:
    summary, latencies = server_run(errors=1, pending=1)
    verdict = judge(summary, latencies)
    assert failed_names(verdict) == [NO_FAILURES]
    assert verdict.reasons == ("failed queries: 1 failed (timeout: 1), 1 never completed",)
    assert verdict.early_stopping is not None and verdict.early_stopping.overlatency == 2
    assert verdict.early_stopping.queries == 1000


def test_client_bound_is_invalid() -> None:
    # 5 % of queries sent 5 ms late; still under the 10 ms target, so only the client check fails
    verdict = judge(*server_run(late=50))
    assert failed_names(verdict) == [CLIENT_KEPT_UP]
    assert verdict.reasons[0].startswith("client-bound: the load generator fell behind")
    assert "send-lag p99 5 ms > 1 ms" in verdict.reasons[0]
    assert "5.00 % issued" in verdict.reasons[0]
    assert "more CPU" in verdict.recommendations[0]


def test_interrupted_is_invalid() -> None:
    verdict = judge(*server_run(), interrupted=True, stop_reason="interrupted (Ctrl-C)")
    assert failed_names(verdict) == [RUN_COMPLETE]
    assert verdict.reasons == ("run interrupted; partial result (interrupted (Ctrl-C))",)


def test_no_successful_query() -> None:
    # Every query failed: the percentile over what was issued is a failure, +∞.
    summary, latencies = server_run(n=10, errors=10)
    verdict = judge(summary, latencies)
    assert not verdict.passed(PERFORMANCE)
    assert detail(verdict, PERFORMANCE) == (
        "performance constraint: p99 over 10 queries (10 failed counted as over the bound) "
        "= ∞ > 10 ms target"
    )
    # Nothing issued at all: no percentile.
    empty, none = summarize(Records(np.zeros(0, np.int64), np.zeros(0, np.int32))), np.zeros(0)
    assert detail(judge(empty, none), PERFORMANCE) == (
        "performance constraint: no query answered, so no p99"
    )


def test_latency_count_must_match_summary() -> None:
    summary, latencies = server_run(n=10)
    with pytest.raises(ValueError):
        judge(summary, latencies[:5])


def test_offline_verdict() -> None:
    n = 100
    records = Records(np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int32))
    records.issued_ns[:] = 0
    records.completed_ns[:] = np.linspace(S // 100, 2 * S, n).astype(np.int64)
    records.status[:] = Status.OK
    summary = summarize(records)
    assert summary.throughput_samples_per_s == pytest.approx(50.0)  # 100 samples / 2 s
    assert judge_offline(summary, min_duration_ns=S).valid
    short = judge_offline(summary, min_duration_ns=3 * S)
    assert failed_names(short) == [MIN_DURATION]
    assert short.reasons == ("min duration: last completion at 2 s < 3 s",)
    assert short.recommendations == (
        "Increase expected QPS so the load generator pre-generates a larger (coalesced) query.",
    )


def test_single_stream_verdict() -> None:
    def run(n: int) -> tuple[Summary, np.ndarray]:
        records = Records(np.arange(n, dtype=np.int64) * 2 * MS, np.zeros(n, dtype=np.int32))
        records.issued_ns[:] = records.scheduled_ns
        records.completed_ns[:] = records.scheduled_ns + MS + np.arange(n)
        records.status[:] = Status.OK
        return summarize(records), records.latency_from_issue_ns()

    verdict = judge_single_stream(*run(500), min_duration_ns=S // 2)
    assert verdict.valid, verdict.reasons
    estimate = verdict.early_stopping_estimate
    assert estimate is not None and estimate.estimate_ns is not None
    few = judge_single_stream(*run(50), min_duration_ns=MS)
    assert failed_names(few) == [EARLY_STOPPING]
    assert few.recommendations == ("Process at least 64 queries for early stopping.",)
