"""`loadtest diff A.json B.json`: a regression table with a statistical judgement (see diff.py).

Exit code 3 when B is significantly worse than A (usable as a CI gate), 0 otherwise, 1 for bad
input (one clear line).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from loadtest.analysis import diff as diff_module
from loadtest.commands.options import finite_float, seed_value
from loadtest.core.units import ms_cell, ns_to_ms
from loadtest.errors import ExitCode, ResultFileError, SettingsError
from loadtest.report.console import make_console
from loadtest.report.resultfile import RUN, ResultFile, load_results

console = make_console()
REGRESSION_EXIT_CODE = ExitCode.INVALID
STYLE = {
    diff_module.REGRESSION: "bold red",
    diff_module.IMPROVEMENT: "green",
    diff_module.NO_CHANGE: "dim",
}


def run_side(run: ResultFile) -> diff_module.RunSide:
    if run.kind != RUN:
        raise ResultFileError(f"{run.label}: a {run.kind} result; diff compares two runs")
    records = run.records()
    verdict = run.data.get("verdict")
    valid = verdict.get("valid") if isinstance(verdict, dict) else None
    settings = run.data.get("settings")
    qps = settings.get("qps") if isinstance(settings, dict) else None
    return diff_module.RunSide(
        label=run.label,
        scenario=run.scenario,
        summary=run.summary,
        valid=valid if isinstance(valid, bool) else None,
        latencies_ns=records.latency_from_scheduled_ns() if records is not None else None,
        offered_qps=float(qps) if isinstance(qps, (int, float)) else None,
    )


def _model_of(run: ResultFile) -> str:
    model = run.data.get("model")
    name = model.get("name") if isinstance(model, dict) else None
    return str(name) if name else "an unnamed model"


def _show(change: diff_module.Change, value: float) -> str:
    if change.metric == "validity":
        return "VALID" if value else "INVALID"
    if change.unit == "ns":
        return f"{ms_cell(value)} ms"
    return f"{value:,.1f}"


def _interval(change: diff_module.Change) -> str:
    if change.interval is None:
        return "—"
    low, high = ns_to_ms(change.interval.low), ns_to_ms(change.interval.high)
    return f"[{low:+,.3f}, {high:+,.3f}] ms"


def render(result: diff_module.DiffResult) -> Table:
    table = Table(title=f"{result.a} (A) → {result.b} (B)", title_justify="left")
    for column in ("metric", "A", "B", "change", "CI of B − A", "judgement"):
        table.add_column(column, justify="left" if column in ("metric", "judgement") else "right")
    changes = [*result.changes, *([result.validity] if result.validity else [])]
    for change in changes:
        relative = change.relative
        pct = f"{relative * 100:+.1f} %" if relative is not None and change.unit else ""
        table.add_row(
            change.metric,
            _show(change, change.a),
            _show(change, change.b),
            pct,
            _interval(change),
            f"[{STYLE[change.judgement]}]{change.judgement}[/]",
        )
    return table


def diff(
    a: Annotated[Path, typer.Argument(help="Baseline run (result.json).")],
    b: Annotated[Path, typer.Argument(help="Candidate run (result.json).")],
    min_effect: Annotated[
        float,
        typer.Option(parser=finite_float, help="Smallest relative change (%) called a regression."),
    ] = diff_module.DEFAULT_MIN_EFFECT * 100,
    confidence: Annotated[
        float,
        typer.Option(parser=finite_float, help="Confidence level (%) of the bootstrap intervals."),
    ] = diff_module.DEFAULT_CONFIDENCE * 100,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples.")] = (
        diff_module.DEFAULT_RESAMPLES
    ),
    seed: Annotated[
        int, typer.Option(parser=seed_value, help="Bootstrap seed.")
    ] = diff_module.DEFAULT_SEED,
    threshold_without_records: Annotated[
        float,
        typer.Option(
            parser=finite_float,
            help="Without per-query records: flag latency changes beyond this (%).",
        ),
    ] = diff_module.DEFAULT_THRESHOLD_WITHOUT_RECORDS * 100,
) -> None:
    """Compare run B against baseline A; exit code 3 on a significant regression."""
    if not 0 <= min_effect < 1000 or not 0 < confidence < 100 or resamples < 100:
        raise SettingsError("need 0 ≤ --min-effect, 0 < --confidence < 100 and --resamples ≥ 100")
    run_a, run_b = load_results([a, b])
    side_a, side_b = run_side(run_a), run_side(run_b)
    if side_a.scenario != side_b.scenario:
        raise ResultFileError(
            f"{a} is a {side_a.scenario} run and {b} a {side_b.scenario} run: "
            "diff compares runs of one scenario"
        )
    models = (_model_of(run_a), _model_of(run_b))
    different_models = models[0] != models[1]
    if different_models:
        console.print(
            f"[bold yellow]different models:[/] A measured {escape(models[0])}, B "
            f"{escape(models[1])}: a difference here is between two models, not a change of one",
            highlight=False,
        )
    result = diff_module.diff_runs(
        side_a,
        side_b,
        min_effect=min_effect / 100,
        threshold_without_records=threshold_without_records / 100,
        resamples=resamples,
        confidence=confidence / 100,
        seed=seed,
    )
    console.print(render(result))
    console.print(f"[dim]method: {escape(result.method_text)}[/]", highlight=False)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    if result.regressed:
        lines = "; ".join(diff_module.describe(result.regressions))
        which = f" — of different models, {models[0]} and {models[1]}" if different_models else ""
        console.print(f"[bold red]REGRESSION[/] (B worse than A{escape(which)}): {escape(lines)}")
        raise typer.Exit(REGRESSION_EXIT_CODE)
    console.print("[green]no significant regression[/] (B is not worse than A beyond noise)")
