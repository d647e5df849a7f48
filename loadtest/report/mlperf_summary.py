"""Summary + Verdict -> text in the shape of LoadGen's `mlperf_log_summary.txt`.

Why mimic it: people and scripts that read MLPerf results already know where to look ("Result is",
"Completed samples per second", "99.00 percentile latency (ns)"), and submission tooling greps for
exactly those lines. The layout, labels and number formats follow LoadGen's results.cc LogSummary
(modern format: Server puts "Completed samples per second" up top and "Scheduled samples per
second" under Additional Stats; latencies are integer ns; rates use two decimals).

What we add, kept out of LoadGen's own lines so parsers are unaffected: our extra validity checks
(no failed queries, client kept up, run complete) as further indented Yes/NO lines under the four
LoadGen ones, and a "loadtest Additional Stats" section with the send lag, the failures and the
latency from actual send (what a coordinated-omission tool would have reported).

Pure: returns a string; the caller writes the file.
"""

from __future__ import annotations

from collections.abc import Mapping

from loadtest.core.units import NS_PER_S, ns_to_s
from loadtest.rules.stats import LatencyStats, Summary
from loadtest.rules.tokens import TokenFigures
from loadtest.rules.validity import (
    CLIENT_KEPT_UP,
    EARLY_STOPPING,
    ERROR_BUDGET,
    MIN_DURATION,
    MIN_QUERIES,
    NO_FAILURES,
    PERFORMANCE,
    RUN_COMPLETE,
    EarlyStopping,
    Verdict,
)
from loadtest.scenarios.mlperf import registry
from loadtest.scenarios.mlperf.registry import ExtraStats, Headline, ScenarioEntry

RULE = "=" * 48
LABEL_WIDTH = 32  # LoadGen pads "Min latency (ns)" and friends to this width before " : "

# Our checks beyond LoadGen's four, with the label they get in the summary.
EXTRA_CHECKS = (
    (NO_FAILURES, "No failed queries (loadtest)"),
    (ERROR_BUDGET, "Errors within the error budget (loadtest)"),
    (CLIENT_KEPT_UP, "Client kept up with schedule (loadtest)"),
    (RUN_COMPLETE, "Run completed (loadtest)"),
)


def _yes(passed: bool | None) -> str:
    return "NO" if passed is False else "Yes"


def _line(label: str, value: object) -> str:
    return f"{label:<{LABEL_WIDTH}}: {value}"


def _heading(title: str) -> list[str]:
    return ["", RULE, title, RULE]


def _latency_lines(stats: LatencyStats) -> list[str]:
    lines = [
        _line("Min latency (ns)", stats.min_ns),
        _line("Max latency (ns)", stats.max_ns),
        _line("Mean latency (ns)", stats.mean_ns),
    ]
    for percentile, value in stats.percentiles().items():
        lines.append(_line(f"{percentile * 100:.2f} percentile latency (ns)", value))
    return lines


def _token_lines(scenario: ScenarioEntry, tokens: TokenFigures) -> list[str]:
    """LoadGen's token lines under Additional Stats (results.cc, `use_token_latencies`): the
    token rate, then first-token latency and time per output token (min, max, mean,
    percentiles); "time to output token" is LoadGen's own wording of the TPOT percentile lines.
    A throughput scenario (Offline) reports only "Tokens per second", as LoadGen does."""
    throughput = scenario.headline is Headline.THROUGHPUT
    label = "Tokens per second" if throughput else "Completed tokens per second"
    lines = ["", _line(label, f"{tokens.completed_tokens_per_s:.2f}")]
    if throughput:
        return lines
    ttft, tpot = tokens.ttft, tokens.tpot
    lines += [
        _line("Min First Token latency (ns)", ttft.min_ns),
        _line("Max First Token latency (ns)", ttft.max_ns),
        _line("Mean First Token latency (ns)", ttft.mean_ns),
    ]
    for percentile, value in ttft.percentiles().items():
        lines.append(_line(f"{percentile * 100:.2f} percentile first token latency (ns)", value))
    lines += [
        "",
        _line("Min Time per Output Token (ns)", tpot.min_ns),
        _line("Max Time per Output Token (ns)", tpot.max_ns),
        _line("Mean Time per Output Token (ns)", tpot.mean_ns),
    ]
    for percentile, value in tpot.percentiles().items():
        lines.append(_line(f"{percentile * 100:.2f} percentile time to output token (ns)", value))
    return lines


def _parameter_value(value: object) -> str:
    """LoadGen prints bools as 0/1 and doubles with iostream's default (6 significant digits)."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _parameter_line(key: str, value: object) -> str:
    # LoadGen writes "target_latency (ns): 15000000" but "min_query_count : 100".
    separator = ": " if key.endswith(")") else " : "
    return f"{key}{separator}{_parameter_value(value)}"


def _headline(scenario: ScenarioEntry, summary: Summary, verdict: Verdict) -> list[str]:
    if scenario.headline is Headline.COMPLETED_RATE:
        return [f"Completed samples per second    : {summary.completed_samples_per_s:.2f}"]
    if scenario.headline is Headline.THROUGHPUT:
        return [f"Samples per second: {summary.throughput_samples_per_s:g}"]
    estimate = verdict.early_stopping_estimate
    percentile = estimate.percentile if estimate is not None else scenario.default_percentile
    value = summary.latency_from_issue.percentiles().get(percentile)
    if value is None:  # not one of the six printed percentiles: show the estimate instead
        value = estimate.estimate_ns if estimate and estimate.estimate_ns is not None else 0
    return [f"{percentile * 100:.0f}th percentile latency (ns) : {value}"]


def _early_stopping_text(verdict: Verdict) -> str | None:
    if verdict.early_stopping is not None:
        return verdict.early_stopping.text
    if verdict.early_stopping_estimate is not None:
        return verdict.early_stopping_estimate.text
    return None


def _additional_stats(scenario: ScenarioEntry, summary: Summary) -> list[str]:
    lines = _heading("Additional Stats")
    kind = scenario.extra_stats
    if kind is ExtraStats.SCHEDULED_RATE_AND_LATENCY:
        lines.append(f"Scheduled samples per second : {summary.scheduled_samples_per_s:.2f}")
        lines += _latency_lines(summary.latency)
    elif kind is ExtraStats.LATENCY:
        lines += _latency_lines(summary.latency)
    elif kind is ExtraStats.STREAM_RATES_AND_LATENCY:
        stats = summary.latency_from_issue
        issued_s = ns_to_s(summary.final_issued_ns)
        with_overhead = (stats.count - 1) / issued_s if issued_s > 0 and stats.count > 1 else 0.0
        without = NS_PER_S / stats.mean_ns if stats.mean_ns > 0 else 0.0
        lines.append(f"QPS w/ loadgen overhead         : {with_overhead:.2f}")
        lines.append(f"QPS w/o loadgen overhead        : {without:.2f}")
        lines.append("")
        lines += _latency_lines(stats)
    else:  # ExtraStats.PER_QUERY_LATENCY
        lines.append("Per-query latency:  ")
        lines += _latency_lines(summary.latency_from_issue)
    return lines


def _loadtest_stats(scenario: ScenarioEntry, summary: Summary) -> list[str]:
    lag = summary.send_lag
    lines = _heading("loadtest Additional Stats (not part of LoadGen)")
    lines += [
        _line("Queries scheduled", summary.scheduled),
        _line("Queries issued", summary.issued),
        _line("Queries completed", summary.completed_ok),
        _line("Queries failed", summary.errors),
        _line("Queries never completed", summary.pending),
    ]
    for kind, count in summary.errors_by_kind.items():
        lines.append(_line(f"  failed: {kind}", count))
    lines += [
        _line("Send lag p50 (ns)", lag.p50_ns),
        _line("Send lag p99 (ns)", lag.p99_ns),
        _line("Send lag p99.9 (ns)", lag.p999_ns),
        _line("Send lag max (ns)", lag.max_ns),
        _line(f"Issued > {lag.late_threshold_ns} ns late", f"{lag.late_share * 100:.2f} %"),
        _line("Client kept up with schedule", _yes(lag.kept_up)),
    ]
    if scenario.send_origin_differs:
        lines.append("Latency from actual send (what a coordinated-omission tool reports):")
        lines += _latency_lines(summary.latency_from_issue)
    if summary.latency_hdr_out_of_range:
        lines.append(_line("Latencies outside HDR range", summary.latency_hdr_out_of_range))
    return lines


def render_mlperf_summary(
    *,
    sut_name: str,
    scenario: str,
    summary: Summary,
    verdict: Verdict,
    test_parameters: Mapping[str, object],
    mode: str = "PerformanceOnly",
    tokens: TokenFigures | None = None,
    token_stopping: Mapping[str, EarlyStopping] | None = None,
    token_constraints_met: bool | None = None,
) -> str:
    """The summary text. `scenario` is LoadGen's name: Server, Offline, SingleStream, MultiStream.

    `token_stopping` ("TTFT", "TPOT" -> early stopping on that array, a run under token bounds):
    LoadGen then judges early stopping on those arrays, not on the end-to-end latency, and prints
    "TTFT Early Stopping Result:" and "TPOT Early Stopping Result:" (results.cc, with
    use_token_latencies) instead of "Early Stopping Result:"; `token_constraints_met` (p TTFT and
    p TPOT within their bounds) is then its performance constraint.

    `test_parameters` are printed in order under "Test Parameters Used" (LoadGen's keys, e.g.
    target_qps, "target_latency (ns)", "min_duration (ms)", min_query_count, schedule_rng_seed).
    """
    lines = [
        RULE,
        "MLPerf Results Summary",
        RULE,
        f"SUT name : {sut_name}",
        f"Scenario : {scenario}",
        f"Mode     : {mode}",
    ]
    entry = registry.entry(scenario)
    lines += _headline(entry, summary, verdict)
    lines.append(f"Result is : {'VALID' if verdict.valid else 'INVALID'}")
    if entry.has_performance_constraint:
        constraints_met = (
            token_constraints_met
            if token_constraints_met is not None
            else verdict.passed(PERFORMANCE)
        )
        lines.append(f"  Performance constraints satisfied : {_yes(constraints_met)}")
    lines.append(f"  Min duration satisfied : {_yes(verdict.passed(MIN_DURATION))}")
    lines.append(f"  Min queries satisfied : {_yes(verdict.passed(MIN_QUERIES))}")
    stopping_met = (
        all(e.passed for e in token_stopping.values())
        if token_stopping
        else verdict.passed(EARLY_STOPPING)
    )
    lines.append(f"  Early stopping satisfied: {_yes(stopping_met)}")
    for name, label in EXTRA_CHECKS:
        passed = verdict.passed(name)
        if passed is not None:
            lines.append(f"  {label} : {_yes(passed)}")
    if verdict.error_budget is not None:
        lines.append(
            f"  Rules : error budget of {verdict.error_budget * 100:g} % of issued queries "
            "(not MLPerf's: there any failed query is INVALID)"
        )
    if not verdict.valid:
        lines.append("Recommendations:")
        lines += [f" * {text}" for text in verdict.recommendations]
        lines += [f" * INVALID because {reason}" for reason in verdict.reasons]
    if token_stopping:
        for name, stopping in token_stopping.items():
            lines.append(f"{name} Early Stopping Result:")
            lines.append(stopping.text)
    else:
        early_stopping = _early_stopping_text(verdict)
        if early_stopping is not None:
            lines.append("Early Stopping Result:")
            lines.append(early_stopping)

    lines += _additional_stats(entry, summary)
    if tokens is not None:
        lines += _token_lines(entry, tokens)
    lines += _loadtest_stats(entry, summary)
    lines += _heading("Test Parameters Used")
    lines += [_parameter_line(key, value) for key, value in test_parameters.items()]
    return "\n".join(lines) + "\n"
