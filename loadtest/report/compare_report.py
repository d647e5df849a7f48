"""`loadtest compare` results as tables (rich) and as compare.json; the server-side split table.

compare.json follows results.py's conventions (schema + schema_version, every setting, the
environment) and is what resultfile.py reads as a "compare" file: `"kind": "compare"` and a `rows`
list with one row per target × QPS, each holding the run's full summary and verdict, its server
side (split, CPU, metrics) and `split_ns` (the per-query stack for the split figure).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from loadtest.analysis.compare import Relative, RunPoint
from loadtest.core.settings import ServerSettings
from loadtest.engine.measurement import Measurement
from loadtest.observe.probe import ServerSide
from loadtest.observe.split import ServerSplit
from loadtest.report.outputs import Saved, save, stamp
from loadtest.report.results import plain
from loadtest.rules.stats import Summary
from loadtest.rules.validity import Verdict

SCHEMA = "loadtest.analysis.compare"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class CompareRun:
    """One target at one QPS: everything measured, interpreted."""

    target: str  # triton-grpc / triton-http / native
    description: str
    settings: ServerSettings
    measurement: Measurement
    summary: Summary
    verdict: Verdict
    server_side: ServerSide | None
    batcher: Mapping[str, Any] | None = None  # native dynamic batcher: batches formed

    @property
    def point(self) -> RunPoint:
        return RunPoint(
            target=self.target,
            qps=self.settings.qps,
            achieved_qps=self.summary.completed_qps,
            p50_ns=self.summary.latency.p50_ns,
            p99_ns=self.summary.latency.p99_ns,
            valid=self.verdict.valid,
            client_bound=not self.summary.client_kept_up,
        )

    def to_json(self) -> dict[str, Any]:
        point = self.point
        split = self.server_side.split if self.server_side else None
        outcome = self.measurement.outcome
        return {
            "target": self.target,
            "description": self.description,
            "qps": point.qps,
            "achieved_qps": round(point.achieved_qps, 3),
            "p50_ns": point.p50_ns,
            "p99_ns": point.p99_ns,
            "verdict_label": point.label,
            "valid": point.valid,
            "client_bound": point.client_bound,
            "settings": plain(self.settings),
            "run": {
                "started_unix_ns": outcome.started_unix_ns,
                "duration_ns": outcome.duration_ns,
                "interrupted": outcome.interrupted,
                "stop_reason": outcome.stop_reason,
                "client_cpu_s": round(self.measurement.client_cpu_s, 6),
            },
            "summary": self.summary.to_dict(),
            "verdict": plain(self.verdict),
            "server_side": self.server_side.to_dict() if self.server_side else None,
            "split_ns": split_stack_ns(split) if split else None,
            "batcher": dict(self.batcher) if self.batcher is not None else None,
        }


def split_stack_ns(split: ServerSplit) -> dict[str, float]:
    """The split as `*_ns` parts that stack to the client mean (for report/figures.split_figure)."""
    return {
        "queue_ns": split.queue_ns,
        "compute_input_ns": split.compute_input_ns,
        "compute_infer_ns": split.compute_infer_ns,
        "compute_output_ns": split.compute_output_ns,
        "other_server_ns": split.residual_ns,
        "client_network_ns": split.client_network_ns,
    }


def relative_json(rel: Relative) -> dict[str, Any]:
    return {
        "target": rel.target,
        "peak_qps": rel.peak_qps,
        "native_peak_qps": rel.native_peak_qps,
        "peak_percent": None if rel.peak_percent is None else round(rel.peak_percent, 2),
        "p99_at_equal_qps": [
            {
                "qps": e.qps,
                "p99_ns": e.p99_ns,
                "native_p99_ns": e.native_p99_ns,
                "percent": round(e.percent, 2),
            }
            for e in rel.p99_at_equal_qps
        ],
        "overhead_qps": rel.overhead_qps,
        "overhead_us": None if rel.overhead_ns is None else round(rel.overhead_ns / 1e3, 3),
    }


def compare_json(
    *,
    settings: Mapping[str, Any],
    model: Any,
    configurations: Mapping[str, Any],
    environment: Mapping[str, Any],
    runs: Sequence[CompareRun],
    relatives: Sequence[Relative],
    agreement: Mapping[str, float | None],
    notes: Sequence[str],
    created_unix_s: float,
    stop_reason: str = "",
) -> dict[str, Any]:
    """`stop_reason`: why the comparison was cut short (SIGINT, SIGTERM); "" = it was not."""
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "kind": "compare",
        "scenario": "Server",
        "created_unix_s": created_unix_s,
        "partial": bool(stop_reason),
        "stop_reason": stop_reason,
        "settings": dict(settings),
        "model": plain(model),
        "configurations": dict(configurations),
        "environment": dict(environment),
        "rows": [run.to_json() for run in runs],
        "comparison": [relative_json(r) for r in relatives],
        "agreement": {"max_abs_difference": dict(agreement)},
        "notes": list(notes),
    }


COMPARE_FILES = ("compare.json",)


def write_compare(
    data: Mapping[str, Any], output: Path | None, model: str, force: bool = False
) -> Saved:
    """compare.json in `output` (default: a new results/<time>-compare-<model>/), atomically, or
    in a rescue directory if that fails (report/outputs.py)."""
    name = f"{stamp(float(data['created_unix_s']))}-compare-{model}"
    return save({COMPARE_FILES[0]: json.dumps(data, indent=1) + "\n"}, output, name, force=force)


# -- tables -----------------------------------------------------------------------------------


def _ms(ns: float) -> str:
    return f"{ns / 1e6:,.3f}"


def _us(ns: float) -> str:
    return f"{ns / 1e3:,.1f}"


def runs_table(runs: Sequence[CompareRun], percentile: float) -> Table:
    table = Table(
        title="Server scenario per target and QPS — latency from scheduled time (no coordinated "
        "omission), same seed and samples",
        title_justify="left",
    )
    for name, justify in (
        ("target", "left"),
        ("QPS", "right"),
        ("achieved", "right"),
        ("p50 ms", "right"),
        ("p99 ms", "right"),
        ("verdict", "left"),
        ("avg batch", "right"),
        ("server CPU\ncores", "right"),
        ("client CPU\nµs/query", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    styles = {"VALID": "green", "INVALID": "red", "CLIENT-BOUND": "bold yellow"}
    for run in runs:
        point = run.point
        side = run.server_side
        batch = "—"
        if side and side.split and side.split.average_batch is not None:
            batch = f"{side.split.average_batch:.2f}"
        elif run.batcher and run.batcher.get("batches"):
            batch = f"{run.batcher['mean_batch_size']:.2f}"
        server_cpu = f"{side.server_cpu.cores:.2f}" if side and side.server_cpu else "—"
        issued = int(run.measurement.outcome.records.issued.sum())
        client_us = run.measurement.client_cpu_s * 1e6 / issued if issued else 0.0
        why = ""
        if point.label == "INVALID" and run.verdict.reasons:
            why = f" ({', '.join(r.split(':')[0] for r in run.verdict.reasons)})"
        table.add_row(
            run.target,
            f"{point.qps:g}",
            f"{point.achieved_qps:,.1f}",
            _ms(point.p50_ns),
            _ms(point.p99_ns),
            f"[{styles[point.label]}]{point.label}[/]{escape(why)}",
            batch,
            server_cpu,
            f"{client_us:,.0f}",
        )
    table.caption = (
        f"VALID = p{percentile * 100:g} bound, duration, query count and early stopping met; "
        "CLIENT-BOUND runs measured the load generator and are left out of the comparison"
    )
    return table


def relative_table(relatives: Sequence[Relative], agreement: Mapping[str, float | None]) -> Table:
    table = Table(title="Triton as % of native (in-process onnxruntime)", title_justify="left")
    table.add_column("target")
    table.add_column("peak QPS under SLO\n(highest VALID probe)", justify="right")
    table.add_column("p99 at equal QPS\n(native = 100 %)", justify="right")
    table.add_column("overhead per request\n(p50 − native p50)", justify="right")
    table.add_column("outputs: max |Δ|\nvs native", justify="right")
    for rel in relatives:
        if rel.peak_percent is not None:
            peak = f"{rel.peak_qps:g} / {rel.native_peak_qps:g} = {rel.peak_percent:.0f} %"
        else:
            mine = "none" if rel.peak_qps is None else f"{rel.peak_qps:g}"
            native = "none" if rel.native_peak_qps is None else f"{rel.native_peak_qps:g}"
            peak = f"{mine} / {native}"
        equal = "\n".join(f"{e.qps:g} QPS: {e.percent:.0f} %" for e in rel.p99_at_equal_qps)
        overhead = "—"
        if rel.overhead_ns is not None:
            overhead = f"{rel.overhead_ns / 1e3:+,.0f} µs at {rel.overhead_qps:g} QPS"
        diff = agreement.get(rel.target)
        table.add_row(
            rel.target,
            peak,
            equal or "—",
            overhead,
            "—" if diff is None else f"{diff:.3g}",
        )
    table.caption = "peak = a lower bound: only the probed QPS values are known"
    return table


def split_table(rows: Sequence[tuple[str, ServerSide]]) -> Table:
    """Server-side split, one column per run: µs per request, adding up to the client mean."""
    table = Table(
        title="Server-side split — µs per request (Triton statistics, Δ over the run)",
        title_justify="left",
    )
    table.add_column("phase")
    for label, _ in rows:
        table.add_column(escape(label), justify="right")
    splits = [side.split for _, side in rows]

    def add(label: str, values: list[str], style: str | None = None) -> None:
        table.add_row(label, *values, style=style)

    phases = [s.rows() if s else [] for s in splits]
    names = next((p for p in phases if p), [])
    for i, (name, _) in enumerate(names):
        add(name, [_us(p[i][1]) if p else "—" for p in phases])
    add(
        "= client mean (from send)",
        [_us(s.client_mean_ns) if s else "—" for s in splits],
        style="bold",
    )
    add("server total", [_us(s.server_total_ns) if s else "—" for s in splits])
    add(
        "average batch",
        [f"{s.average_batch:.2f}" if s and s.average_batch is not None else "—" for s in splits],
    )
    add(
        "requests (Triton / client)",
        [
            f"{s.requests} / {s.client_requests}" + ("" if s.counts_match else " ≠") if s else "—"
            for s in splits
        ],
    )
    add(
        "server CPU (cores)",
        [f"{side.server_cpu.cores:.2f}" if side.server_cpu else "—" for _, side in rows],
    )
    add("client CPU (cores)", [f"{side.client_cores:.2f}" for _, side in rows])
    metrics = [side.metrics for _, side in rows]

    def metric(value: float | None, fmt: str) -> str:
        return "absent" if value is None else format(value, fmt)

    if any(m is not None for m in metrics):
        add(
            "nv_cpu_utilization",
            [metric(m.cpu_utilization, ".1%") if m else "—" for m in metrics],
        )
        add(
            "nv_gpu_utilization",
            [metric(m.gpu_utilization, ".1%") if m else "—" for m in metrics],
        )
        add(
            "GPU power (W)",
            [metric(m.gpu_power_w, ",.1f") if m else "—" for m in metrics],
        )
        add(
            "inferences / joule",
            [metric(m.inferences_per_joule, ",.2f") if m else "—" for m in metrics],
        )
    notes = sorted({note for _, side in rows for note in side.notes})
    if notes:
        table.caption = escape("; ".join(notes))
    return table
