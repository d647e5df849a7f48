"""Raw run outcome -> (Summary, Verdict) for each scenario: where stats meets the MLPerf rules."""

from __future__ import annotations

from loadtest.runner import RunOutcome
from loadtest.settings import ServerSettings
from loadtest.stats import Summary, summarize
from loadtest.validity import Verdict, judge_server


def interpret_server(settings: ServerSettings, outcome: RunOutcome) -> tuple[Summary, Verdict]:
    summary = summarize(outcome.records, outcome.duration_ns, settings.late_threshold_ns)
    verdict = judge_server(
        summary,
        outcome.records.latency_from_scheduled_ns(),
        target_latency_ns=settings.target_latency_ns,
        percentile=settings.percentile,
        min_duration_ns=settings.min_duration_ns,
        min_query_count=settings.min_query_count,
        confidence=settings.early_stopping_confidence,
        interrupted=outcome.interrupted,
        stop_reason=outcome.stop_reason,
    )
    return summary, verdict
