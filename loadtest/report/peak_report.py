"""find-peak's result: every probe, the curve's points, the answer and how sure it is.

The JSON shares the run results' envelope (schema, settings, environment) with `kind: "find-peak"`,
and lists each probe with its latency at the bound's percentile (from scheduled time), achieved
rate and verdict, so the HTML report can draw the latency–throughput curve with the SLO line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loadtest.core.secrets import redact_url
from loadtest.core.settings import PeakSettings, TargetSettings
from loadtest.core.target import ModelSpec
from loadtest.core.units import ns_to_ms
from loadtest.report.outputs import Saved, save, stamp
from loadtest.report.results import SCHEMA, SCHEMA_VERSION, plain
from loadtest.scenarios.searches.peak_run import PeakOutcome, ProbeRun
from loadtest.scenarios.searches.peak_search import FAILED_LATENCY_NS


def probe_json(run: ProbeRun) -> dict[str, Any]:
    summary, probe = run.summary, run.probe
    return {
        "qps": probe.qps,
        "scheduled_qps": summary.scheduled_qps,
        "completed_qps": summary.completed_qps,
        "latency_ns": probe.latency_ns,
        "p99_ns": summary.latency.p99_ns,
        "p50_ns": summary.latency.p50_ns,
        "valid": probe.valid,
        "client_bound": probe.client_bound,
        "queries": summary.scheduled,
        "errors": summary.errors,
        "send_lag_p99_ns": summary.send_lag.p99_ns,
        "reasons": list(probe.reasons),
        "summary": summary.to_dict(),
    }


def peak_json(
    settings: PeakSettings,
    target: TargetSettings,
    model: ModelSpec,
    environment: dict[str, Any],
    outcome: PeakOutcome,
) -> dict[str, Any]:
    conclusion = outcome.conclusion
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "kind": "find-peak",
        "scenario": "Server",
        "created_unix_s": time.time(),
        "settings": plain(settings),
        "target": {**plain(target), "url": redact_url(target.url)},
        "model": plain(model),
        "environment": environment,
        "calibration_qps": outcome.calibration_qps,
        "probes": [probe_json(run) for run in outcome.runs],
        "peak_qps": conclusion.peak_qps,
        "upper_qps": conclusion.upper_qps,
        "status": conclusion.status,
        "conclusion": conclusion.text,
        "elapsed_s": round(outcome.elapsed_s, 3),
        "budget_exhausted": outcome.budget_exhausted,
        "interrupted": outcome.interrupted,
        "partial": outcome.interrupted,
        "stop_reason": outcome.stop_reason,
    }


PEAK_FILES = ("find-peak.json",)


def write_peak(
    result: dict[str, Any], output: Path | None, model: str, force: bool = False
) -> Saved:
    """find-peak.json in `output` (default: a new results/<stamp>-find-peak-<model>), atomically,
    or in a rescue directory if that fails (report/outputs.py)."""
    text = json.dumps(result, indent=1) + "\n"
    name = f"{stamp(result.get('created_unix_s'))}-find-peak-{model}"
    return save({PEAK_FILES[0]: text}, output, name, force=force)


def probe_row(run: ProbeRun, percentile: float, bound_ns: int) -> list[str]:
    probe = run.probe
    if probe.client_bound:
        verdict = "[yellow]client-bound (not counted)[/]"
    elif probe.valid:
        verdict = "[green]VALID[/]"
    else:
        verdict = "[red]INVALID[/]"
    why = "" if probe.valid else escape("; ".join(probe.reasons[:2]))
    return [
        f"{probe.qps:,.1f}",
        f"{run.summary.completed_qps:,.1f}",
        (
            "∞ (failures)"
            if probe.latency_ns >= FAILED_LATENCY_NS
            else f"{ns_to_ms(probe.latency_ns):,.2f}"
        )
        + (" ✗" if probe.latency_ns > bound_ns else ""),
        f"{ns_to_ms(run.summary.send_lag.p99_ns):,.2f}",
        verdict,
        why,
    ]


def peak_table(settings: PeakSettings, outcome: PeakOutcome) -> Table:
    p = f"p{settings.percentile * 100:g}"
    table = Table(
        title=(
            f"find-peak probes (in order): {p} latency from scheduled time vs bound "
            f"{ns_to_ms(settings.target_latency_ns):g} ms"
        ),
        title_justify="left",
    )
    for heading in ("QPS asked", "QPS done", f"{p} ms", "send-lag p99 ms", "verdict", "why"):
        numeric = "ms" in heading or "QPS" in heading
        table.add_column(heading, justify="right" if numeric else "left")
    for run in outcome.runs:
        table.add_row(*probe_row(run, settings.percentile, settings.target_latency_ns))
    return table


def render_peak(console: Console, settings: PeakSettings, outcome: PeakOutcome) -> None:
    console.print(peak_table(settings, outcome))
    conclusion = outcome.conclusion
    if conclusion.peak_qps is not None:
        console.print(
            f"[bold]Peak: {conclusion.peak_qps:,.1f} QPS[/] with {settings.percentile * 100:g}th "
            f"percentile ≤ {ns_to_ms(settings.target_latency_ns):g} ms "
            f"({len(outcome.runs)} probes, {outcome.elapsed_s:.0f} s)",
            highlight=False,
        )
    else:
        console.print("[bold red]No peak found[/]", highlight=False)
    console.print(escape(conclusion.text), highlight=False)
