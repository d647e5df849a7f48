"""Raw run outcome -> (Summary, Verdict) for each scenario: where stats meets the MLPerf rules.

scenarios.mlperf.registry picks the function by the run's Scenario; callers that know their scenario
(find-peak, compare: always Server) call theirs directly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from loadtest.core.settings import (
    OfflineSettings,
    Scenario,
    ServerSettings,
    StreamSettings,
)
from loadtest.engine.runner import RunOutcome
from loadtest.rules.stats import Summary, summarize
from loadtest.rules.tokens import TokenBounds, token_checks
from loadtest.rules.validity import (
    EARLY_STOPPING,
    PERFORMANCE,
    Check,
    Verdict,
    judge_multi_stream,
    judge_offline,
    judge_server,
    judge_single_stream,
    make_verdict,
)

TOKEN_ADVICE = "Reduce the rate: p TTFT or p TPOT is over its bound"


def interpret_server(settings: ServerSettings, outcome: RunOutcome) -> tuple[Summary, Verdict]:
    """The client's allowed send lag is relative to the latency bound (client_lag_fraction)."""
    summary = summarize(
        outcome.records,
        outcome.duration_ns,
        settings.late_threshold_ns,
        bound_ns=settings.target_latency_ns,
        client_lag_fraction=settings.client_lag_fraction,
    )
    latencies = outcome.records.latency_from_scheduled_ns()
    return summary, _judged(judge_server, summary, latencies, settings, outcome)


def token_bounds(settings: ServerSettings) -> TokenBounds:
    """The Server run's token bounds (--ttft-bound, --tpot-bound, --mlperf-model) as the rule."""
    return TokenBounds(
        settings.ttft_bound_ns,
        settings.tpot_bound_ns,
        settings.percentile,
        settings.token_bounds_source,
        settings.early_stopping_confidence,
    )


def interpret_server_tokens(
    settings: ServerSettings, outcome: RunOutcome
) -> tuple[Summary, Verdict]:
    """LoadGen's LLM Server rule (its LLM keys set target_latency = 0): the Server verdict with
    the end-to-end bound and that bound's early stopping replaced by the token checks (p TTFT
    from the scheduled time, p TPOT, early stopping on each, no answer of ≤ 1 token).
    `settings.target_latency_ns` stands in only for the client's allowed send lag."""
    summary, verdict = interpret_server(settings, outcome)
    checks = [c for c in verdict.checks if c.name not in (PERFORMANCE, EARLY_STOPPING)]
    checks += [
        Check(c.name, c.passed, c.detail, "" if c.passed else TOKEN_ADVICE)
        for c in token_checks(outcome.records, token_bounds(settings))
    ]
    judged = make_verdict(
        verdict.scenario, checks, None, None, verdict.error_budget, verdict.partial
    )
    return summary, judged


def interpret_offline(settings: OfflineSettings, outcome: RunOutcome) -> tuple[Summary, Verdict]:
    summary = summarize(outcome.records, outcome.duration_ns, settings.late_threshold_ns)
    verdict = judge_offline(
        summary,
        min_duration_ns=settings.min_duration_ns,
        min_query_count=1,
        interrupted=outcome.interrupted,
        stop_reason=outcome.stop_reason,
        error_budget=settings.error_budget,
    )
    return summary, verdict


def interpret_stream(settings: StreamSettings, outcome: RunOutcome) -> tuple[Summary, Verdict]:
    """Stream latencies are from the actual issue (scheduled == issued in a closed loop)."""
    summary = summarize(outcome.records, outcome.duration_ns, settings.late_threshold_ns)
    judge = (
        judge_single_stream if settings.scenario is Scenario.SINGLE_STREAM else judge_multi_stream
    )
    latencies = outcome.records.latency_from_issue_ns()
    return summary, _judged(judge, summary, latencies, settings, outcome)


def _judged(
    judge: Callable[..., Verdict],
    summary: Summary,
    latencies_ns: np.ndarray,
    settings: ServerSettings | StreamSettings,
    outcome: RunOutcome,
) -> Verdict:
    """A latency-bound scenario's verdict (Server, SingleStream, MultiStream): their judges take
    the same rules from the same settings, over the latencies the caller measures from."""
    return judge(
        summary,
        latencies_ns,
        target_latency_ns=settings.target_latency_ns,
        percentile=settings.percentile,
        min_duration_ns=settings.min_duration_ns,
        min_query_count=settings.min_query_count,
        confidence=settings.early_stopping_confidence,
        interrupted=outcome.interrupted,
        stop_reason=outcome.stop_reason,
        error_budget=settings.error_budget,
    )
