"""A mix's result: each entry's full run result (together, and alone), the interference between
them, the mix's own settings and verdict; its terminal tables and its files.

Each entry's result is a RunReport, built exactly as a single-model run's is (latency from the
scheduled time, early stopping, the client-bound check, the server-side split from Triton's
statistics for that model, :8002 metrics), so each entry section of result.json is the same
schema as a `loadtest server` / `offline` result.json. The mix is VALID only if every entry is,
in the run where they played together; the runs alone are the reference for the interference
table and do not enter the verdict.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, replace
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loadtest.analysis.interference import (
    INTERVAL_METHOD,
    InterferenceRow,
    Ratio,
    RunSide,
    interference_row,
)
from loadtest.core.settings import ClientSettings, OfflineSettings, ServerSettings
from loadtest.core.units import ms_cell
from loadtest.engine.selfmeasure import ClientReport
from loadtest.report.outputs import stamp
from loadtest.report.results import (
    SCHEMA,
    SCHEMA_VERSION,
    RunReport,
    build_environment,
    plain,
    render_summary_text,
)
from loadtest.report.terminal import send_gaps, send_law_warning
from loadtest.scenarios.experiments.mix_play import OpenedEntry
from loadtest.scenarios.experiments.mix_run import MixOutcome, MixRun
from loadtest.scenarios.experiments.mix_spec import MixEntry, MixSpec
from loadtest.server.deployment import Deployment

MIX_KIND = "mix"
MIX_RULE = "VALID only if every entry is VALID in the run where all played together"


@dataclass(frozen=True)
class EntryResult:
    name: str
    together: RunReport | None
    alone: RunReport | None
    interference: InterferenceRow | None


@dataclass(frozen=True)
class MixReport:
    spec: MixSpec
    entries: tuple[EntryResult, ...]
    client: ClientReport | None  # the generator of the run together (its Server part)
    client_settings: ClientSettings
    placement: str
    client_cpu_s: float
    isolated: bool
    stop_reason: str
    interrupted: bool
    created_unix_s: float

    @property
    def valid(self) -> bool:
        return not self.interrupted and all(
            e.together is not None and e.together.verdict.valid for e in self.entries
        )

    @property
    def invalid_entries(self) -> list[str]:
        return [e.name for e in self.entries if e.together is None or not e.together.verdict.valid]

    @property
    def client_bound(self) -> bool:
        """INVALID only because the generator fell behind for every entry that failed."""
        bad = [e.together for e in self.entries if e.name in self.invalid_entries]
        return (
            not self.valid
            and not self.interrupted
            and all(r is not None and r.verdict.client_bound for r in bad)
        )

    def verdict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "client_bound": self.client_bound,
            "partial": self.interrupted,
            "stop_reason": self.stop_reason,
            "rule": MIX_RULE,
            "invalid_entries": self.invalid_entries,
            "entries": {
                e.name: None if e.together is None else e.together.verdict.valid
                for e in self.entries
            },
        }

    def to_json(self) -> dict[str, Any]:
        settings = {
            **self.spec.to_dict(),
            "isolated": self.isolated,
            "client": plain(self.client_settings),
        }
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "kind": MIX_KIND,
            "scenario": "Mix",
            "created_unix_s": self.created_unix_s,
            "settings": settings,
            "verdict": self.verdict(),
            "run": {
                "placement": self.placement,
                "client_cpu_s": round(self.client_cpu_s, 6),
                "client_cpu_note": "every generator process of the run together; each entry's "
                "run.client_cpu_s is its share by issued queries",
                "partial": self.interrupted,
                "stop_reason": self.stop_reason,
            },
            "client": self.client.to_dict() if self.client is not None else None,
            "interference": [
                e.interference.to_dict() for e in self.entries if e.interference is not None
            ],
            "interference_interval": INTERVAL_METHOD,
            "entries": [
                {
                    "name": e.name,
                    "together": e.together.to_json() if e.together is not None else None,
                    "alone": e.alone.to_json() if e.alone is not None else None,
                }
                for e in self.entries
            ],
        }


def _run_reports(
    run: MixRun | None, opened: list[OpenedEntry], deployments: dict[str, Deployment]
) -> dict[str, RunReport]:
    if run is None:
        return {}
    reports = {}
    for item in opened:
        measurement = run.measurement.measurements.get(item.name)
        if measurement is None:
            continue
        reports[item.name] = RunReport.from_measurement(
            item.entry.settings,
            item.entry.flags.target_settings(),
            item.resolved,
            measurement,
            build_environment(item.target, deployments[item.name]),
            run.server_sides.get(item.name),
        )
    return reports


def run_side(report: RunReport) -> RunSide:
    summary = report.summary
    offline = isinstance(report.settings, OfflineSettings)
    return RunSide(
        records=report.measurement.outcome.records,
        throughput=summary.throughput_samples_per_s if offline else summary.completed_qps,
        first_ns=summary.first_scheduled_ns,
        last_ns=summary.final_ok_completed_ns,
        # Offline has no schedule to keep up with (everything is due at t = 0)
        client_kept_up=offline or summary.client_kept_up,
    )


def build_mix_report(
    outcome: MixOutcome,
    opened: list[OpenedEntry],
    deployments: dict[str, Deployment],
    client_settings: ClientSettings,
    isolated: bool,
) -> MixReport:
    sized = {e.name: e for e in outcome.spec.entries}
    opened = [
        item if item.entry is sized[item.name] else _with_entry(item, sized[item.name])
        for item in opened
    ]
    together = _run_reports(outcome.together, opened, deployments)
    alone: dict[str, RunReport] = {}
    for run in outcome.isolated:
        alone.update(_run_reports(run, opened, deployments))
    entries = []
    for index, item in enumerate(opened):
        row = None
        if item.name in together and item.name in alone:
            settings = item.entry.settings
            percentile = settings.percentile if isinstance(settings, ServerSettings) else 0.99
            row = interference_row(
                item.name,
                settings.scenario.value,
                percentile,
                run_side(alone[item.name]),
                run_side(together[item.name]),
                seed=outcome.spec.seed + index,
            )
        entries.append(EntryResult(item.name, together.get(item.name), alone.get(item.name), row))
    measured = outcome.together.measurement if outcome.together is not None else None
    return MixReport(
        spec=outcome.spec,
        entries=tuple(entries),
        client=measured.client if measured else None,
        client_settings=client_settings,
        placement=measured.placement if measured else "",
        client_cpu_s=measured.client_cpu_s if measured else 0.0,
        isolated=isolated,
        stop_reason=outcome.stop_reason,
        interrupted=outcome.interrupted,
        created_unix_s=time.time(),
    )


def _with_entry(item: OpenedEntry, entry: MixEntry) -> OpenedEntry:
    return replace(item, entry=entry)


# --- files ---------------------------------------------------------------------------------------


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def mix_file_names(spec: MixSpec) -> tuple[str, ...]:
    """result.json and one mlperf_log_summary-<entry>.txt per entry (checked before any load)."""
    return ("result.json", *(f"mlperf_log_summary-{safe_name(e.name)}.txt" for e in spec.entries))


def mix_files(report: MixReport, data: dict[str, Any]) -> dict[str, str]:
    files = {"result.json": json.dumps(data, indent=1) + "\n"}
    for entry in report.entries:
        if entry.together is not None:
            name = f"mlperf_log_summary-{safe_name(entry.name)}.txt"
            files[name] = render_summary_text(entry.together)
    return files


def default_mix_name(report: MixReport) -> str:
    models = "-".join(safe_name(e.name) for e in report.entries)[:60]
    return f"{stamp(report.created_unix_s)}-mix-{models}"


# --- terminal ------------------------------------------------------------------------------------


def _verdict_cell(report: RunReport | None) -> str:
    if report is None:
        return "[yellow]not run[/]"
    if report.verdict.valid:
        return "[green]VALID[/]"
    if report.verdict.client_bound:
        return "[yellow]CLIENT-BOUND[/]"
    return "[red]INVALID[/]"


def entry_cells(name: str, report: RunReport | None) -> list[str]:
    """One line of the per-entry table."""
    if report is None:
        return [escape(name), "—", "—", "—", "—", "—", _verdict_cell(None), ""]
    settings, summary = report.settings, report.summary
    if isinstance(settings, ServerSettings):
        what = f"Server {settings.qps:,.1f} QPS"
        p = settings.percentile
        value = summary.latency.percentiles().get(p)
        latency = (
            f"p{p * 100:g} {ms_cell(value)} / {ms_cell(settings.target_latency_ns)}"
            if value is not None
            else "—"
        )
        done = f"{summary.completed_qps:,.1f} QPS"
    else:
        what = f"Offline {summary.scheduled} samples"
        latency = f"p99 {ms_cell(summary.latency_from_issue.p99_ns)} (from send)"
        done = f"{summary.throughput_samples_per_s:,.1f} samples/s"
    why = "" if report.verdict.valid else "; ".join(report.verdict.reasons[:2])
    if report.verdict.passed("client kept up") is None:  # Offline: everything is due at t = 0
        kept_up = "—"
    else:
        kept_up = "yes" if summary.client_kept_up else "[bold red]no[/]"
    return [
        escape(name),
        escape(report.target.model),
        what,
        latency,
        done,
        kept_up,
        _verdict_cell(report),
        escape(why),
    ]


def entries_table(report: MixReport) -> Table:
    table = Table(
        title="Mix, all entries together: latency from scheduled time (Server) vs each bound, "
        "ms; Offline per-request latency from the send",
        title_justify="left",
    )
    for heading in ("entry", "model", "asked", "latency ms", "completed", "kept up", "verdict"):
        table.add_column(heading)
    table.add_column("why", overflow="fold")
    for entry in report.entries:
        table.add_row(*entry_cells(entry.name, entry.together))
    return table


def _ratio_cell(ratio: Ratio) -> str:
    if ratio.value is None:
        return "—"
    if ratio.low is None or ratio.high is None:
        return f"{ratio.value:.3f}"
    return f"{ratio.value:.3f} [{ratio.low:.3f}, {ratio.high:.3f}]"


def _ns_cell(value: float | None) -> str:
    if value is None:
        return "—"
    return "∞" if value == float("inf") else ms_cell(value)


def _kept_up_cell(row: InterferenceRow) -> str:
    if not row.client_bound:
        return "yes"
    sides = [
        side
        for side, kept in (
            ("alone", row.client_kept_up_alone),
            ("together", row.client_kept_up_together),
        )
        if not kept
    ]
    return f"[bold red]no ({', '.join(sides)})[/]"


def interference_table(report: MixReport) -> Table:
    table = Table(
        title="Interference: together ÷ alone, same schedule (95 % bootstrap interval; 1 = "
        "concurrent ≈ isolated)",
        title_justify="left",
    )
    for heading in (
        "entry",
        "scenario",
        "latency ms alone",
        "together",
        "latency ratio",
        "throughput alone",
        "together",
        "throughput ratio",
        "client kept up",
    ):
        table.add_column(heading, justify="left" if heading in ("entry", "scenario") else "right")
    for entry in report.entries:
        row = entry.interference
        if row is None:
            continue
        table.add_row(
            escape(row.name),
            f"{row.scenario} p{row.percentile * 100:g}",
            _ns_cell(row.latency_alone_ns),
            _ns_cell(row.latency_together_ns),
            _ratio_cell(row.latency_ratio),
            f"{row.throughput_alone:,.1f}",
            f"{row.throughput_together:,.1f}",
            _ratio_cell(row.throughput_ratio),
            _kept_up_cell(row),
        )
    table.caption = (
        "Server latency from scheduled time, Offline from the send; failures count as +∞; "
        "throughput = completed QPS (Server), samples/s (Offline); where the client did not keep "
        "up, that side's latency includes the generator's own lag"
    )
    return table


def render_mix(console: Console, report: MixReport) -> None:
    console.print(entries_table(report))
    if report.client is not None:
        client = report.client
        console.print(
            f"generator: {len(client.workers)} worker(s) ({client.placement}, {client.loop} "
            f"loop), {send_gaps(client)} over all Server entries; "
            f"client CPU {report.client_cpu_s:.2f} s for the run together",
            highlight=False,
        )
        if not client.sends_follow_schedule:
            console.print(f"[yellow]{escape(send_law_warning(client))}[/]", highlight=False)
    if report.valid:
        head = "[bold green]VALID[/]"
    elif report.client_bound:
        head = "[bold yellow]INVALID (client-bound only)[/]"
    else:
        head = "[bold red]INVALID[/]"
    bad = report.invalid_entries
    console.print(
        f"Mix of {len(report.entries)}: {head}"
        + (f" — not VALID: {escape(', '.join(bad))}" if bad and not report.valid else "")
        + f" ({MIX_RULE})",
        highlight=False,
    )
    if any(e.interference is not None for e in report.entries):
        console.print(interference_table(report))
    elif not report.isolated:
        console.print("[dim]no runs alone (--no-isolated): no interference table[/]")
