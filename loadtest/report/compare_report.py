"""`loadtest compare` results as tables (rich) and as compare.json; the server-side split table.

compare.json follows results.py's conventions (schema + schema_version, every setting, the
environment) and is what resultfile.py reads as a "compare" file: `"kind": "compare"` and a `rows`
list with one row per target × QPS, each holding the run's full summary and verdict, its server
side (split, CPU, metrics) and `split_ns` (the per-query stack for the split figure).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loadtest.analysis.compare import Relative, RunPoint, config_differences, relative
from loadtest.core.arrivals import Timestamps
from loadtest.core.secrets import redact_url
from loadtest.core.settings import NS_PER_S
from loadtest.core.stages import Staged
from loadtest.core.units import ms_cell, ns_to_us, s_to_us
from loadtest.observe.observer import ServerSide
from loadtest.observe.split import ServerSplit
from loadtest.report.compare_peak_report import (
    equal_qps_intervals,
    equal_qps_lines,
    p99_intervals_json,
    peak_search_json,
    peak_table,
    ratio_lines,
    what_is_compared,
)
from loadtest.report.compare_token_report import (
    decoder_compared,
    run_tokens_json,
    token_overhead_json,
    token_overhead_table,
    token_overheads,
)
from loadtest.report.outputs import Saved, save, stamp
from loadtest.report.results import plain
from loadtest.rules.stage_results import STAGES_MET, stages_json
from loadtest.rules.stats import exact_percentile_with_failures
from loadtest.scenarios.experiments.compare_run import (
    NATIVE,
    CompareResult,
    CompareRun,
    CompareSession,
    CompareSetup,
)
from loadtest.scenarios.searches.compare_peak_run import ComparePeaks

SCHEMA = "loadtest.analysis.compare"
SCHEMA_VERSION = 1


def run_point(run: CompareRun) -> RunPoint:
    """One run reduced to what the comparison needs."""
    return RunPoint(
        target=run.target,
        qps=run.settings.qps,
        achieved_qps=run.summary.completed_qps,
        p50_ns=run.summary.latency.p50_ns,
        p99_ns=p99_counting_failures(run),
        valid=run.verdict.valid,
        client_bound=not run.summary.client_kept_up,
        failed=run.summary.failed,
    )


def p99_counting_failures(run: CompareRun) -> int | None:
    """The run's p99 over every issued query, failed and unanswered ones at +∞ (None = ∞)."""
    records = run.measurement.outcome.records
    latencies = np.sort(records.latency_from_scheduled_ns())
    return exact_percentile_with_failures(latencies, run.summary.failed, 0.99)


def run_json(run: CompareRun) -> dict[str, Any]:
    """One row of compare.json."""
    point = run_point(run)
    split = run.server_side.split if run.server_side else None
    outcome = run.measurement.outcome
    return {
        "target": run.target,
        "description": run.description,
        "qps": point.qps,
        "achieved_qps": round(point.achieved_qps, 3),
        "p50_ns": point.p50_ns,
        "p99_ns": point.p99_ns,  # over every issued query, failures at +∞ (null = ∞)
        "failed": point.failed,
        "verdict_label": point.label,
        "valid": point.valid,
        "client_bound": point.client_bound,
        "settings": plain(run.settings),
        "run": {
            "started_unix_ns": outcome.started_unix_ns,
            "duration_ns": outcome.duration_ns,
            "interrupted": outcome.interrupted,
            "stop_reason": outcome.stop_reason,
            "client_cpu_s": round(run.measurement.client_cpu_s, 6),
            # native runs ONNX Runtime inside the client process: its CPU is the model's too
            "client_cpu_includes_model": run.target == NATIVE,
        },
        "summary": run.summary.to_dict(),
        "verdict": plain(run.verdict),
        "server_side": run.server_side.to_dict() if run.server_side else None,
        "split_ns": split_stack_ns(split) if split else None,
        "batcher": dict(run.batcher) if run.batcher is not None else None,
        "tokens": run_tokens_json(run),  # a streamed (decoder) run's token figures, else null
        **stages_json(run.stages),  # over load stages: each at this rate
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
                "percent": round(e.percent, 2) if math.isfinite(e.percent) else None,
            }
            for e in rel.p99_at_equal_qps
        ],
        "overhead_qps": rel.overhead_qps,
        "overhead_us": None if rel.overhead_ns is None else round(ns_to_us(rel.overhead_ns), 3),
    }


def comparison(setup: CompareSetup, result: CompareResult) -> list[Relative]:
    """Each Triton target against native (none when native was not compared)."""
    if NATIVE not in setup.targets:
        return []
    points = [run_point(run) for run in result.runs]
    return [relative(points, name) for name in setup.tritons]


def settings_json(setup: CompareSetup, session: CompareSession) -> dict[str, Any]:
    flags, first = setup.flags, setup.base
    return {
        "model": flags.model,
        "targets": list(setup.targets),
        "qps": [run.qps for run in setup.runs],
        "duration_s": first.min_duration_ns / NS_PER_S,
        "min_query_count": first.min_query_count,
        "target_latency_ns": first.target_latency_ns,
        "percentile": first.percentile,
        "late_threshold_ns": first.late_threshold_ns,
        "schedule_seed": first.schedule_seed,
        "sample_seed": first.sample_seed,
        "sample_count": first.sample_count,
        "input_data": str(flags.input_data) if flags.input_data else None,
        "shapes": {name: list(dims) for name, dims in flags.shapes.items()},
        "agreement_samples": setup.agreement_samples,
        "protocol": flags.protocol.value,
        "shared_memory": flags.shared_memory.value,
        "urls": {name: redact_url(url) for name, url in session.urls.items()},
        "metrics_url": redact_url(session.metrics_url) if session.metrics_url else None,
        "tls": plain(setup.flags.access.tls),
        "headers": {h.name: str(h.value) for h in setup.flags.access.headers},
        "repository": str(flags.repository),
        "onnx": str(setup.onnx) if setup.onnx else None,
    }


def configurations_json(session: CompareSession, result: CompareResult) -> dict[str, Any]:
    """How each side served the model: Triton's config summary, the native options."""
    native = session.native
    return {
        "triton": result.triton_config,
        "native": (
            {**plain(native.options), "summary": native.options.describe()} if native else None
        ),
    }


def compare_notes(session: CompareSession, result: CompareResult) -> list[str]:
    notes = []
    if session.native is not None:
        differences = config_differences(result.triton_config, session.native.options)
        if differences:
            notes.append(
                "the native side is configured differently from the Triton it is compared with "
                f"({'; '.join(differences)}): the ratio compares configurations too"
            )
    if session.deployment.embedded is not None:
        notes.append("Triton was the embedded server started by loadtest on this machine")
    if any(run_point(run).client_bound for run in result.runs):
        notes.append("client-bound runs are excluded from the comparison")
    return notes


def compare_json(
    setup: CompareSetup,
    session: CompareSession,
    result: CompareResult,
    environment: Mapping[str, Any],
    created_unix_s: float,
    stop_reason: str = "",
    peaks: ComparePeaks | None = None,
) -> dict[str, Any]:
    """`stop_reason`: why the comparison was cut short (SIGINT, SIGTERM); "" = it was not.
    `peaks`: the interleaved peak search, when it ran (keys `peak_search`, `p99_intervals` and
    `compared` were added in place: older readers ignore them, older files lack them)."""
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "kind": "compare",
        "scenario": "Server",
        "created_unix_s": created_unix_s,
        "partial": bool(stop_reason),
        "stop_reason": stop_reason,
        "settings": settings_json(setup, session),
        "model": plain(result.spec),
        "configurations": configurations_json(session, result),
        "environment": dict(environment),
        "rows": [run_json(run) for run in result.runs],
        "comparison": [relative_json(r) for r in comparison(setup, result)],
        "agreement": {"max_abs_difference": dict(result.agreement)},
        "notes": compare_notes(session, result),
        "peak_search": peak_search_json(peaks) if peaks is not None else None,
        "p99_intervals": p99_intervals_json(equal_qps_intervals(result)),
        "compared": compared_lines(setup, session, result),
        "token_overhead": (token_overhead_json(token_overheads(result)) if setup.streams else None),
    }


def compared_lines(
    setup: CompareSetup, session: CompareSession, result: CompareResult
) -> list[str]:
    """What is compared, in plain words (none without the native side)."""
    if NATIVE not in setup.targets:
        return []
    if setup.streams:
        version = next((session.targets[name].server_version for name in setup.tritons), "")
        return decoder_compared(version, session.deployment.embedded is not None)
    return what_is_compared(session, result)


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
    return ms_cell(ns)


def _us(ns: float) -> str:
    return f"{ns_to_us(ns):,.1f}"


def _percent(value: float) -> str:
    if math.isinf(value):
        return "∞ (its failures count as over any bound)"
    return "—" if math.isnan(value) else f"{value:.0f} %"


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
        ("p99 ms\n(failed = ∞)", "right"),
        ("verdict", "left"),
        ("avg batch", "right"),
        ("server CPU\ncores", "right"),
        ("client CPU\nµs/query*", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    styles = {"VALID": "green", "INVALID": "red", "CLIENT-BOUND": "bold yellow"}
    for run in runs:
        point = run_point(run)
        side = run.server_side
        batch = "—"
        if side and side.split and side.split.average_batch is not None:
            batch = f"{side.split.average_batch:.2f}"
        elif run.batcher and run.batcher.get("batches"):
            batch = f"{run.batcher['mean_batch_size']:.2f}"
        server_cpu = f"{side.server_cpu.cores:.2f}" if side and side.server_cpu else "—"
        issued = int(run.measurement.outcome.records.issued.sum())
        client_us = s_to_us(run.measurement.client_cpu_s) / issued if issued else 0.0
        why = ""
        if point.label == "INVALID" and run.verdict.reasons:
            names = [r.split(":")[0] for r in run.verdict.reasons if r.split(":")[0] != STAGES_MET]
            missed = [str(stage.number) for stage in run.stages if not stage.met]
            names += [f"stage {', '.join(missed)} missed"] if missed else []
            why = f" ({', '.join(names)})"
        table.add_row(
            run.target,
            f"{point.qps:g}",
            f"{point.achieved_qps:,.1f}",
            _ms(point.p50_ns),
            "∞" if point.p99_ns is None else _ms(point.p99_ns),
            f"[{styles[point.label]}]{point.label}[/]{escape(why)}",
            batch,
            server_cpu,
            f"{client_us:,.0f}",
        )
    table.caption = (
        f"VALID = p{percentile * 100:g} bound, duration, query count and early stopping met; "
        "CLIENT-BOUND runs measured the load generator and are left out of the comparison; "
        "p99 over every issued query, failed or unanswered ones counted as ∞; * client CPU per "
        "issued query: for native it includes the model's own compute (ONNX Runtime runs in the "
        "client process)"
        + (
            "; over --stages or a --trace, QPS is the shape's mean rate (the shape scaled to it, "
            "played whole) and a row is VALID only if every stage met the bound"
            if any(isinstance(run.settings.arrival_law, (Staged, Timestamps)) for run in runs)
            else ""
        )
    )
    return table


def relative_table(relatives: Sequence[Relative], agreement: Mapping[str, float | None]) -> Table:
    table = Table(title="Triton as % of native (in-process onnxruntime)", title_justify="left")
    table.add_column("target")
    table.add_column("peak QPS under SLO\n(highest VALID fixed rate)", justify="right")
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
        equal = "\n".join(f"{e.qps:g} QPS: {_percent(e.percent)}" for e in rel.p99_at_equal_qps)
        overhead = "—"
        if rel.overhead_ns is not None:
            overhead = f"{ns_to_us(rel.overhead_ns):+,.0f} µs at {rel.overhead_qps:g} QPS"
        diff = agreement.get(rel.target)
        table.add_row(
            rel.target,
            peak,
            equal or "—",
            overhead,
            "—" if diff is None else f"{diff:.3g}",
        )
    table.caption = (
        "peak here = the highest VALID fixed rate (--qps), a lower bound from single probes; the "
        "noise-aware peak and ratio come from the peak search (on unless --qps is given alone)"
    )
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


def render_compare(
    console: Console,
    setup: CompareSetup,
    session: CompareSession,
    result: CompareResult,
    peaks: ComparePeaks | None = None,
) -> None:
    """The runs, Triton against native, the peak search and its ratio with intervals, what is
    compared, the server-side split and both configurations."""
    base = setup.base
    if result.runs:
        console.print(runs_table(result.runs, base.percentile))
    relatives = comparison(setup, result)
    if relatives and result.runs:
        console.print(relative_table(relatives, result.agreement))
    if peaks is not None:
        console.print(peak_table(peaks))
    if setup.streams and NATIVE in setup.targets and result.runs:
        console.print(token_overhead_table(token_overheads(result)))
    lines = [*equal_qps_lines(equal_qps_intervals(result))]
    if peaks is not None:
        lines += ratio_lines(peaks, base.target_latency_ns / 1e6, base.percentile)
    for line in lines:
        console.print(line, highlight=False)
    for line in compared_lines(setup, session, result):
        console.print(f"compared: {line}", highlight=False)
    for note in compare_notes(session, result):
        if note.startswith("the native side is configured differently"):
            console.print(f"[yellow]warning:[/] {escape(note)}", highlight=False)
    split_rows = [
        (f"{run.target} {run.settings.qps:g}", run.server_side)
        for run in result.runs
        if run.server_side is not None
    ]
    if split_rows:
        console.print(split_table(split_rows))
    if session.native is not None:
        console.print(f"native: {session.native.options.describe()}", highlight=False)
    tc = result.triton_config
    if tc is not None:
        batching = (
            f"dynamic batching ≤ {tc['max_batch_size']}, delay {tc['max_queue_delay_us']} µs"
            if tc["dynamic_batching"]
            else "no dynamic batching"
        )
        console.print(
            f"triton: {tc['instances']} instance(s), {batching}, intra "
            f"{tc['intra_op_thread_count']} / inter {tc['inter_op_thread_count']} threads "
            f"({tc['backend']})",
            highlight=False,
        )
