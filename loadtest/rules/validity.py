"""MLPerf LoadGen's validity rules -> a Verdict: VALID or INVALID, which checks failed, and why.

The rules follow LoadGen (loadgen/results.cc, loadgen/early_stopping.cc):

- Server: the performance constraint `sorted_latencies[floor(n·p)] ≤ target_latency`; the schedule
  spans the minimum duration (the last issued query's scheduled time); enough queries issued; and
  early stopping: with t queries over the target latency, n ≥ h*(t) + t.
- Offline: the time to the last completion reaches the minimum duration; enough queries.
- SingleStream / MultiStream: the last query was issued after the minimum duration; enough
  queries; early stopping needs at least h*(1) + 1 queries and gives the reported percentile
  estimate sorted[n − t] (see stream_early_stopping_estimate).

Early stopping. With each query meeting the latency bound with probability p − d, the chance of at
most t over-latency queries among h + t is the binomial CDF
    odds(h, t) = P[Binomial(h + t, 1 − (p − d)) ≤ t] = I_{p−d}(h, t + 1),
the regularized incomplete beta function. h*(t) is the smallest h with odds(h, t) < 1 − c: having
seen that few failures in that many queries would be too unlikely (less than 1 − c) if the true
percentile were worse than the target. LoadGen brackets h between its cached neighbours and binary
searches; we search exponentially then binary, which finds the same smallest h because odds falls
monotonically as h grows (tests check both against exact rational arithmetic).

Our additions, because LoadGen controls its own SUT interface and we drive a real server:
- "no failed queries": LoadGen has no notion of a failed query. We count every errored or never
  completed query as over-latency in early stopping (a lost answer certainly missed the bound) and
  make the run INVALID if any occurred. Percentiles stay over the successful queries.
- "client kept up": if the load generator itself fell behind its schedule (send-lag p99 above the
  late threshold, or more than 1 % of queries late), the latencies measure the client's own queue;
  the run is INVALID, reason "client-bound".
- "run complete": an interrupted run (Ctrl-C, max duration, drain timeout) is a partial result and
  INVALID.

Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import betainc

from loadtest.rules.stats import NS_PER_S, Summary, exact_percentile

DEFAULT_CONFIDENCE = 0.99  # LoadGen's early-stopping confidence c
DEFAULT_TOLERANCE = 0.0  # LoadGen's tolerance d

# Check names (stable: reports and the MLPerf summary renderer look checks up by these).
PERFORMANCE = "performance constraint"
MIN_DURATION = "min duration"
MIN_QUERIES = "min queries"
EARLY_STOPPING = "early stopping"
NO_FAILURES = "no failed queries"
CLIENT_KEPT_UP = "client kept up"
RUN_COMPLETE = "run complete"

# LoadGen's recommendation texts (results.cc), lightly paraphrased for our schedule.
REDUCE_QPS = "Reduce target QPS to improve latency."
SERVER_MIN_DURATION = (
    "Increase the target QPS or the duration so the load generator pre-generates more queries "
    "(the schedule must span the minimum duration)."
)
OFFLINE_MIN_DURATION = (
    "Increase expected QPS so the load generator pre-generates a larger (coalesced) query."
)
STREAM_MIN_DURATION = (
    "Decrease the expected latency so the load generator pre-generates more queries."
)
MIN_QUERIES_EXITED_EARLY = (
    "The test exited early, before enough queries were issued; see the stop reason."
)
CLIENT_BOUND = (
    "The load generator fell behind its schedule: give it more CPU, spread the load over more "
    "client processes, or lower the target QPS."
)
FIX_FAILURES = (
    "Fix the failing requests (errors by kind are in the summary); every failed or unanswered "
    "query counts as over-latency for early stopping."
)
RERUN = "Rerun to completion; an interrupted run is only a partial result."


# --- early stopping ----------------------------------------------------------------------------


def _check_early_stopping_args(percentile: float, confidence: float, tolerance: float) -> float:
    q = percentile - tolerance
    if not 0.0 < q < 1.0:
        raise ValueError(f"percentile − tolerance must be in (0, 1), got {q}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return q


def early_stopping_odds(
    passes: int, overlatency: int, percentile: float, tolerance: float = DEFAULT_TOLERANCE
) -> float:
    """odds(h, t) = I_{p−d}(h, t + 1): the chance of ≤ t over-latency queries among h + t."""
    if passes <= 0:
        return 1.0  # t failures in t queries: certain
    return float(betainc(passes, overlatency + 1, percentile - tolerance))


def early_stopping_min_passes(
    overlatency: int,
    percentile: float,
    confidence: float = DEFAULT_CONFIDENCE,
    tolerance: float = DEFAULT_TOLERANCE,
) -> int:
    """h*(t): the smallest h ≥ 1 with odds(h, t) < 1 − c (LoadGen's MinPassingQueriesFinder).

    Exponential search upward from the expected-count bound t·q/(1 − q), then binary search;
    odds(0, t) = 1 is the known failing lower end. E.g. p = 0.99, c = 0.99: h*(0) = 459.
    """
    if overlatency < 0:
        raise ValueError("overlatency must be ≥ 0")
    q = _check_early_stopping_args(percentile, confidence, tolerance)
    threshold = 1 - confidence  # the same double LoadGen compares against

    def passing(h: int) -> bool:
        return early_stopping_odds(h, overlatency, percentile, tolerance) < threshold

    failing = 0
    candidate = max(1, int(overlatency * q / (1 - q)))
    while not passing(candidate):
        failing = candidate
        candidate *= 2
    while candidate - failing > 1:
        middle = (failing + candidate) // 2
        if passing(middle):
            candidate = middle
        else:
            failing = middle
    return candidate


@dataclass(frozen=True)
class EarlyStopping:
    """Server early stopping: passed iff queries ≥ h*(t) + t = min_queries_needed.

    `text` holds LoadGen's "Early Stopping Result" lines.
    """

    passed: bool
    queries: int
    overlatency: int
    min_passes: int  # h*(t)
    min_queries_needed: int  # h*(t) + t
    percentile: float
    confidence: float
    tolerance: float
    text: str


def server_early_stopping(
    queries_issued: int,
    overlatency: int,
    percentile: float,
    confidence: float = DEFAULT_CONFIDENCE,
    tolerance: float = DEFAULT_TOLERANCE,
) -> EarlyStopping:
    """LoadGen's Server early-stopping decision for t = overlatency among queries_issued."""
    h = early_stopping_min_passes(overlatency, percentile, confidence, tolerance)
    needed = h + overlatency
    passed = queries_issued >= needed
    if passed:
        text = " * Run successful."
    else:
        text = (
            f" * Run unsuccessful.\n * Processed {queries_issued} queries.\n"
            f" * Would need to run at least {needed - queries_issued} more queries,\n"
            " with the run being successful if every additional\n"
            " query were under latency."
        )
    return EarlyStopping(
        passed=passed,
        queries=queries_issued,
        overlatency=overlatency,
        min_passes=h,
        min_queries_needed=needed,
        percentile=percentile,
        confidence=confidence,
        tolerance=tolerance,
        text=text,
    )


@dataclass(frozen=True)
class EarlyStoppingEstimate:
    """SingleStream/MultiStream early stopping: a conservative estimate of the percentile.

    estimate_ns is sorted[n − t] for the largest t ≥ 1 with n ≥ h*(t) + t (LoadGen discards the
    t − 1 highest latencies), or None when n < h*(1) + 1 = min_queries_needed.
    """

    percentile: float
    queries: int
    min_queries_needed: int  # h*(1) + 1
    overlatency: int  # t; 0 when not enough queries
    discarded: int  # t − 1 highest latencies dropped
    estimate_ns: int | None
    confidence: float
    tolerance: float
    text: str

    @property
    def passed(self) -> bool:
        return self.estimate_ns is not None


def stream_early_stopping_estimate(
    sorted_latencies_ns: np.ndarray,
    percentile: float,
    confidence: float = DEFAULT_CONFIDENCE,
    tolerance: float = DEFAULT_TOLERANCE,
) -> EarlyStoppingEstimate:
    """LoadGen's SingleStream/MultiStream early-stopping estimate from ascending latencies.

    LoadGen walks i = 2, 3, … until n < h*(i) + i and takes t = i − 1; because h*(i) + i grows
    strictly with i, that t is the largest with n ≥ h*(t) + t, which we find by exponential and
    binary search instead of a linear walk.
    """
    latencies = np.asarray(sorted_latencies_ns)
    n = len(latencies)
    pct = f"{percentile * 100:.0f}"

    def fits(t: int) -> bool:
        return n >= early_stopping_min_passes(t, percentile, confidence, tolerance) + t

    needed = early_stopping_min_passes(1, percentile, confidence, tolerance) + 1
    if n < needed:
        return EarlyStoppingEstimate(
            percentile=percentile,
            queries=n,
            min_queries_needed=needed,
            overlatency=0,
            discarded=0,
            estimate_ns=None,
            confidence=confidence,
            tolerance=tolerance,
            text=(
                f" * Only processed {n} queries.\n"
                f" * Need to process at least {needed} queries for early stopping."
            ),
        )
    good, bad = 1, 2
    while fits(bad):
        good, bad = bad, bad * 2
    while bad - good > 1:
        middle = (good + bad) // 2
        if fits(middle):
            good = middle
        else:
            bad = middle
    t = good
    estimate = int(latencies[n - t])
    return EarlyStoppingEstimate(
        percentile=percentile,
        queries=n,
        min_queries_needed=needed,
        overlatency=t,
        discarded=t - 1,
        estimate_ns=estimate,
        confidence=confidence,
        tolerance=tolerance,
        text=(
            f" * Processed at least {needed} queries ({n}).\n"
            f" * Would discard {t - 1} highest latency queries.\n"
            f" * Early stopping {pct}th percentile estimate: {estimate}"
        ),
    )


# --- checks and verdicts -----------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One rule's outcome: `detail` gives the numbers either way; a failure adds advice."""

    name: str
    passed: bool
    detail: str
    recommendation: str = ""


@dataclass(frozen=True)
class Verdict:
    """VALID iff every check passed. reasons = the failed checks' details, in check order."""

    scenario: str
    valid: bool
    checks: tuple[Check, ...]
    reasons: tuple[str, ...]
    recommendations: tuple[str, ...]
    early_stopping: EarlyStopping | None = None
    early_stopping_estimate: EarlyStoppingEstimate | None = None

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def passed(self, name: str) -> bool | None:
        """Whether the named check passed; None when this scenario has no such check."""
        found = self.check(name)
        return None if found is None else found.passed


def make_verdict(
    scenario: str,
    checks: Sequence[Check],
    early_stopping: EarlyStopping | None = None,
    early_stopping_estimate: EarlyStoppingEstimate | None = None,
) -> Verdict:
    failed = [c for c in checks if not c.passed]
    recommendations: list[str] = []
    for c in failed:
        if c.recommendation and c.recommendation not in recommendations:
            recommendations.append(c.recommendation)
    return Verdict(
        scenario=scenario,
        valid=not failed,
        checks=tuple(checks),
        reasons=tuple(c.detail for c in failed),
        recommendations=tuple(recommendations),
        early_stopping=early_stopping,
        early_stopping_estimate=early_stopping_estimate,
    )


def fmt_ms(ns: float) -> str:
    """ns -> '12.3 ms' (up to 3 decimals, trailing zeros dropped)."""
    text = f"{ns / 1e6:.3f}".rstrip("0").rstrip(".")
    return f"{text} ms"


def fmt_s(ns: float) -> str:
    text = f"{ns / NS_PER_S:.3f}".rstrip("0").rstrip(".")
    return f"{text} s"


def fmt_pct(percentile: float) -> str:
    """0.99 -> 'p99', 0.999 -> 'p99.9'."""
    return f"p{percentile * 100:g}"


def min_duration_check(measured_ns: int, min_duration_ns: int, what: str, advice: str) -> Check:
    ok = measured_ns >= min_duration_ns
    sign = "≥" if ok else "<"
    return Check(
        MIN_DURATION,
        ok,
        f"min duration: {what} {fmt_s(measured_ns)} {sign} {fmt_s(min_duration_ns)}",
        "" if ok else advice,
    )


def min_queries_check(queries: int, min_query_count: int) -> Check:
    ok = queries >= min_query_count
    sign = "≥" if ok else "<"
    return Check(
        MIN_QUERIES,
        ok,
        f"min queries: {queries} issued {sign} {min_query_count}",
        "" if ok else MIN_QUERIES_EXITED_EARLY,
    )


def no_failures_check(summary: Summary) -> Check:
    ok = summary.errors == 0 and summary.pending == 0
    if ok:
        detail = "no failed queries: every query completed successfully"
    else:
        kinds = ", ".join(f"{kind}: {count}" for kind, count in summary.errors_by_kind.items())
        failed = f"{summary.errors} failed" + (f" ({kinds})" if kinds else "")
        detail = f"failed queries: {failed}, {summary.pending} never completed"
    return Check(NO_FAILURES, ok, detail, "" if ok else FIX_FAILURES)


def client_check(summary: Summary) -> Check:
    lag = summary.send_lag
    numbers = (
        f"send-lag p99 {fmt_ms(lag.p99_ns)} {'≤' if lag.p99_ns <= lag.late_threshold_ns else '>'} "
        f"{fmt_ms(lag.late_threshold_ns)}, {lag.late_share * 100:.2f} % issued more than "
        f"{fmt_ms(lag.late_threshold_ns)} late"
    )
    if lag.kept_up:
        return Check(CLIENT_KEPT_UP, True, f"client kept up with its schedule ({numbers})")
    if lag.count == 0:
        numbers = f"none of {summary.scheduled} scheduled queries was issued"
    return Check(
        CLIENT_KEPT_UP,
        False,
        f"client-bound: the load generator fell behind its schedule ({numbers})",
        CLIENT_BOUND,
    )


def run_complete_check(interrupted: bool, stop_reason: str = "") -> Check:
    if not interrupted:
        return Check(RUN_COMPLETE, True, "run completed as scheduled")
    why = f" ({stop_reason})" if stop_reason else ""
    return Check(RUN_COMPLETE, False, f"run interrupted; partial result{why}", RERUN)


def _sorted(latencies_ns: np.ndarray, expected: int) -> np.ndarray:
    values = np.sort(np.asarray(latencies_ns, dtype=np.int64))
    if len(values) != expected:
        raise ValueError(
            f"{len(values)} latencies given but the summary has {expected} successful queries"
        )
    return values


def judge_server(
    summary: Summary,
    latencies_ns: np.ndarray,
    target_latency_ns: int,
    percentile: float,
    min_duration_ns: int,
    min_query_count: int,
    confidence: float = DEFAULT_CONFIDENCE,
    tolerance: float = DEFAULT_TOLERANCE,
    interrupted: bool = False,
    stop_reason: str = "",
) -> Verdict:
    """The Server verdict. `latencies_ns`: completion − scheduled time of the successful queries
    (records.latency_from_scheduled_ns()), in any order.

    Early stopping counts n = every scheduled query and t = successful queries over the target
    plus every failed or never-completed one (never issued included).
    """
    latencies = _sorted(latencies_ns, summary.completed_ok)
    checks: list[Check] = []

    label = fmt_pct(percentile)
    if len(latencies):
        value = exact_percentile(latencies, percentile)
        ok = value <= target_latency_ns
        sign = "≤" if ok else ">"
        detail = (
            f"performance constraint: {label} {fmt_ms(value)} {sign} "
            f"{fmt_ms(target_latency_ns)} target"
        )
    else:
        ok = False
        detail = f"performance constraint: no successful query, so no {label}"
    checks.append(Check(PERFORMANCE, ok, detail, "" if ok else REDUCE_QPS))

    checks.append(
        min_duration_check(
            summary.final_scheduled_ns, min_duration_ns, "schedule spans", SERVER_MIN_DURATION
        )
    )
    checks.append(min_queries_check(summary.issued, min_query_count))

    over_target = len(latencies) - int(np.searchsorted(latencies, target_latency_ns, "right"))
    overlatency = over_target + summary.errors + summary.pending
    stopping = server_early_stopping(
        summary.scheduled, overlatency, percentile, confidence, tolerance
    )
    extra = (
        f" (incl. {summary.errors + summary.pending} failed or unanswered)"
        if summary.errors + summary.pending
        else ""
    )
    sign = "≥" if stopping.passed else "<"
    es_detail = (
        f"early stopping: {stopping.queries} queries {sign} {stopping.min_queries_needed} needed "
        f"with {overlatency} over {fmt_ms(target_latency_ns)}{extra} "
        f"({label}, {confidence * 100:g} % confidence)"
    )
    es_advice = (
        ""
        if stopping.passed
        else f"Run at least {stopping.min_queries_needed - stopping.queries} more queries "
        "(a longer run) with every additional query under latency, or reduce target QPS."
    )
    checks.append(Check(EARLY_STOPPING, stopping.passed, es_detail, es_advice))
    checks.append(no_failures_check(summary))
    checks.append(client_check(summary))
    checks.append(run_complete_check(interrupted, stop_reason))
    return make_verdict("Server", checks, early_stopping=stopping)


def judge_offline(
    summary: Summary,
    min_duration_ns: int,
    min_query_count: int = 1,
    interrupted: bool = False,
    stop_reason: str = "",
) -> Verdict:
    """The Offline verdict: time from the first scheduled query to the last completion (LoadGen's
    max latency of its one coalesced query) must reach the minimum duration; no percentile bound,
    no early stopping. The client-kept-up rule does not apply (every query is due at once)."""
    measured = max(summary.final_completed_ns - summary.first_scheduled_ns, 0)
    checks = [
        min_duration_check(measured, min_duration_ns, "last completion at", OFFLINE_MIN_DURATION),
        min_queries_check(summary.issued, min_query_count),
        no_failures_check(summary),
        run_complete_check(interrupted, stop_reason),
    ]
    return make_verdict("Offline", checks)


def _judge_stream(
    scenario: str,
    summary: Summary,
    latencies_ns: np.ndarray,
    percentile: float,
    min_duration_ns: int,
    min_query_count: int,
    confidence: float,
    tolerance: float,
    interrupted: bool,
    stop_reason: str,
) -> Verdict:
    latencies = _sorted(latencies_ns, summary.completed_ok)
    estimate = stream_early_stopping_estimate(latencies, percentile, confidence, tolerance)
    label = fmt_pct(percentile)
    if estimate.estimate_ns is not None:
        es_detail = (
            f"early stopping: {estimate.queries} queries ≥ {estimate.min_queries_needed} needed; "
            f"{label} estimate {fmt_ms(estimate.estimate_ns)} "
            f"(discarding the {estimate.discarded} highest)"
        )
        advice = ""
    else:
        es_detail = (
            f"early stopping: {estimate.queries} queries < {estimate.min_queries_needed} needed "
            f"for a {label} estimate"
        )
        advice = f"Process at least {estimate.min_queries_needed} queries for early stopping."
    checks = [
        min_duration_check(
            summary.final_issued_ns, min_duration_ns, "last query issued at", STREAM_MIN_DURATION
        ),
        min_queries_check(summary.issued, min_query_count),
        Check(EARLY_STOPPING, estimate.passed, es_detail, advice),
        no_failures_check(summary),
        run_complete_check(interrupted, stop_reason),
    ]
    return make_verdict(scenario, checks, early_stopping_estimate=estimate)


def judge_single_stream(
    summary: Summary,
    latencies_ns: np.ndarray,
    percentile: float = 0.90,
    min_duration_ns: int = 600 * NS_PER_S,
    min_query_count: int = 1,
    confidence: float = DEFAULT_CONFIDENCE,
    tolerance: float = DEFAULT_TOLERANCE,
    interrupted: bool = False,
    stop_reason: str = "",
) -> Verdict:
    """SingleStream (closed loop, one sample per query): `latencies_ns` are completion − issue.
    The result is the early-stopping estimate of the percentile (p90 by default)."""
    return _judge_stream(
        "SingleStream",
        summary,
        latencies_ns,
        percentile,
        min_duration_ns,
        min_query_count,
        confidence,
        tolerance,
        interrupted,
        stop_reason,
    )


def judge_multi_stream(
    summary: Summary,
    latencies_ns: np.ndarray,
    percentile: float = 0.99,
    min_duration_ns: int = 600 * NS_PER_S,
    min_query_count: int = 1,
    confidence: float = DEFAULT_CONFIDENCE,
    tolerance: float = DEFAULT_TOLERANCE,
    interrupted: bool = False,
    stop_reason: str = "",
) -> Verdict:
    """MultiStream (closed loop, several samples per query): `latencies_ns` are per-query
    latencies (issue -> last sample done). The result is the early-stopping p99 estimate."""
    return _judge_stream(
        "MultiStream",
        summary,
        latencies_ns,
        percentile,
        min_duration_ns,
        min_query_count,
        confidence,
        tolerance,
        interrupted,
        stop_reason,
    )


def expected_min_queries(percentile: float, confidence: float = DEFAULT_CONFIDENCE) -> int:
    """Queries a flawless Server run needs for early stopping: h*(0) (459 at p99, c = 0.99).

    Handy for warning users before a run; equals ceil(log(1 − c) / log(p)) up to rounding.
    """
    return early_stopping_min_passes(0, percentile, confidence)


__all__ = [
    "CLIENT_KEPT_UP",
    "EARLY_STOPPING",
    "MIN_DURATION",
    "MIN_QUERIES",
    "NO_FAILURES",
    "PERFORMANCE",
    "RUN_COMPLETE",
    "Check",
    "EarlyStopping",
    "EarlyStoppingEstimate",
    "Verdict",
    "early_stopping_min_passes",
    "early_stopping_odds",
    "expected_min_queries",
    "judge_multi_stream",
    "judge_offline",
    "judge_server",
    "judge_single_stream",
    "make_verdict",
    "server_early_stopping",
    "stream_early_stopping_estimate",
]
