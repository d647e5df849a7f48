"""The final rich tables: each figure says what it is (origin, method, whether we kept up)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loadtest.core.units import ms_cell, ns_to_s
from loadtest.engine.selfmeasure import GAP_CV_TOLERANCE, ClientReport
from loadtest.report.results import RunReport
from loadtest.rules.goodput import Goodput
from loadtest.rules.prompt_counts import PromptFigures
from loadtest.rules.stage_results import StageResult
from loadtest.rules.stats import LatencyStats, Summary
from loadtest.rules.validity import Verdict
from loadtest.scenarios.mlperf.registry import Tone, entry

PERCENTILE_ROWS = (
    (0.5, "p50"),
    (0.9, "p90"),
    (0.95, "p95"),
    (0.97, "p97"),
    (0.99, "p99"),
    (0.999, "p99.9"),
)


ms = ms_cell


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
    if server.get("unobserved"):
        table.add_row("server side", escape(str(server["unobserved"])))
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
    nodes = {w.node for w in client.workers if w.node}
    if nodes:
        where += f" on {len(nodes)} Ray node{'s' if len(nodes) > 1 else ''}"
    table.add_row(
        "generator",
        f"{count} worker{'s' if count > 1 else ''} ({where}, {client.loop} loop); "
        f"{send_gaps(client)}",
    )
    if not client.sends_follow_schedule:
        table.add_row("[yellow]send law[/]", f"[yellow]{escape(send_law_warning(client))}[/]")
    if client.worker_choice.startswith("automatic"):
        table.add_row("worker count", escape(client.worker_choice))
    worst = client.worst_loop_lag
    table.add_row(
        "client CPU",
        f"{client.cpu_us_per_query:,.0f} µs per issued query (all generator processes, over the "
        "run); event-loop lag p99 "
        f"{ms(worst.p99_ns)} / max {ms(worst.max_ns)} ms (worst worker, call_soon probe)",
    )
    waits = client.connection_waits
    if waits:
        table.add_row(
            "connections",
            f"{waits} queries found no free connection (or gRPC stream slot) and waited for "
            "one (counted in latency)",
        )
    retries = client.transparent_retries
    if retries:
        table.add_row(
            "transparent retries",
            f"{retries} queries were sent again because the server or a proxy never processed "
            "them (GOAWAY, REFUSED_STREAM), as gRPC's own clients do; latency from the first "
            "scheduled time",
        )
    if count > 1:
        behind = [w.shard for w in client.workers if not w.kept_up]
        table.add_row(
            "workers behind",
            "[green]none[/]" if not behind else f"[bold red]{', '.join(map(str, behind))}[/]",
        )


def send_gaps(client: ClientReport) -> str:
    """The sends' gap dispersion beside the schedule's own, for the same queries."""
    return f"send-gap CV {client.send_gap_cv:.3f}, schedule's own {client.scheduled_gap_cv:.3f}"


def send_law_warning(client: ClientReport) -> str:
    """Why the sends did not follow their schedule's law (engine/selfmeasure.py's rule)."""
    how = "clumped" if client.send_gap_cv > client.scheduled_gap_cv else "evened out"
    return (
        f"sends {how} against the schedule (send-gap CV {client.send_gap_cv:.3f} vs its own "
        f"{client.scheduled_gap_cv:.3f}, beyond ± {GAP_CV_TOLERANCE:g} × max(own, 1)): the server "
        "saw another arrival law than the one scheduled"
    )


TONE_STYLE = {Tone.PLAIN: "{}", Tone.WARN: "[yellow]{}[/]", Tone.BAD: "[bold red]{}[/]"}


def run_table(report: RunReport) -> Table:
    """The run's facts: the shared rows, the scenario's own (from the registry), then the tail."""
    table = _base_table(report)
    scenario = entry(report.settings.scenario)
    outcome = report.measurement.outcome
    for row in scenario.describe(report.settings, report.summary, report.verdict, outcome):
        table.add_row(row.label, TONE_STYLE[row.tone].format(escape(row.text)))
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


def left_out_caption(summary: Summary, bounded: bool) -> str:
    """What the latency table leaves out, so a table of successes never passes for the run."""
    if not summary.left_out_of_latency:
        return ""
    judged = ", which the verdict counts as over the bound" if bounded else ""
    return (
        f"; leaves out {summary.left_out_of_latency} queries ({summary.errors} failed, "
        f"{summary.pending} never answered or never issued){judged}"
    )


def render_tokens(console: Console, report: RunReport) -> None:
    """A streamed run's token figures (rules/tokens.py), each with its origin."""
    tokens = report.tokens
    assert tokens is not None
    percentile = report.token_bounds.percentile if report.token_bounds else 0.99
    columns = [
        ("TTFT from scheduled\n(LoadGen; the bound's)", tokens.ttft),
        ("TTFT from actual send", tokens.ttft_from_send),
        ("TPOT per query\n(e2e − TTFT)/(n − 1)", tokens.tpot),
    ]
    console.print(
        latency_table(
            columns,
            tokens.ttft.method,
            percentile,
            f"{tokens.queries} streamed queries; TPOT over {tokens.tpot.count} with > 1 token",
        )
    )
    itl = report.inter_chunk_gaps()
    itl_text = (
        f"; ITL (gap between responses, HDR) p50 {ms(itl['p50_ns'])} / p99 {ms(itl['p99_ns'])} ms"
        if itl and itl.get("count")
        else ""
    )
    console.print(
        f"tokens: {tokens.tokens:,} ({tokens.token_source}); {tokens.tokens_per_chunk_mean:.2f} "
        f"tokens per response; completed tokens/s {tokens.completed_tokens_per_s:,.1f} "
        f"(Σ n_tokens / last completion){itl_text}",
        highlight=False,
    )
    if report.output_lengths is not None and report.output_lengths.compared:
        console.print(escape(report.output_lengths.text()), highlight=False)


def render_prompts(console: Console, prompts: PromptFigures) -> None:
    """A text model's prompts: where they came from, their lengths and who counted them, and the
    server's prompt counts against the client's (rules/prompt_counts.py)."""
    lengths = prompts.input_tokens.text() if prompts.input_tokens else "none"
    answers = f"; max_tokens {prompts.max_tokens.text()}" if prompts.max_tokens else ""
    console.print(
        f"prompts: {prompts.source}\n  {prompts.samples:,} samples, input {lengths} tokens"
        f"{answers}; counted by the {prompts.tokenizer}\n  {prompts.counts_line()}",
        highlight=False,
    )


def goodput_table(result: Goodput) -> Table:
    """--slo: each SLO's attainment, all of them at once (goodput), and goodput's rates."""
    table = Table(
        title="Goodput: requests meeting every SLO at once (TTFT and e2e from the scheduled time)",
        title_justify="left",
        min_width=80,
    )
    for heading in ("objective", "requests meeting it", "share"):
        table.add_column(heading, justify="left" if heading == "objective" else "right")
    for attained in result.attainment:
        table.add_row(
            escape(attained.slo.describe()),
            f"{attained.met:,} of {result.requests:,}",
            f"{attained.share * 100:.2f} %",
        )
    table.add_row(
        "[bold]all at once (goodput)[/]",
        f"[bold]{result.good:,} of {result.requests:,}[/]",
        f"[bold]{result.share * 100:.2f} %[/]",
    )
    table.add_row(
        "goodput requests/s",
        f"{result.requests_per_s:,.2f}",
        f"over {ns_to_s(result.span_ns):.3f} s",
    )
    tokens = ""
    if result.tokens_per_s is not None:
        table.add_row(
            "goodput tokens/s",
            f"{result.tokens_per_s:,.1f} ({result.tokens:,} tokens)",
            f"over {ns_to_s(result.tokens_span_ns):.3f} s",
        )
        tokens = (
            f"; tokens/s = the good requests' tokens ({result.token_source}) / (t = 0 → last "
            "successful completion), completed tokens/s's formula"
        )
    left_out = f"; {result.not_sent} never sent, left out" if result.not_sent else ""
    tpot = any(s.name == "tpot" for s in result.slos)
    table.caption = escape(
        f"{result.requests:,} requests sent; {result.failed:,} failed or never answered count as "
        f"not meeting any SLO{left_out}"
        + ("; TPOT = (e2e − TTFT)/(n − 1): an answer of < 2 tokens has none and fails it" if tpot
           else "")
        + "; requests/s = (good − 1) / (first due time → last successful completion), completed "
        "QPS's formula"
        + tokens
    )  # fmt: skip
    return table


def stages_table(stages: tuple[StageResult, ...]) -> Table:
    """--stages: each stage's offered and carried rate, its latency, and its own verdict."""
    label = f"p{stages[0].percentile * 100:g}"
    bound = ms_cell(stages[0].target_latency_ns)
    table = Table(
        title="Stages (each judged on the queries scheduled in it)",
        caption=f"bound: {label} ≤ {bound} ms in every stage; failed or unanswered queries count "
        "as over it",
    )
    for heading in ("#", "stage", "offered QPS", "scheduled", "completed QPS", "p50 ms",
                    f"{label} ms", "met"):  # fmt: skip
        table.add_column(heading, justify="left" if heading == "stage" else "right")
    for stage in stages:
        judged = "∞" if stage.latency_ns is None else ms_cell(stage.latency_ns)
        p50 = stage.percentiles_ns.get("p50")
        table.add_row(
            str(stage.number),
            stage.spec,
            f"{stage.offered_qps:,.1f}",
            str(stage.scheduled),
            f"{stage.completed_qps:,.1f}",
            "-" if p50 is None else ms_cell(p50),
            judged if stage.scheduled else "-",
            "[green]yes[/]" if stage.met else "[red]no[/]",
        )
    return table


def render_report(console: Console, report: RunReport) -> None:
    settings, summary = report.settings, report.summary
    scenario = entry(settings.scenario)
    console.print(run_table(report))
    columns = [(c.heading, getattr(summary, c.field)) for c in scenario.latency_columns]
    console.print(
        latency_table(
            columns,
            summary.latency.method,
            scenario.percentile(settings),
            f"{scenario.caption(settings)}; {summary.completed_ok} successful queries"
            + left_out_caption(summary, scenario.has_performance_constraint),
        )
    )
    if report.tokens is not None:
        render_tokens(console, report)
    if report.prompts is not None:
        render_prompts(console, report.prompts)
    if report.goodput is not None:
        console.print(goodput_table(report.goodput))
    if summary.errors:
        failures = summary.failure_latency
        console.print(
            f"[red]failed queries[/]: {summary.errors} errors, {summary.unanswered} never answered;"
            f" the first at t = {ns_to_s(summary.first_failure_ns):.2f} s; time to error (from "
            f"scheduled time) p50 {ms(failures.percentiles()[0.5])} / max {ms(failures.max_ns)} ms",
            highlight=False,
        )
    if report.stages:
        console.print(stages_table(report.stages))
    for line in verdict_lines(report.verdict):
        console.print(line, highlight=False)
