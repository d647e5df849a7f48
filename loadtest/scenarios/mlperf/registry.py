"""The one table of scenarios, keyed by the `Scenario` enum: how each is judged and how it reads.

Interpretation, the terminal tables and the MLPerf summary all look a scenario up here instead of
branching on its name, so adding a scenario is one entry (plus how it is played, in play.py), and
no renderer can disagree with another about which latency origin a scenario reports.

Each entry holds facts, not rendering: which Summary field carries the scenario's latency and
where that latency starts, what the MLPerf summary puts in its headline and "Additional Stats", and
which rows describe the run. Renderers in report/ turn these into text.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loadtest.core.settings import (
    OfflineSettings,
    Scenario,
    ScenarioSettings,
    ServerSettings,
    StreamSettings,
)
from loadtest.core.units import fmt_ms
from loadtest.engine.runner import RunOutcome
from loadtest.rules.stats import Summary
from loadtest.rules.validity import Verdict
from loadtest.scenarios.mlperf.interpret import (
    interpret_offline,
    interpret_server,
    interpret_stream,
)


class Headline(enum.Enum):
    """What LoadGen's summary puts under "Mode" for a scenario."""

    COMPLETED_RATE = "completed samples per second"  # Server
    THROUGHPUT = "samples per second"  # Offline
    LATENCY_PERCENTILE = "the reported latency percentile"  # SingleStream, MultiStream


class ExtraStats(enum.Enum):
    """Which block LoadGen prints under "Additional Stats"."""

    SCHEDULED_RATE_AND_LATENCY = "scheduled rate + latency"  # Server
    LATENCY = "latency"  # Offline
    STREAM_RATES_AND_LATENCY = "QPS with and without loadgen overhead + latency"  # SingleStream
    PER_QUERY_LATENCY = "per-query latency"  # MultiStream


@dataclass(frozen=True)
class LatencyColumn:
    """One latency origin shown for a scenario: its heading and the Summary field holding it."""

    heading: str
    field: str  # "latency" (from scheduled time) or "latency_from_issue" (from actual send)


class Tone(enum.Enum):
    PLAIN = "plain"
    WARN = "warn"  # worth a look: the figure may not mean what it seems
    BAD = "bad"  # the run did not measure what it set out to


@dataclass(frozen=True)
class Row:
    """One line describing a run: a label, plain text, and how alarming it is."""

    label: str
    text: str
    tone: Tone = Tone.PLAIN


@dataclass(frozen=True)
class ScenarioEntry:
    scenario: Scenario
    interpret: Callable[[Any, RunOutcome], tuple[Summary, Verdict]]
    latency_columns: tuple[LatencyColumn, ...]
    headline: Headline
    extra_stats: ExtraStats
    # LoadGen's performance-constraint line ("Performance constraints satisfied") is Server-only.
    has_performance_constraint: bool
    # Whether "latency from actual send" is also printed in our additional stats (for the open
    # scenarios the two origins differ; in a closed loop they are the same thing).
    send_origin_differs: bool
    default_percentile: float  # the percentile LoadGen reports when the verdict names none
    percentile: Callable[[Any], float]  # the percentile the run is judged on (0 = none)
    caption: Callable[[Any], str]
    describe: Callable[[Any, Summary, Verdict, RunOutcome], list[Row]]


def _server_caption(settings: ServerSettings) -> str:
    return f"bound: p{settings.percentile * 100:g} ≤ {fmt_ms(settings.target_latency_ns)}"


def _offline_caption(_settings: OfflineSettings) -> str:
    return "Offline has no latency bound; the result is throughput"


def _stream_caption(settings: StreamSettings) -> str:
    bound = f" ≤ {fmt_ms(settings.target_latency_ns)}" if settings.target_latency_ns else ""
    return f"reported: p{settings.percentile * 100:g}{bound} (early-stopping estimate above)"


def _describe_server(
    settings: ServerSettings, summary: Summary, _verdict: Verdict, outcome: RunOutcome
) -> list[Row]:
    lag = summary.send_lag
    kept_up = "yes" if summary.client_kept_up else "NO — client-bound"
    return [
        Row(
            "scheduled rate",
            f"{summary.scheduled_qps:,.2f} QPS as drawn ({settings.arrivals.describe()}, "
            f"seed {settings.schedule_seed})",
        ),
        Row("completed rate", f"{summary.completed_qps:,.2f} QPS"),
        Row("duration", f"{outcome.duration_ns / 1e9:,.2f} s (run start to last completion)"),
        Row(
            "client kept up",
            f"{kept_up}: send lag p50 {fmt_ms(lag.p50_ns)} / p99 {fmt_ms(lag.p99_ns)} / max "
            f"{fmt_ms(lag.max_ns)}; {lag.late_share * 100:.2f} % sent > "
            f"{fmt_ms(lag.late_threshold_ns)} late",
            Tone.PLAIN if summary.client_kept_up else Tone.BAD,
        ),
    ]


def _describe_offline(
    settings: OfflineSettings, summary: Summary, _verdict: Verdict, outcome: RunOutcome
) -> list[Row]:
    records = outcome.records
    busy_ns = (records.completed_ns - records.issued_ns)[records.ok].sum()
    mean_in_flight = float(busy_ns) / max(outcome.duration_ns, 1)
    starved = mean_in_flight < 0.9 * settings.max_in_flight
    note = " (below 90 % of the cap: the client may have starved the server)" if starved else ""
    qps = f"{settings.expected_qps:g} expected QPS"
    if (calibration := settings.calibration) is not None:
        qps = (
            f"{calibration.headroom:g} × {calibration.samples_per_s:,.1f} samples/s calibrated: "
            "closed loop, "
            f"{calibration.in_flight} in flight, {calibration.seconds:g} s"
        )
    return [
        Row(
            "throughput",
            f"{summary.throughput_samples_per_s:,.2f} samples/s "
            f"({summary.completed_ok * summary.samples_per_query} samples / time to last "
            "completion)",
        ),
        Row(
            "query",
            f"{settings.query_samples} samples = max(min queries, 1.1 × "
            f"{settings.min_duration_ns / 1e9:g} s × {qps}), "
            f"sent as {settings.requests} requests of ≤ {settings.batch_size}",
        ),
        Row(
            "in flight",
            f"mean {mean_in_flight:,.1f} of a cap of {settings.max_in_flight}{note}",
            Tone.WARN if starved else Tone.PLAIN,
        ),
    ]


def _describe_stream(
    settings: StreamSettings, summary: Summary, verdict: Verdict, _outcome: RunOutcome
) -> list[Row]:
    rows = [
        Row(
            "rate",
            f"{summary.completed_qps:,.2f} queries/s closed loop, one in flight, "
            f"{settings.samples_per_query} sample(s) per query",
        )
    ]
    estimate = verdict.early_stopping_estimate
    if estimate is not None:
        value = "—" if estimate.estimate_ns is None else fmt_ms(estimate.estimate_ns)
        rows.append(
            Row(
                f"p{settings.percentile * 100:g} early-stopping estimate",
                f"{value}  {estimate.text}",
            )
        )
    return rows


def _stream_entry(
    scenario: Scenario, extra_stats: ExtraStats, default_percentile: float
) -> ScenarioEntry:
    """SingleStream and MultiStream differ only in LoadGen's summary layout and default
    percentile: both are closed loops judged on the early-stopping estimate, latency from issue."""
    return ScenarioEntry(
        scenario=scenario,
        interpret=interpret_stream,
        latency_columns=(LatencyColumn("from issue\n(closed loop)", "latency_from_issue"),),
        headline=Headline.LATENCY_PERCENTILE,
        extra_stats=extra_stats,
        has_performance_constraint=False,
        send_origin_differs=False,
        default_percentile=default_percentile,
        percentile=lambda settings: settings.percentile,
        caption=_stream_caption,
        describe=_describe_stream,
    )


FROM_SCHEDULED = LatencyColumn("from scheduled time\n(MLPerf; includes queueing)", "latency")
FROM_SEND = LatencyColumn("from actual send\n(what perf_analyzer reports)", "latency_from_issue")

SCENARIOS: dict[Scenario, ScenarioEntry] = {
    Scenario.SERVER: ScenarioEntry(
        scenario=Scenario.SERVER,
        interpret=interpret_server,
        latency_columns=(FROM_SCHEDULED, FROM_SEND),
        headline=Headline.COMPLETED_RATE,
        extra_stats=ExtraStats.SCHEDULED_RATE_AND_LATENCY,
        has_performance_constraint=True,
        send_origin_differs=True,
        default_percentile=0.99,
        percentile=lambda settings: settings.percentile,
        caption=_server_caption,
        describe=_describe_server,
    ),
    Scenario.OFFLINE: ScenarioEntry(
        scenario=Scenario.OFFLINE,
        interpret=interpret_offline,
        latency_columns=(
            LatencyColumn("from t = 0\n(all due at start)", "latency"),
            LatencyColumn("from actual send", "latency_from_issue"),
        ),
        headline=Headline.THROUGHPUT,
        extra_stats=ExtraStats.LATENCY,
        has_performance_constraint=False,
        send_origin_differs=True,
        default_percentile=0.0,
        percentile=lambda _settings: 0.0,
        caption=_offline_caption,
        describe=_describe_offline,
    ),
    Scenario.SINGLE_STREAM: _stream_entry(
        Scenario.SINGLE_STREAM, ExtraStats.STREAM_RATES_AND_LATENCY, default_percentile=0.90
    ),
    Scenario.MULTI_STREAM: _stream_entry(
        Scenario.MULTI_STREAM, ExtraStats.PER_QUERY_LATENCY, default_percentile=0.99
    ),
}


def entry(scenario: Scenario | str) -> ScenarioEntry:
    """The entry for a Scenario or its LoadGen name ("Server", "Offline", ...)."""
    return SCENARIOS[Scenario(scenario)]


def interpret(settings: ScenarioSettings, outcome: RunOutcome) -> tuple[Summary, Verdict]:
    """Summary and verdict of a run, by its scenario's rules."""
    return entry(settings.scenario).interpret(settings, outcome)
