"""The final rich tables: each figure says what it is (origin, method, whether we kept up)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loadtest.core.settings import OfflineSettings, ServerSettings, StreamSettings
from loadtest.engine.selfmeasure import ClientReport
from loadtest.report.results import RunReport
from loadtest.rules.stats import LatencyStats
from loadtest.rules.validity import Verdict

PERCENTILE_ROWS = (
    (0.5, "p50"),
    (0.9, "p90"),
    (0.95, "p95"),
    (0.97, "p97"),
    (0.99, "p99"),
    (0.999, "p99.9"),
)


def ms(ns: float) -> str:
    return f"{ns / 1e6:,.3f}"


def latency_table(
    columns: list[tuple[str, LatencyStats]], method: str, percentile: float, caption: str
) -> Table:
    """One column per latency origin; the bound's percentile row in bold."""
    table = Table(
        title=escape(f"Latency, ms — {method}, over successful queries"),
        title_justify="left",
        min_width=80,
    )
    table.add_column("statistic")
    for i, (heading, _) in enumerate(columns):
        table.add_column(heading, justify="right", style="dim" if i else None)

    def row(label: str, values: list[int], bold: bool = False) -> None:
        table.add_row(label, *(ms(v) for v in values), style="bold" if bold else None)

    stats = [s for _, s in columns]
    row("min", [s.min_ns for s in stats])
    row("mean", [s.mean_ns for s in stats])
    for p, label in PERCENTILE_ROWS:
        row(label, [s.percentiles()[p] for s in stats], bold=abs(p - percentile) < 1e-9)
    row("max", [s.max_ns for s in stats])
    table.caption = caption
    return table


def _base_table(report: RunReport) -> Table:
    summary = report.summary
    table = Table(
        title=f"{report.settings.scenario.value} run", title_justify="left", show_header=False
    )
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
    return table


def _tail_rows(table: Table, report: RunReport) -> None:
    outcome = report.measurement.outcome
    client = report.measurement.client
    if client is None:
        table.add_row(
            "client CPU", f"{report.client_cpu_us_per_query:,.0f} µs per query (this process)"
        )
    else:
        _generator_rows(table, client)
    for kind, count in report.summary.errors_by_kind.items():
        table.add_row("[red]errors[/]", escape(f"{count} × {kind}"))
    if outcome.stop_reason:
        label = "[yellow]partial[/]" if outcome.interrupted else "[yellow]stopped[/]"
        table.add_row(label, escape(outcome.stop_reason))


def _generator_rows(table: Table, client: ClientReport) -> None:
    count = len(client.workers)
    where = "this process" if client.placement == "in-process" else client.placement
    table.add_row(
        "generator",
        f"{count} worker{'s' if count > 1 else ''} ({where}, {client.loop} loop); "
        f"send-gap CV {client.send_gap_cv:.3f} (Poisson = 1)",
    )
    worst = client.worst_loop_lag
    table.add_row(
        "client CPU",
        f"{client.cpu_us_per_query:,.0f} µs per query (all workers); event-loop lag p99 "
        f"{ms(worst.p99_ns)} / max {ms(worst.max_ns)} ms (worst worker, call_soon probe)",
    )
    waits = sum(w.connection_waits for w in client.workers)
    if waits:
        table.add_row(
            "connections",
            f"{waits} queries found no idle connection and waited for one (counted in latency)",
        )
    if count > 1:
        behind = [w.shard for w in client.workers if not w.kept_up]
        table.add_row(
            "workers behind",
            "[green]none[/]" if not behind else f"[bold red]{', '.join(map(str, behind))}[/]",
        )


def server_run_table(report: RunReport, settings: ServerSettings) -> Table:
    summary = report.summary
    lag = summary.send_lag
    table = _base_table(report)
    table.add_row(
        "scheduled rate",
        f"{summary.scheduled_qps:,.2f} QPS as drawn (requested {settings.qps:g}; Poisson, "
        f"seed {settings.schedule_seed})",
    )
    table.add_row("completed rate", f"{summary.completed_qps:,.2f} QPS")
    table.add_row(
        "duration",
        f"{report.measurement.outcome.duration_ns / 1e9:,.2f} s (run start to last completion)",
    )
    kept = "[green]yes[/]" if summary.client_kept_up else "[bold red]NO — client-bound[/]"
    table.add_row(
        "client kept up",
        f"{kept}: send lag p50 {ms(lag.p50_ns)} / p99 {ms(lag.p99_ns)} / max {ms(lag.max_ns)} ms; "
        f"{lag.late_share * 100:.2f} % sent > {ms(lag.late_threshold_ns)} ms late",
    )
    _tail_rows(table, report)
    return table


def offline_run_table(report: RunReport, settings: OfflineSettings) -> Table:
    summary = report.summary
    records = report.measurement.outcome.records
    table = _base_table(report)
    table.add_row(
        "throughput",
        f"[bold]{summary.throughput_samples_per_s:,.2f} samples/s[/] "
        f"({summary.completed_ok * summary.samples_per_query} samples / time to last completion)",
    )
    table.add_row(
        "query",
        f"{settings.query_samples} samples = max(min queries, 1.1 × "
        f"{settings.min_duration_ns / 1e9:g} s × {settings.expected_qps:g} expected QPS), "
        f"sent as {settings.requests} requests of "
        f"≤ {settings.batch_size}",
    )
    busy_ns = (records.completed_ns - records.issued_ns)[records.ok].sum()
    span = max(report.measurement.outcome.duration_ns, 1)
    mean_in_flight = float(busy_ns) / span
    saturated = mean_in_flight >= 0.9 * settings.max_in_flight
    note = (
        ""
        if saturated
        else " [yellow](below 90 % of the cap: the client may have starved the server)[/]"
    )
    table.add_row(
        "in flight",
        f"mean {mean_in_flight:,.1f} of a cap of {settings.max_in_flight}{note}",
    )
    _tail_rows(table, report)
    return table


def stream_run_table(report: RunReport, settings: StreamSettings) -> Table:
    summary = report.summary
    table = _base_table(report)
    table.add_row(
        "rate",
        f"{summary.completed_qps:,.2f} queries/s closed loop, one in flight, "
        f"{settings.samples_per_query} sample(s) per query",
    )
    estimate = report.verdict.early_stopping_estimate
    if estimate is not None:
        value = "—" if estimate.estimate_ns is None else f"[bold]{ms(estimate.estimate_ns)} ms[/]"
        table.add_row(
            f"p{settings.percentile * 100:g} early-stopping estimate",
            f"{value}  {escape(estimate.text)}",
        )
    _tail_rows(table, report)
    return table


def verdict_lines(verdict: Verdict) -> list[str]:
    head = "[bold green]VALID[/]" if verdict.valid else "[bold red]INVALID[/]"
    lines = [f"Result is: {head}"]
    for check in verdict.checks:
        mark = "[green]✓[/]" if check.passed else "[red]✗[/]"
        lines.append(f"  {mark} {escape(check.detail)}")
    for recommendation in verdict.recommendations:
        lines.append(f"  [yellow]→[/] {escape(recommendation)}")
    return lines


def render_report(console: Console, report: RunReport) -> None:
    settings, summary = report.settings, report.summary
    if isinstance(settings, ServerSettings):
        console.print(server_run_table(report, settings))
        columns = [
            ("from scheduled time\n(MLPerf; includes queueing)", summary.latency),
            ("from actual send\n(what perf_analyzer reports)", summary.latency_from_issue),
        ]
        caption = f"bound: p{settings.percentile * 100:g} ≤ {ms(settings.target_latency_ns)} ms"
        percentile = settings.percentile
    elif isinstance(settings, OfflineSettings):
        console.print(offline_run_table(report, settings))
        columns = [
            ("from t = 0\n(all due at start)", summary.latency),
            ("from actual send", summary.latency_from_issue),
        ]
        caption = "Offline has no latency bound; the result is throughput"
        percentile = 0.0
    else:
        console.print(stream_run_table(report, settings))
        columns = [("from issue\n(closed loop)", summary.latency_from_issue)]
        bound = f" ≤ {ms(settings.target_latency_ns)} ms" if settings.target_latency_ns else ""
        caption = f"reported: p{settings.percentile * 100:g}{bound} (early-stopping estimate above)"
        percentile = settings.percentile
    console.print(
        latency_table(
            columns,
            summary.latency.method,
            percentile,
            f"{caption}; {summary.completed_ok} successful queries",
        )
    )
    for line in verdict_lines(report.verdict):
        console.print(line, highlight=False)
