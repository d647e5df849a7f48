"""The sweep's result: a table of the points, sweep.json, and the recommended config.pbtxt.

sweep.json shares the result envelope (schema, settings, environment) with `kind: "sweep"`. Its
top level also carries the winner's `peak_qps`, `status` and `conclusion` in find-peak's names,
so `loadtest plan --from sweep.json` plans replicas of the recommended configuration. Each point
lists its configuration, the peak (the highest rate VALID every time it was probed) with its
interval, the latency at the bound's percentile at that peak (from scheduled time), the server's
memory and where that figure comes from, whether it failed to load, and whether any probe was
client-bound (then the peak is the client's limit, not the server's). Over a shape (--stages, a
--trace) a point's peak is the shape's mean rate at its largest VALID speed-up: `shape` gives the
shape's own mean, each point its `peak_speedup`, and each probe its stages as find-peak's do.

The config.pbtxt is the winner's configuration as the server held it, through protobuf's
text_format (the schema Triton parses), without `runtime` (the server fills it in per backend
library: the embedded server's "model.py" would break the official image).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from tritonclient.grpc import model_config_pb2 as mc

from loadtest.core.secrets import redact_url
from loadtest.core.settings import PeakSettings, TargetSettings
from loadtest.core.target import ModelSpec
from loadtest.core.units import ns_to_ms
from loadtest.errors import SettingsError
from loadtest.report.outputs import Saved, save, stamp
from loadtest.report.results import SCHEMA, SCHEMA_VERSION, plain
from loadtest.rules.stage_results import stages_json
from loadtest.scenarios.searches.peak_run import ProbeRun
from loadtest.scenarios.searches.sweep_run import SweepOutcome, SweepPoint, SweepSettings
from loadtest.scenarios.searches.sweep_search import ties_of

SWEEP_FILES = ("sweep.json", "recommended-config.pbtxt")
SERVER_FILLED = ("runtime",)


def config_pbtxt(config: dict[str, Any]) -> str:
    """Triton's JSON configuration -> config.pbtxt text."""
    cleaned = {k: v for k, v in config.items() if k not in SERVER_FILLED}
    message = mc.ModelConfig()
    try:
        json_format.ParseDict(cleaned, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise SettingsError(f"the winning configuration does not convert to pbtxt: {exc}") from None
    return text_format.MessageToString(message)


def _probe(run: ProbeRun) -> dict[str, Any]:
    probe = run.probe
    return {
        "qps": probe.qps,
        "completed_qps": run.summary.completed_qps,
        "latency_ns": probe.latency_ns,
        "p99_ns": run.summary.latency.p99_ns,
        "valid": probe.valid,
        "client_bound": probe.client_bound,
        "queries": run.summary.scheduled,
        "send_lag_p99_ns": run.summary.send_lag.p99_ns,
        **stages_json(run.stages),
    }


def peak_speedup(point: SweepPoint, peak: PeakSettings) -> float | None:
    """Over a shape: the point's peak as a speed-up of the shape (None: no shape, or no peak)."""
    mean = peak.shape_mean_qps
    if mean is None or point.result.peak_qps is None:
        return None
    return point.result.peak_qps / mean


def point_json(
    point: SweepPoint, rank: int | None, winner: bool, peak: PeakSettings
) -> dict[str, Any]:
    result = point.result
    runs = list(point.outcome.runs) if point.outcome else []
    return {
        "number": point.number,
        "rank": rank,
        "winner": winner,
        "baseline": point.reason == "the loaded configuration",
        "why_measured": point.reason,
        "configuration": point.candidate.to_json(),
        "label": point.candidate.label(),
        "peak_qps": result.peak_qps,
        "peak_interval_qps": [result.low_qps, result.high_qps],
        "peak_speedup": peak_speedup(point, peak),
        "latency_at_peak_ns": point.latency_at_peak_ns,
        "memory_bytes": result.memory_bytes,
        "memory_source": point.memory_source,
        "failed_to_load": point.status == "failed to load",
        "failure": result.failed,
        "client_bound": point.client_bound,
        "status": point.status,
        "conclusion": point.outcome.conclusion.text if point.outcome else result.failed,
        "closed_loop_qps": point.closed_loop_qps,
        "load_s": round(point.load_s, 3),
        "elapsed_s": round(point.elapsed_s, 3),
        "probes": [_probe(r) for r in runs],
        "repeat": _probe(point.repeat) if point.repeat else None,
        "config": point.config,
    }


def sweep_json(
    settings: SweepSettings,
    target: TargetSettings,
    model: ModelSpec | None,
    environment: dict[str, Any],
    outcome: SweepOutcome,
    space: dict[str, list[Any]],
) -> dict[str, Any]:
    ranked = outcome.ranked()
    ranks = {id(p): i + 1 for i, p in enumerate(ranked) if p.result.usable}
    winner = outcome.winner
    baseline = outcome.baseline_point
    points = [point_json(p, ranks.get(id(p)), p is winner, settings.peak) for p in outcome.points]
    partial = outcome.interrupted or bool(outcome.error) or not outcome.converged
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "kind": "sweep",
        "scenario": "Server",
        "created_unix_s": time.time(),
        "settings": {**plain(settings.peak), **_own_settings(settings)},
        "target": {**plain(target), "url": redact_url(target.url)},
        "model": plain(model) if model is not None else None,
        "environment": environment,
        "space": space,
        **_shape(settings.peak, winner),
        "grid_size": outcome.grid_size,
        "points_measured": len(outcome.points),
        "points": points,
        "winner": points[outcome.points.index(winner)] if winner else None,
        "baseline": points[outcome.points.index(baseline)] if baseline else None,
        "ties_with_winner": (
            [p.number for p in ties_of_points(winner, outcome)] if winner is not None else []
        ),
        # find-peak's names, for `plan --from sweep.json`
        "peak_qps": winner.result.peak_qps if winner else None,
        "status": "bracketed" if winner and winner.status == "bracketed" else _status(outcome),
        "conclusion": conclusion(outcome),
        "elapsed_s": round(outcome.elapsed_s, 3),
        "converged": outcome.converged,
        "budget_exhausted": outcome.budget_exhausted,
        "interrupted": outcome.interrupted,
        "partial": partial,
        "stop_reason": outcome.stop_reason,
        "error": outcome.error,
        "restored": not outcome.restore_problem,
        "restore_problem": outcome.restore_problem,
    }


def _shape(peak: PeakSettings, winner: SweepPoint | None) -> dict[str, Any]:
    """Over a shape, find-peak's `shape` (what `plan --from` reads): the shape's own mean rate
    and the recommended configuration's speed-up (None: no winner)."""
    mean = peak.shape_mean_qps
    if mean is None:
        return {}
    speedup = peak_speedup(winner, peak) if winner is not None else None
    return {"shape": {"mean_qps": mean, "peak_speedup": speedup}}


def _own_settings(settings: SweepSettings) -> dict[str, Any]:
    return {
        "point_budget_ns": settings.point_budget_ns,
        "warmup_ns": settings.warmup_ns,
        "repeat_boundary": settings.repeat_boundary,
        "max_points": settings.max_points,
    }


def ties_of_points(winner: SweepPoint, outcome: SweepOutcome) -> list[SweepPoint]:
    tied = ties_of(winner.result, [p.result for p in outcome.points])
    return [p for p in outcome.points if p.result in tied]


def _status(outcome: SweepOutcome) -> str:
    if outcome.winner is not None:
        return outcome.winner.status
    if any(p.client_bound for p in outcome.points):
        return "no-measurement"
    return "none-valid"


def conclusion(outcome: SweepOutcome) -> str:
    winner, baseline = outcome.winner, outcome.baseline_point
    how = (
        f"{len(outcome.points)} of {outcome.grid_size} grid configurations measured in "
        f"{outcome.elapsed_s:.0f} s"
    )
    if outcome.converged:
        how += " (the climb converged: no neighbour of the best is left)"
    elif outcome.budget_exhausted:
        how += " (the budget ran out before the climb converged: a partial result)"
    elif outcome.interrupted:
        how += f" ({outcome.stop_reason}: a partial result)"
    elif outcome.error:
        how += f" (stopped by an error: {outcome.error})"
    if winner is None:
        return f"no configuration had a VALID peak; {how}"
    text = f"best: {winner.candidate.label()} at {winner.result.peak_qps:,.1f} QPS"
    if baseline is not None and baseline is not winner and baseline.result.peak_qps:
        ratio = (winner.result.peak_qps or 0) / baseline.result.peak_qps
        text += f" ({ratio:.2f}× the loaded configuration's {baseline.result.peak_qps:,.1f})"
    elif baseline is winner:
        text += " (the loaded configuration)"
    ties = ties_of_points(winner, outcome)
    if ties:
        text += (
            f"; statistically tied with {len(ties)} other point(s), chosen as the cheapest "
            "(fewer instances, less memory)"
        )
    return f"{text}; {how}"


def _ms(ns: int | None) -> str:
    return "—" if ns is None else f"{ns_to_ms(ns):,.2f}"


def _memory(point: SweepPoint) -> str:
    value = point.result.memory_bytes
    return "—" if value is None else f"{ns_to_ms(value):,.0f}"


def sweep_table(settings: SweepSettings, outcome: SweepOutcome) -> Table:
    p = f"p{settings.peak.percentile * 100:g}"
    law = settings.peak.arrival_law
    rate = f"{getattr(law, 'label', law.name)} rate"
    if (mean := settings.peak.shape_mean_qps) is not None:
        rate = f"mean rate of the shape sped up (as written: {mean:,.4g} QPS)"
    table = Table(
        title=(
            f"sweep points, best first: peak = highest {rate} VALID every time it ran "
            f"({p} from scheduled time ≤ {ns_to_ms(settings.peak.target_latency_ns):g} ms)"
        ),
        title_justify="left",
    )
    headings = ("rank", "#", "configuration", "peak QPS", "interval QPS", f"{p} ms at peak")
    for heading in (*headings, "memory MB", "status"):
        table.add_column(
            heading, justify="left" if heading in ("configuration", "status") else "right"
        )
    ranked = outcome.ranked()
    for position, point in enumerate(ranked, start=1):
        result = point.result
        status = escape(point.status)
        if point.client_bound:
            status += " [yellow](client-bound probes)[/]"
        if point.status == "failed to load":
            status = f"[red]failed to load[/]: {escape(result.failed[:80])}"
        name = escape(point.candidate.label())
        if point.reason == "the loaded configuration":
            name += " [dim](loaded)[/]"
        table.add_row(
            str(position) if result.usable else "—",
            str(point.number),
            ("[bold]" + name + "[/]") if point is outcome.winner else name,
            f"{result.peak_qps:,.1f}" if result.peak_qps else "—",
            f"{result.low_qps:,.1f}–{result.high_qps:,.1f}" if result.usable else "—",
            _ms(point.latency_at_peak_ns),
            _memory(point),
            status,
        )
    return table


def render_sweep(console: Console, settings: SweepSettings, outcome: SweepOutcome) -> None:
    console.print(sweep_table(settings, outcome))
    winner = outcome.winner
    sources = {p.memory_source for p in outcome.points if p.memory_source}
    if sources:
        console.print(f"[dim]memory: {escape('; '.join(sorted(sources)))}[/]", highlight=False)
    if winner is not None:
        console.print(
            f"[bold]Recommended: {escape(winner.candidate.label())}[/] — "
            f"{winner.result.peak_qps:,.1f} QPS within p{settings.peak.percentile * 100:g} ≤ "
            f"{ns_to_ms(settings.peak.target_latency_ns):g} ms",
            highlight=False,
        )
    else:
        console.print("[bold red]No configuration had a VALID peak[/]", highlight=False)
    console.print(escape(conclusion(outcome)), highlight=False)


def write_sweep(
    result: dict[str, Any],
    output: Path | None,
    model: str,
    force: bool = False,
    extra: dict[Path, str] | None = None,
) -> Saved:
    """sweep.json and the winner's recommended-config.pbtxt in `output` (default: a new
    results/<stamp>-sweep-<model>), atomically, or in a rescue directory if that fails; `extra`
    files (--config-out, --html) where they were asked to go."""
    files = {SWEEP_FILES[0]: json.dumps(result, indent=1) + "\n"}
    if result.get("recommended_config_pbtxt"):
        files[SWEEP_FILES[1]] = result["recommended_config_pbtxt"]
    name = f"{stamp(result.get('created_unix_s'))}-sweep-{model}"
    return save(files, output, name, force=force, extra=extra or {})
