"""The final rich tables: each figure says what it is (origin, method, whether we kept up)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loadtest.report.results import ServerReport
from loadtest.stats import LatencyStats, Summary
from loadtest.validity import Verdict


def ms(ns: float) -> str:
    return f"{ns / 1e6:,.3f}"


def latency_table(summary: Summary, target_latency_ns: int, percentile: float) -> Table:
    table = Table(
        title=escape(f"Latency, ms — {summary.latency.method}, over successful queries"),
        title_justify="left",
    )
    table.add_column("statistic")
    table.add_column("from scheduled time\n(MLPerf; includes queueing)", justify="right")
    table.add_column("from actual send\n(what perf_analyzer reports)", justify="right", style="dim")
    scheduled, sent = summary.latency, summary.latency_from_issue

    def row(label: str, a: int, b: int, bold: bool = False) -> None:
        style = "bold" if bold else None
        table.add_row(label, ms(a), ms(b), style=style)

    row("min", scheduled.min_ns, sent.min_ns)
    row("mean", scheduled.mean_ns, sent.mean_ns)
    for p, label in (
        (0.5, "p50"),
        (0.9, "p90"),
        (0.95, "p95"),
        (0.97, "p97"),
        (0.99, "p99"),
        (0.999, "p99.9"),
    ):
        row(label, _pct(scheduled, p), _pct(sent, p), bold=abs(p - percentile) < 1e-9)
    row("max", scheduled.max_ns, sent.max_ns)
    table.caption = (
        f"bound: p{percentile * 100:g} ≤ {ms(target_latency_ns)} ms; "
        f"{scheduled.count} successful queries"
    )
    return table


def _pct(stats: LatencyStats, p: float) -> int:
    return stats.percentiles()[p]


def run_table(report: ServerReport) -> Table:
    summary = report.summary
    lag = summary.send_lag
    outcome = report.measurement.outcome
    table = Table(title="Run", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value")
    server = report.environment["server"]
    embedded = " — embedded Triton started by loadtest" if server["embedded"] else ""
    table.add_row("target", escape(server["description"]) + embedded)
    table.add_row(
        "queries",
        f"{summary.scheduled} scheduled, {summary.issued} issued, {summary.completed_ok} ok, "
        f"{summary.errors} failed, {summary.pending} never answered",
    )
    table.add_row(
        "scheduled rate",
        f"{summary.scheduled_qps:,.2f} QPS as drawn (requested {report.settings.qps:g}; Poisson, "
        f"seed {report.settings.schedule_seed})",
    )
    table.add_row("completed rate", f"{summary.completed_qps:,.2f} QPS")
    table.add_row(
        "duration", f"{outcome.duration_ns / 1e9:,.2f} s (first due time to last completion)"
    )
    kept = "[green]yes[/]" if summary.client_kept_up else "[bold red]NO — client-bound[/]"
    table.add_row(
        "client kept up",
        f"{kept}: send lag p50 {ms(lag.p50_ns)} / p99 {ms(lag.p99_ns)} / max {ms(lag.max_ns)} ms; "
        f"{lag.late_share * 100:.2f} % sent > {ms(lag.late_threshold_ns)} ms late",
    )
    table.add_row(
        "client CPU",
        f"{report.client_cpu_us_per_query:,.0f} µs per query (this process, including the "
        "spin-wait that makes sends precise)",
    )
    for kind, count in summary.errors_by_kind.items():
        table.add_row("[red]errors[/]", f"{count} × {kind}")
    if outcome.interrupted:
        table.add_row("[yellow]partial[/]", outcome.stop_reason)
    return table


def verdict_lines(verdict: Verdict) -> list[str]:
    head = "[bold green]VALID[/]" if verdict.valid else "[bold red]INVALID[/]"
    lines = [f"Result is: {head}"]
    for check in verdict.checks:
        mark = "[green]✓[/]" if check.passed else "[red]✗[/]"
        lines.append(f"  {mark} {check.detail}")
    for recommendation in verdict.recommendations:
        lines.append(f"  [yellow]→[/] {recommendation}")
    return lines


def render_server_report(console: Console, report: ServerReport) -> None:
    console.print(run_table(report))
    console.print(
        latency_table(report.summary, report.settings.target_latency_ns, report.settings.percentile)
    )
    for line in verdict_lines(report.verdict):
        console.print(line, highlight=False)
