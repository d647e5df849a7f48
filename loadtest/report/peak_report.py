"""find-peak's result: every probe, the curve's points, the answer and how sure it is.

The JSON shares the run results' envelope (schema, settings, environment) with `kind: "find-peak"`,
says which pass rule was searched (`rule`: MLPerf's p99 bound or goodput under --slo, what `plan`
reads), and lists each probe with its latency at the bound's percentile (from scheduled time),
achieved rate and verdict (under the goodput rule, its goodput too), so the HTML report can draw
the latency–throughput curve with the SLO line. Over --stages each probe also lists its stages,
each judged alone (rules/stage_results.py), and the table gives each stage a row under its probe,
so the stage that failed a probe is named where the probe is.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loadtest.core.secrets import redact_url
from loadtest.core.settings import PeakSettings, TargetSettings
from loadtest.core.slos import describe_all
from loadtest.core.target import ModelSpec
from loadtest.core.units import ns_to_ms
from loadtest.report.outputs import Saved, save, stamp
from loadtest.report.results import SCHEMA, SCHEMA_VERSION, plain
from loadtest.rules.stage_results import stages_json
from loadtest.scenarios.searches.peak_run import PeakOutcome, ProbeRun
from loadtest.scenarios.searches.peak_search import FAILED_LATENCY_NS, NORMALIZED_BOUND_NS

MLPERF_RULE = "mlperf-p99"
GOODPUT_RULE = "goodput"
TOKEN_RULE = "mlperf-tokens"


def rule_json(settings: PeakSettings) -> dict[str, Any]:
    """Which pass rule the search held, in words and in numbers (what `plan` reads)."""
    if settings.token_rule:
        return {
            "name": TOKEN_RULE,
            "text": settings.rule_text(),
            "percentile": settings.percentile,
            "ttft_bound_ns": settings.ttft_bound_ns,
            "tpot_bound_ns": settings.tpot_bound_ns,
            "source": settings.token_bounds_source,
            "measure": "latency_ns of a probe = the larger of (p TTFT ÷ its bound) and (p TPOT ÷ "
            "its bound), each percentile over every issued query with failures (and, for TPOT, "
            "answers of ≤ 1 token) at +∞, × 1 s (1 s = exactly at the bounds); the client's "
            "send-lag allowance is taken from the tighter bound",
        }
    if settings.goodput_rule:
        return {
            "name": GOODPUT_RULE,
            "text": settings.rule_text(),
            "goodput_target": settings.goodput_target,
            "slos": [{"name": s.name, "bound_ns": s.bound_ns} for s in settings.slos],
            "measure": "latency_ns of a probe = the requests' worst SLO ratio (figure ÷ bound) at "
            "the rank the target share needs, × 1 s (1 s = exactly at the bounds; ≤ 1 s exactly "
            "when goodput holds); the client's send-lag allowance is taken from the tightest SLO",
        }
    return {
        "name": MLPERF_RULE,
        "text": settings.rule_text(),
        "percentile": settings.percentile,
        "target_latency_ns": settings.target_latency_ns,
    }


def probe_json(run: ProbeRun) -> dict[str, Any]:
    summary, probe = run.summary, run.probe
    extra: dict[str, Any] = {}
    if run.goodput is not None:
        extra = {
            "goodput_share": run.goodput.share,
            "slo_ratio": (
                None if probe.latency_ns >= FAILED_LATENCY_NS
                else probe.latency_ns / NORMALIZED_BOUND_NS
            ),
            "goodput": run.goodput.to_json(),
        }  # fmt: skip
    if run.token_ratio is not None:
        extra = {
            "token_ratio": None if math.isinf(run.token_ratio) else run.token_ratio,
            "ttft_ns": run.ttft_ns,  # at the rule's percentile, successful answers only
            "tpot_ns": run.tpot_ns,
            "tokens_per_s": run.tokens_per_s,  # completed tokens ÷ the last completion
        }
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
        **extra,
        **stages_json(run.stages),  # over --stages: each at this probe's speed-up
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
        "rule": rule_json(settings),
        "target": {**plain(target), "url": redact_url(target.url)},
        "model": plain(model),
        "environment": environment,
        "calibration_qps": outcome.calibration_qps,
        "probes": [probe_json(run) for run in outcome.runs],
        "peak_qps": conclusion.peak_qps,
        "upper_qps": conclusion.upper_qps,
        "status": conclusion.status,
        "open_above": conclusion.open_above,  # a lower bound with nothing known above it
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


def passed_label(run: ProbeRun, settings: PeakSettings) -> str:
    """How the progress display names a passing probe ("VALID at ...", "goodput ... at ...")."""
    probe = run.probe
    if run.goodput is not None:
        return f"goodput {run.goodput.share * 100:.2f} % at {probe.qps:,.1f} QPS"
    p = f"p{settings.percentile * 100:g}"
    if run.token_ratio is not None:
        return f"VALID at {probe.qps:,.1f} QPS (token ratio {run.token_ratio:.2f})"
    return f"VALID at {probe.qps:,.1f} QPS ({p} {probe.latency_ns / 1e6:.2f} ms)"


def probe_row(run: ProbeRun, percentile: float, bound_ns: int) -> list[str]:
    probe = run.probe
    if probe.client_bound:
        verdict = "[yellow]client-bound (not counted)[/]"
    elif probe.valid:
        verdict = "[green]goodput held[/]" if run.goodput is not None else "[green]VALID[/]"
    else:
        verdict = "[red]goodput missed[/]" if run.goodput is not None else "[red]INVALID[/]"
    why = "" if probe.valid else escape("; ".join(probe.reasons[:2]))
    return [
        f"{probe.qps:,.1f}",
        f"{run.summary.completed_qps:,.1f}",
        _measure_cell(run, bound_ns),
        f"{ns_to_ms(run.summary.send_lag.p99_ns):,.2f}",
        verdict,
        why,
    ]


def probe_lines(run: ProbeRun, percentile: float, bound_ns: int, indent: str = "") -> list[str]:
    """The plain lines printed as each probe ends: the probe's cells, then each stage's."""
    cells = probe_row(run, percentile, bound_ns)
    lines = [f"{indent}probe: " + " | ".join(cells)]
    lines += [indent + " | ".join(cell.strip() for cell in row) for row in stage_rows(run)]
    return lines


def stage_rows(run: ProbeRun) -> list[list[str]]:
    """One row per stage of a probe over --stages, in the probe table's columns: the stage's
    offered and completed rate, its latency at the bound's percentile (failures at ∞), and
    whether it met the bound. No stages: no rows."""
    rows = []
    for stage in run.stages:
        latency = "∞" if stage.latency_ns is None else f"{ns_to_ms(stage.latency_ns):,.2f}"
        if not stage.scheduled:
            latency = "-"
        met = "[green]met[/]" if stage.met else "[red]missed[/]"
        rows.append(
            [
                f"  stage {stage.number}: {stage.offered_qps:,.1f}",
                f"{stage.completed_qps:,.1f}",
                latency + ("" if stage.met else " ✗"),
                "",
                met,
                escape(f"{stage.spec}, {stage.scheduled} queries"),
            ]
        )
    return rows


def _measure_cell(run: ProbeRun, bound_ns: int) -> str:
    """The figure the search read: goodput (with its SLO ratio) or the latency at the percentile."""
    probe = run.probe
    failed = probe.latency_ns >= FAILED_LATENCY_NS
    if run.goodput is not None:
        ratio = "∞" if failed else f"{probe.latency_ns / NORMALIZED_BOUND_NS:.2f}"
        return f"{run.goodput.share * 100:.2f} % (ratio {ratio})"
    if run.token_ratio is not None:
        ratio = "∞" if failed else f"{probe.latency_ns / NORMALIZED_BOUND_NS:.2f}"
        ttft, tpot = (
            "-" if ns is None else f"{ns_to_ms(ns):,.1f}" for ns in (run.ttft_ns, run.tpot_ns)
        )
        return f"{ttft} / {tpot} (ratio {ratio})" + (
            " ✗" if probe.latency_ns > NORMALIZED_BOUND_NS else ""
        )
    cell = "∞ (failures)" if failed else f"{ns_to_ms(probe.latency_ns):,.2f}"
    return cell + (" ✗" if probe.latency_ns > bound_ns else "")


def peak_table(settings: PeakSettings, outcome: PeakOutcome) -> Table:
    p = f"p{settings.percentile * 100:g}"
    if settings.token_rule:
        ttft, tpot = (
            f"{ns_to_ms(ns):g}" if ns else "none"
            for ns in (settings.ttft_bound_ns, settings.tpot_bound_ns)
        )
        title = (
            f"find-peak probes (in order): {p} TTFT (from scheduled time) / {p} TPOT, ms, vs "
            f"bounds {ttft} / {tpot} ms; ratio = the worse of each ÷ its bound, failures at ∞ "
            "(≤ 1 holds)"
        )
        measured = f"{p} TTFT / TPOT ms"
    elif settings.goodput_rule:
        title = (
            f"find-peak probes (in order): goodput (requests meeting {describe_all(settings.slos)},"
            f" from scheduled time) vs target {settings.goodput_target * 100:g} %; ratio = the "
            "worst SLO ratio at that share (≤ 1 holds)"
        )
        measured = "goodput"
    else:
        title = (
            f"find-peak probes (in order): {p} latency from scheduled time vs bound "
            f"{ns_to_ms(settings.target_latency_ns):g} ms"
        )
        measured = f"{p} ms"
    table = Table(title=escape(title), title_justify="left")
    for heading in ("QPS asked", "QPS done", measured, "send-lag p99 ms", "verdict", "why"):
        numeric = "ms" in heading or "QPS" in heading or heading == "goodput"
        table.add_column(heading, justify="right" if numeric else "left")
    for run in outcome.runs:
        table.add_row(*probe_row(run, settings.percentile, settings.target_latency_ns))
        for row in stage_rows(run):
            table.add_row(*row)
    if any(run.stages for run in outcome.runs):
        table.caption_justify = "left"
        table.caption = escape(
            "stage rows: the stage's offered QPS at the probe's speed-up, the QPS it completed, "
            f"and its own {p} from scheduled time (failures at ∞); a probe is VALID only if "
            "every stage met the bound"
        )
    return table


def render_peak(console: Console, settings: PeakSettings, outcome: PeakOutcome) -> None:
    console.print(peak_table(settings, outcome))
    conclusion = outcome.conclusion
    if conclusion.peak_qps is not None:
        held = (
            settings.rule_text()
            if settings.goodput_rule or settings.token_rule
            else f"{settings.percentile * 100:g}th percentile ≤ "
            f"{ns_to_ms(settings.target_latency_ns):g} ms"
        )
        console.print(
            f"[bold]Peak: {conclusion.peak_qps:,.1f} QPS[/] with {escape(held)} "
            f"({len(outcome.runs)} probes, {outcome.elapsed_s:.0f} s)",
            highlight=False,
        )
    else:
        console.print("[bold red]No peak found[/]", highlight=False)
    console.print(escape(conclusion.text), highlight=False)
