"""find-peak --mix's result: find-peak.json with the mix's probes, its peak total QPS and the model
that broke its bound first; the terminal table of probes.

The file keeps find-peak's envelope (`kind: "find-peak"`, `probes`, `peak_qps`, `status`), so
`loadtest report` draws it and `loadtest plan --from` reads its peak; a `mix` section holds the
entries (their shares and bounds) and `breaks_first`. A probe's `latency_ns` is normalized (see
scenarios.searches.mix_peak_run.LATENCY_SCALE); each entry's own figures are under the probe's
`entries`.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loadtest.core.settings import PeakSettings
from loadtest.core.units import ns_to_ms
from loadtest.report.peak_report import probe_json
from loadtest.report.results import SCHEMA, SCHEMA_VERSION, plain
from loadtest.scenarios.experiments.mix_spec import MixSpec
from loadtest.scenarios.searches.mix_peak_run import LATENCY_SCALE, MixPeakOutcome, MixProbeRun
from loadtest.scenarios.searches.peak_search import FAILED_LATENCY_NS, NORMALIZED_BOUND_NS


def mix_probe_json(run: MixProbeRun) -> dict[str, Any]:
    probe = run.probe
    return {
        "qps": probe.qps,
        "completed_qps": probe.completed_qps,
        "latency_ns": probe.latency_ns,
        "p99_ns": probe.latency_ns,
        "valid": probe.valid,
        "client_bound": probe.client_bound,
        "worst_entry": run.worst,
        "broken_entries": run.broken,
        "reasons": list(probe.reasons),
        "entries": {name: probe_json(entry) for name, entry in run.entries.items()},
    }


def mix_peak_json(
    spec: MixSpec,
    settings: PeakSettings,
    environment: dict[str, Any],
    outcome: MixPeakOutcome,
) -> dict[str, Any]:
    conclusion = outcome.conclusion
    shares = spec.shares()
    entries = [
        {
            "name": e.name,
            "model": e.model,
            "share": shares.get(e.name),
            "percentile": getattr(e.settings, "percentile", None),
            "target_latency_ns": getattr(e.settings, "target_latency_ns", None),
            "qps_at_peak": (
                conclusion.peak_qps * shares[e.name] if conclusion.peak_qps is not None else None
            ),
        }
        for e in spec.entries
    ]
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "kind": "find-peak",
        "scenario": "Server",
        "created_unix_s": time.time(),
        "settings": {**plain(settings), "latency_scale": LATENCY_SCALE},
        "environment": environment,
        "mix": {
            "source": spec.source,
            "seed": spec.seed,
            "entries": entries,
            "breaks_first": outcome.breaks_first,
            "rule": "every entry within its own bound at its own percentile, weights fixed",
        },
        "probes": [mix_probe_json(run) for run in outcome.runs],
        "peak_qps": conclusion.peak_qps,
        "upper_qps": conclusion.upper_qps,
        "status": conclusion.status,
        "conclusion": conclusion.text
        + " (total QPS of the mix; latencies as the worst entry's fraction of its bound)",
        "elapsed_s": round(outcome.elapsed_s, 3),
        "budget_exhausted": outcome.budget_exhausted,
        "interrupted": outcome.interrupted,
        "partial": outcome.interrupted,
        "stop_reason": outcome.stop_reason,
    }


def mix_probe_cells(run: MixProbeRun) -> list[str]:
    probe = run.probe
    if probe.client_bound:
        verdict = "[yellow]client-bound (not counted)[/]"
    elif probe.valid:
        verdict = "[green]VALID[/]"
    else:
        verdict = "[red]INVALID[/]"
    worst = run.entries[run.worst]
    latency = worst.probe.latency_ns
    shown = (
        "∞ (failures)"
        if latency >= FAILED_LATENCY_NS
        else f"{ns_to_ms(latency):,.2f} / {ns_to_ms(worst.settings.target_latency_ns):g}"
    )
    return [
        f"{probe.qps:,.1f}",
        f"{probe.completed_qps:,.1f}",
        escape(run.worst),
        shown,
        f"{probe.latency_ns / NORMALIZED_BOUND_NS:.2f}"
        if probe.latency_ns < FAILED_LATENCY_NS
        else "∞",
        verdict,
        escape(", ".join(run.broken)),
    ]


def render_mix_peak(console: Console, spec: MixSpec, outcome: MixPeakOutcome) -> None:
    table = Table(
        title="find-peak --mix probes (in order): total QPS, weights fixed; latency from "
        "scheduled time at each entry's percentile",
        title_justify="left",
    )
    for heading in (
        "total QPS",
        "done",
        "worst entry",
        "its latency / bound ms",
        "÷ bound",
        "verdict",
        "broke",
    ):
        table.add_column(heading)
    for run in outcome.runs:
        table.add_row(*mix_probe_cells(run))
    console.print(table)
    conclusion = outcome.conclusion
    shares = ", ".join(f"{n} {s * 100:.0f} %" for n, s in spec.shares().items())
    if conclusion.peak_qps is not None:
        console.print(
            f"[bold]Mix peak: {conclusion.peak_qps:,.1f} QPS total[/] ({shares}) with every entry "
            f"within its bound ({len(outcome.runs)} probes, {outcome.elapsed_s:.0f} s)",
            highlight=False,
        )
    else:
        console.print("[bold red]No mix peak found[/]", highlight=False)
    if outcome.breaks_first:
        console.print(
            f"Breaks first: [bold]{escape(outcome.breaks_first)}[/] (at the lowest failing rate, "
            "the entry furthest over its bound)",
            highlight=False,
        )
    console.print(escape(conclusion.text), highlight=False)
