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
- Failed queries. LoadGen has no notion of a failed query. A failed or unanswered query certainly
  missed the bound, so it counts as over the bound everywhere the bound is judged: in early
  stopping (with the never-issued ones too) and in the Server performance constraint, whose
  percentile is taken over every issued query with the failed ones placed at +∞
  (stats.exact_percentile_with_failures). The percentile *tables* stay over the successes.
- "no failed queries" (MLPerf rules, the default): any failed or unanswered query makes the run
  INVALID. With an error budget (a share of the issued queries allowed to fail) that check is
  replaced by "error budget", and the verdict says so (Verdict.rules = "error-budget"); failures
  still count as over the bound.
- "client kept up": if the load generator itself fell behind its schedule (send-lag p99 above the
  allowed lag, or more than 1 % of queries later than it), the latencies measure the client's own
  queue; the run is INVALID, reason "client-bound". The allowed lag grows with the latency bound
  (stats.allowed_send_lag_ns). A Server run whose late sends (≤ 1 %) leave every answer on the
  same side of the bound passes it: that lag could not have moved the verdict
  (lag_cannot_move_verdict).
- "run complete": a run that stopped early for any reason (Ctrl-C, max duration, an abort, the
  drain timeout leaving queries unanswered, queries never issued) is a partial result and INVALID.
- "latency bound (loadtest)": SingleStream/MultiStream with a target latency: the early-stopping
  estimate must not exceed it.

Recommendations name the cause first: a run that stopped early says so (and the advice its
consequences would trigger, "increase the duration", "run more queries", is left out); a server
that failed so many queries that the percentile is +∞ is told to fix the server, not to run longer
or slower.

Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from loadtest.core.units import NS_PER_S, fmt_ms, fmt_s
from loadtest.rules.stats import (
    MAX_LATE_SHARE,
    SendLagStats,
    Summary,
    exact_percentile_with_failures,
)

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
ERROR_BUDGET = "error budget"  # replaces NO_FAILURES when an error budget is given
LATENCY_BOUND = "latency bound (loadtest)"  # SingleStream/MultiStream with a target latency
OUTPUTS_MATCH = "outputs match reference"  # --check-outputs (rules/output_check.py)
NO_RESPONSE_CACHE = "no response cache"  # --same-sample (rules/cache_check.py)

# Verdict.rules: which rule set judged failed queries.
MLPERF_RULES = "mlperf"  # any failed query is INVALID
ERROR_BUDGET_RULES = "error-budget"  # up to a share of the issued queries may fail

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
RERUN = "Rerun to completion; an interrupted run is only a partial result."
LATENCY_BOUND_NOT_MET = "The latency bound is not met: use a faster deployment"


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
    from scipy.special import betainc  # imported when a run is judged, not at start-up

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
    """VALID iff every check passed. reasons = the failed checks' details, in check order.

    rules: "mlperf" (any failed query is INVALID) or "error-budget" (up to `error_budget` of the
    issued queries may fail; the "error budget" check replaces "no failed queries").
    partial: the run stopped early (see run_stopped_early); "run complete" failed.
    """

    scenario: str
    valid: bool
    checks: tuple[Check, ...]
    reasons: tuple[str, ...]
    recommendations: tuple[str, ...]
    early_stopping: EarlyStopping | None = None
    early_stopping_estimate: EarlyStoppingEstimate | None = None
    rules: str = MLPERF_RULES
    error_budget: float | None = None
    partial: bool = False

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    @property
    def client_bound(self) -> bool:
        """INVALID because the client fell behind its schedule, with no failed query and no early
        stop: its latencies may be the client's own queue, so the run says nothing of the server
        (any latency check that failed beside it may be the client's doing too)."""
        if self.valid or self.passed(CLIENT_KEPT_UP) is not False:
            return False
        causes = (RUN_COMPLETE, NO_FAILURES, ERROR_BUDGET, OUTPUTS_MATCH, NO_RESPONSE_CACHE)
        return all(c.passed for c in self.checks if c.name in causes)

    def passed(self, name: str) -> bool | None:
        """Whether the named check passed; None when this scenario has no such check."""
        found = self.check(name)
        return None if found is None else found.passed


# Checks whose advice names a cause; their recommendations come first.
_CAUSES = (RUN_COMPLETE, NO_FAILURES, ERROR_BUDGET, OUTPUTS_MATCH, NO_RESPONSE_CACHE)
WRONG_OUTPUTS = (
    "The server's answers differ from the reference's on the same inputs: its throughput is not "
    "this model's; output_check in result.json counts the kinds"
)
CACHED = (
    "A repeated sample is answered much faster than unique ones: disable the response cache "
    "(response_cache in the model config) or measure with unique samples only"
)


def with_check(verdict: Verdict, check: Check) -> Verdict:
    """The verdict with one more check (the output and cache checks, judged after the run)."""
    return make_verdict(
        verdict.scenario,
        (*verdict.checks, check),
        verdict.early_stopping,
        verdict.early_stopping_estimate,
        verdict.error_budget,
        verdict.partial,
    )


def make_verdict(
    scenario: str,
    checks: Sequence[Check],
    early_stopping: EarlyStopping | None = None,
    early_stopping_estimate: EarlyStoppingEstimate | None = None,
    error_budget: float | None = None,
    partial: bool = False,
) -> Verdict:
    """Recommendations: those of the failed cause checks (run complete, failures) first, then the
    others in check order, each text once."""
    failed = [c for c in checks if not c.passed]
    ordered = [c for name in _CAUSES for c in failed if c.name == name] + [
        c for c in failed if c.name not in _CAUSES
    ]
    recommendations: list[str] = []
    for c in ordered:
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
        rules=MLPERF_RULES if error_budget is None else ERROR_BUDGET_RULES,
        error_budget=error_budget,
        partial=partial,
    )


def fmt_pct(percentile: float) -> str:
    """0.99 -> 'p99', 0.999 -> 'p99.9'."""
    return f"p{percentile * 100:g}"


def fmt_share(share: float) -> str:
    """0.004 -> '0.4 %', 0.01 -> '1 %' (3 significant figures)."""
    return f"{share * 100:.3g} %"


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


# --- failures ----------------------------------------------------------------------------------


def failed_text(summary: Summary) -> str:
    """'1017 failed', '17 unanswered' or '1000 failed and 17 unanswered' ('' when none)."""
    parts = []
    if summary.errors:
        parts.append(f"{summary.errors} failed")
    if summary.unanswered:
        parts.append(f"{summary.unanswered} unanswered")
    return " and ".join(parts)


def server_fault_advice(summary: Summary, interrupted: bool = False) -> str:
    """What happened, from the records: 'The server failed 1017 of 1469 queries, from t=4.5 s
    (first failure); fix the server before judging latency.' ('' when nothing failed).

    After an interruption the queries left unanswered were cut off by it, not by the server:
    only errors are blamed on the server then."""
    unanswered = 0 if interrupted else summary.unanswered
    if not summary.errors and not unanswered:
        return ""
    parts = []
    if summary.errors:
        parts.append(f"failed {summary.errors}")
    if unanswered:
        parts.append(f"left {unanswered} unanswered")
    first = summary.first_failure_ns
    when = f", from t={fmt_s(first)} (first failure)" if first >= 0 else ""
    return (
        f"The server {' and '.join(parts)} of {summary.issued} queries{when}; "
        "fix the server before judging latency."
    )


def _kinds(summary: Summary) -> str:
    kinds = ", ".join(f"{kind}: {count}" for kind, count in summary.errors_by_kind.items())
    return f" ({kinds})" if kinds else ""


def no_failures_check(summary: Summary, interrupted: bool = False) -> Check:
    """MLPerf rules: any issued query that failed or was never answered makes the run INVALID.
    (Never-issued queries are the "run complete" check's business.)"""
    ok = summary.failed == 0
    if ok:
        detail = "no failed queries: every issued query completed successfully"
    else:
        detail = (
            f"failed queries: {summary.errors} failed{_kinds(summary)}, "
            f"{summary.unanswered} never completed"
        )
    return Check(NO_FAILURES, ok, detail, "" if ok else server_fault_advice(summary, interrupted))


def error_budget_check(summary: Summary, budget: float, interrupted: bool = False) -> Check:
    """Error-budget rules: failed + unanswered ≤ budget × issued queries."""
    if not 0.0 <= budget <= 1.0:
        raise ValueError(f"error budget must be in [0, 1], got {budget}")
    failed, issued = summary.failed, summary.issued
    share = failed / issued if issued else 0.0
    ok = failed <= budget * issued
    counts = f"{failed} of {issued} issued queries failed or unanswered{_kinds(summary)}"
    if ok:
        detail = f"errors within budget: {fmt_share(share)} ≤ {fmt_share(budget)} ({counts})"
    else:
        detail = f"errors over budget: {fmt_share(share)} > {fmt_share(budget)} ({counts})"
    return Check(ERROR_BUDGET, ok, detail, "" if ok else server_fault_advice(summary, interrupted))


def failures_check(
    summary: Summary, error_budget: float | None, interrupted: bool = False
) -> Check:
    """The failures rule: "no failed queries" (MLPerf, error_budget None) or "error budget"."""
    if error_budget is None:
        return no_failures_check(summary, interrupted)
    return error_budget_check(summary, error_budget, interrupted)


def failures_dominate(summary: Summary, sorted_latencies_ns: np.ndarray, percentile: float) -> bool:
    """True when the failed/unanswered queries alone put the percentile at +∞: more than the
    percentile's tail failed, so no longer run (and no lower rate) at that failure rate can pass,
    and advice about latency or query counts would mislead."""
    if not summary.failed:
        return False
    value = exact_percentile_with_failures(sorted_latencies_ns, summary.failed, percentile)
    return value is None


# --- the client and the run --------------------------------------------------------------------


def _allowance_origin(lag: SendLagStats) -> str:
    """Where the allowed send lag came from, in words."""
    late = fmt_ms(lag.late_threshold_ns)
    if lag.bound_ns <= 0:
        return f"the {late} late threshold"
    share = f"{lag.lag_fraction * 100:g} %"
    relative = lag.lag_fraction * lag.bound_ns
    if relative <= lag.late_threshold_ns:
        return (
            f"the {late} floor; {share} of the {fmt_ms(lag.bound_ns)} bound is {fmt_ms(relative)}"
        )
    return f"{share} of the {fmt_ms(lag.bound_ns)} bound"


def lag_cannot_move_verdict(
    lag: SendLagStats, sorted_latencies_ns: np.ndarray, target_latency_ns: int
) -> bool:
    """At most 1 % of the sends were late, and no answered query lies within the largest lag
    above the bound: then removing every query's lag (latency is measured from the schedule, so
    lag only adds) leaves each query on the same side of the bound, and the performance
    constraint and early stopping (which read only that) come out the same.

    Why (#26): the send-lag p99 is sorted[floor(0.99·n)], the largest lag when n < 200, so at
    20–40 QPS one send 1.02 ms late among 100 made a run client-bound (exit 5) whose verdict that
    millisecond could not change. The 1 % share still bounds how much the late sends can thin or
    bunch the arrivals the server saw."""
    if lag.count == 0 or lag.over_allowed_share > MAX_LATE_SHARE:
        return False
    low = int(np.searchsorted(sorted_latencies_ns, target_latency_ns, "right"))
    high = int(np.searchsorted(sorted_latencies_ns, target_latency_ns + lag.max_ns, "right"))
    return high == low


def client_check(
    summary: Summary,
    sorted_latencies_ns: np.ndarray | None = None,
    target_latency_ns: int = 0,
) -> Check:
    """Kept up: send-lag p99 ≤ allowed lag and ≤ 1 % of the queries sent later than it
    (stats.allowed_send_lag_ns: max(late threshold, fraction × bound)); with the latencies and
    the bound (Server), also when the late sends could not have moved the verdict
    (lag_cannot_move_verdict)."""
    lag = summary.send_lag
    allowed = lag.allowed_lag_ns
    numbers = (
        f"send-lag p99 {fmt_ms(lag.p99_ns)} {'≤' if lag.p99_ns <= allowed else '>'} "
        f"{fmt_ms(allowed)} allowed ({_allowance_origin(lag)}), "
        f"{lag.over_allowed_share * 100:.2f} % issued more than {fmt_ms(allowed)} late"
    )
    if lag.kept_up:
        return Check(CLIENT_KEPT_UP, True, f"client kept up with its schedule ({numbers})")
    if (
        sorted_latencies_ns is not None
        and target_latency_ns > 0
        and lag_cannot_move_verdict(lag, sorted_latencies_ns, target_latency_ns)
    ):
        return Check(
            CLIENT_KEPT_UP,
            True,
            f"client kept up with its schedule ({numbers}; the {lag.over_allowed_count} late "
            f"send(s) could not move the verdict: no answer within {fmt_ms(lag.max_ns)} above "
            f"the {fmt_ms(target_latency_ns)} bound)",
        )
    if lag.count == 0:
        numbers = f"none of {summary.scheduled} scheduled queries was issued"
    return Check(
        CLIENT_KEPT_UP,
        False,
        f"client-bound: the load generator fell behind its schedule ({numbers})",
        CLIENT_BOUND,
    )


def run_stopped_early(summary: Summary | None, interrupted: bool, stop_reason: str = "") -> bool:
    """The run did not play out as scheduled: interrupted (Ctrl-C, SIGTERM), given a stop reason
    (max duration, an abort, the drain timeout leaving queries unanswered), or queries were
    scheduled and never issued."""
    return interrupted or bool(stop_reason) or (summary is not None and summary.not_issued > 0)


def _interruption(stop_reason: str) -> str:
    """'interrupted (Ctrl-C)' -> '(Ctrl-C)'; another reason -> '(reason)'; '' -> ''."""
    rest = stop_reason.strip()
    if rest.startswith("interrupted"):
        rest = rest.removeprefix("interrupted").strip()
        if rest.startswith("(") and rest.endswith(")"):
            return rest
    return f"({rest})" if rest else ""


def stop_advice(summary: Summary | None, interrupted: bool, stop_reason: str = "") -> str:
    """What cut the run short, how far it got, and that it is partial ('' if it was not cut)."""
    if not run_stopped_early(summary, interrupted, stop_reason):
        return ""
    after = f" after {fmt_s(summary.duration_ns)}" if summary is not None else ""
    if interrupted:
        how = _interruption(stop_reason)
        return (
            f"The run was interrupted{' ' + how if how else ''}{after}; this is a partial result."
        )
    why = f" ({stop_reason})" if stop_reason else ""
    if summary is not None and summary.not_issued:
        return (
            f"The run stopped early{why}{after}, with {summary.not_issued} of "
            f"{summary.scheduled} scheduled queries never issued; this is a partial result."
        )
    if summary is not None and summary.unanswered:
        why = "" if "unanswered" in stop_reason else why  # the runner's reason says it already
        return (
            f"The run ended{why}{after} with {summary.unanswered} queries still unanswered "
            "after the drain timeout: the server stalled or dropped them; this is a partial "
            "result."
        )
    return f"The run stopped early{why}{after}; this is a partial result."


def run_complete_check(
    interrupted: bool, stop_reason: str = "", summary: Summary | None = None
) -> Check:
    """Fails whenever the run stopped early (run_stopped_early), naming what happened."""
    if not run_stopped_early(summary, interrupted, stop_reason):
        return Check(RUN_COMPLETE, True, "run completed as scheduled")
    what: list[str] = [stop_reason] if stop_reason else []
    if summary is not None and summary.not_issued:
        what.append(f"{summary.not_issued} of {summary.scheduled} scheduled queries never issued")
    why = f" ({'; '.join(what)})" if what else ""
    head = "run interrupted" if interrupted else "run stopped early"
    advice = stop_advice(summary, interrupted, stop_reason) or RERUN
    return Check(RUN_COMPLETE, False, f"{head}; partial result{why}", advice)


def _quiet(check: Check) -> Check:
    """The check without its advice (the advice would follow from a cause named elsewhere)."""
    return replace(check, recommendation="")


def _sorted(latencies_ns: np.ndarray, expected: int) -> np.ndarray:
    values = np.sort(np.asarray(latencies_ns, dtype=np.int64))
    if len(values) != expected:
        raise ValueError(
            f"{len(values)} latencies given but the summary has {expected} successful queries"
        )
    return values


# --- Server ------------------------------------------------------------------------------------


def performance_check(
    summary: Summary,
    sorted_latencies_ns: np.ndarray,
    target_latency_ns: int,
    percentile: float,
    interrupted: bool = False,
) -> Check:
    """sorted[floor(n·p)] ≤ target over every issued query, the failed and unanswered ones at +∞.

    Without failures this is LoadGen's rule over the successes, with the same text.
    """
    label = fmt_pct(percentile)
    failed = summary.failed
    n = len(sorted_latencies_ns) + failed
    target = fmt_ms(target_latency_ns)
    if n == 0:
        return Check(
            PERFORMANCE,
            False,
            f"performance constraint: no query answered, so no {label}",
            REDUCE_QPS,
        )
    value = exact_percentile_with_failures(sorted_latencies_ns, failed, percentile)
    ok = value is not None and value <= target_latency_ns
    sign = "≤" if ok else ">"
    shown = "∞" if value is None else fmt_ms(value)
    if failed:
        detail = (
            f"performance constraint: {label} over {n} queries ({failed_text(summary)} counted as "
            f"over the bound) = {shown} {sign} {target} target"
        )
    else:
        detail = f"performance constraint: {label} {shown} {sign} {target} target"
    if ok:
        advice = ""
    elif value is None:
        advice = server_fault_advice(summary, interrupted)  # '' if the interruption did it
    else:
        advice = REDUCE_QPS
    return Check(PERFORMANCE, ok, detail, advice)


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
    error_budget: float | None = None,
) -> Verdict:
    """The Server verdict. `latencies_ns`: completion − scheduled time of the successful queries
    (records.latency_from_scheduled_ns()), in any order.

    The performance constraint's percentile is over every issued query, the failed and unanswered
    ones at +∞. Early stopping counts n = every scheduled query and t = successful queries over the
    target plus every failed or never-completed one (never issued included). `error_budget`: the
    share of issued queries allowed to fail (None = MLPerf: none). The client check uses the
    summary's allowed send lag (summarize(..., bound_ns=target_latency_ns) for the relative rule).
    """
    if summary.send_lag.bound_ns not in (0, target_latency_ns):
        bound = fmt_ms(summary.send_lag.bound_ns)
        raise ValueError(
            f"the summary's send-lag allowance was taken from a {bound} bound, "
            f"not the {fmt_ms(target_latency_ns)} target"
        )
    latencies = _sorted(latencies_ns, summary.completed_ok)
    cut = run_stopped_early(summary, interrupted, stop_reason)
    dominated = failures_dominate(summary, latencies, percentile)
    checks: list[Check] = [
        performance_check(summary, latencies, target_latency_ns, percentile, interrupted)
    ]

    checks.append(
        min_duration_check(
            summary.final_scheduled_ns, min_duration_ns, "schedule spans", SERVER_MIN_DURATION
        )
    )
    checks.append(min_queries_check(summary.issued, min_query_count))

    label = fmt_pct(percentile)
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
    if dominated and not stopping.passed:
        es_advice = server_fault_advice(summary, interrupted)
    checks.append(Check(EARLY_STOPPING, stopping.passed, es_detail, es_advice))
    checks.append(failures_check(summary, error_budget, interrupted))
    checks.append(client_check(summary, latencies, target_latency_ns))
    checks.append(run_complete_check(interrupted, stop_reason, summary))
    if cut:
        checks = [
            _quiet(c) if c.name in (MIN_DURATION, MIN_QUERIES, EARLY_STOPPING) else c
            for c in checks
        ]
    return make_verdict(
        "Server", checks, early_stopping=stopping, error_budget=error_budget, partial=cut
    )


# --- Offline -----------------------------------------------------------------------------------


def judge_offline(
    summary: Summary,
    min_duration_ns: int,
    min_query_count: int = 1,
    interrupted: bool = False,
    stop_reason: str = "",
    error_budget: float | None = None,
) -> Verdict:
    """The Offline verdict: time from the first scheduled query to the last completion (LoadGen's
    max latency of its one coalesced query) must reach the minimum duration; no percentile bound,
    no early stopping. The client-kept-up rule does not apply (every query is due at once)."""
    measured = max(summary.final_completed_ns - summary.first_scheduled_ns, 0)
    cut = run_stopped_early(summary, interrupted, stop_reason)
    checks = [
        min_duration_check(measured, min_duration_ns, "last completion at", OFFLINE_MIN_DURATION),
        min_queries_check(summary.issued, min_query_count),
        failures_check(summary, error_budget, interrupted),
        run_complete_check(interrupted, stop_reason, summary),
    ]
    if cut:
        checks = [_quiet(c) if c.name in (MIN_DURATION, MIN_QUERIES) else c for c in checks]
    return make_verdict("Offline", checks, error_budget=error_budget, partial=cut)


# --- SingleStream / MultiStream ----------------------------------------------------------------


def latency_bound_check(estimate_ns: int, target_latency_ns: int, percentile: float) -> Check:
    """SingleStream/MultiStream with a target latency (our addition): the early-stopping estimate
    of the percentile must not exceed it. The sign tells the truth either way."""
    ok = estimate_ns <= target_latency_ns
    return Check(
        LATENCY_BOUND,
        ok,
        f"early-stopping {fmt_pct(percentile)} estimate {fmt_ms(estimate_ns)} "
        f"{'≤' if ok else '>'} {fmt_ms(target_latency_ns)} bound",
        "" if ok else LATENCY_BOUND_NOT_MET,
    )


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
    error_budget: float | None,
    target_latency_ns: int,
) -> Verdict:
    latencies = _sorted(latencies_ns, summary.completed_ok)
    estimate = stream_early_stopping_estimate(latencies, percentile, confidence, tolerance)
    cut = run_stopped_early(summary, interrupted, stop_reason)
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
        if failures_dominate(summary, latencies, percentile):
            advice = server_fault_advice(summary, interrupted)
    checks = [
        min_duration_check(
            summary.final_issued_ns, min_duration_ns, "last query issued at", STREAM_MIN_DURATION
        ),
        min_queries_check(summary.issued, min_query_count),
        Check(EARLY_STOPPING, estimate.passed, es_detail, advice),
        failures_check(summary, error_budget, interrupted),
        run_complete_check(interrupted, stop_reason, summary),
    ]
    if target_latency_ns and estimate.estimate_ns is not None:
        checks.append(latency_bound_check(estimate.estimate_ns, target_latency_ns, percentile))
    if cut:
        checks = [
            _quiet(c) if c.name in (MIN_DURATION, MIN_QUERIES, EARLY_STOPPING) else c
            for c in checks
        ]
    return make_verdict(
        scenario,
        checks,
        early_stopping_estimate=estimate,
        error_budget=error_budget,
        partial=cut,
    )


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
    error_budget: float | None = None,
    target_latency_ns: int = 0,
) -> Verdict:
    """SingleStream (closed loop, one sample per query): `latencies_ns` are completion − issue.
    The result is the early-stopping estimate of the percentile (p90 by default).
    `target_latency_ns` (0 = none) adds the "latency bound (loadtest)" check on the estimate."""
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
        error_budget,
        target_latency_ns,
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
    error_budget: float | None = None,
    target_latency_ns: int = 0,
) -> Verdict:
    """MultiStream (closed loop, several samples per query): `latencies_ns` are per-query
    latencies (issue -> last sample done). The result is the early-stopping p99 estimate.
    `target_latency_ns` (0 = none) adds the "latency bound (loadtest)" check on the estimate."""
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
        error_budget,
        target_latency_ns,
    )


def expected_min_queries(percentile: float, confidence: float = DEFAULT_CONFIDENCE) -> int:
    """Queries a flawless Server run needs for early stopping: h*(0) (459 at p99, c = 0.99).

    Handy for warning users before a run; equals ceil(log(1 − c) / log(p)) up to rounding.
    """
    return early_stopping_min_passes(0, percentile, confidence)


__all__ = [
    "CLIENT_KEPT_UP",
    "EARLY_STOPPING",
    "ERROR_BUDGET",
    "ERROR_BUDGET_RULES",
    "LATENCY_BOUND",
    "MIN_DURATION",
    "MIN_QUERIES",
    "MLPERF_RULES",
    "NO_FAILURES",
    "PERFORMANCE",
    "RUN_COMPLETE",
    "Check",
    "EarlyStopping",
    "EarlyStoppingEstimate",
    "Verdict",
    "early_stopping_min_passes",
    "early_stopping_odds",
    "error_budget_check",
    "expected_min_queries",
    "failures_check",
    "failures_dominate",
    "judge_multi_stream",
    "judge_offline",
    "judge_server",
    "judge_single_stream",
    "latency_bound_check",
    "make_verdict",
    "no_failures_check",
    "performance_check",
    "run_complete_check",
    "run_stopped_early",
    "server_early_stopping",
    "server_fault_advice",
    "stop_advice",
    "stream_early_stopping_estimate",
]
