"""`loadtest plan`: replicas needed for a target QPS, from a measured peak or a find-peak result.

A find-peak result says which pass rule it searched (`rule`: MLPerf's percentile bound, LoadGen's
token bounds on TTFT and TPOT, or goodput under --slo); the plan takes its capacity from any of
them and says which. Files written before the
goodput rule have no `rule` and were searched under MLPerf's."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from loadtest.analysis.capacity import CapacityPlan, plan_capacity
from loadtest.commands.common import console
from loadtest.commands.options import finite_float
from loadtest.core.json_depth import loads_bounded
from loadtest.core.slos import Slo, describe_all
from loadtest.core.units import ns_to_ms
from loadtest.errors import ResultFileError, SettingsError
from loadtest.report.outputs import write_atomically
from loadtest.report.peak_report import GOODPUT_RULE, TOKEN_RULE
from loadtest.report.results import SCHEMA, plain

UNUSABLE = {
    "none-valid": "no probe met the SLO",
    "no-measurement": "no probe measured the server (none ran, or every one was client-bound)",
}


def _read_peak(path: Path) -> dict[str, Any]:
    try:
        data = loads_bounded(path.read_text())
    except (OSError, ValueError) as exc:  # JsonTooDeep is a ValueError
        raise SettingsError(f"cannot read find-peak result {path}: {exc}") from None
    if (
        not isinstance(data, dict)
        or data.get("schema") != SCHEMA
        or data.get("kind") not in ("find-peak", "sweep")
    ):
        raise SettingsError(f"{path} is not a loadtest find-peak or sweep result")
    return data


@dataclass(frozen=True)
class Measured:
    """What a result file gives the plan: the peak, the SLO it held, the rule that found it."""

    peak_qps: float
    slo: str
    rule: str
    notes: tuple[str, ...]


def _from_file(path: Path, percentile: float | None, target_latency: float | None) -> Measured:
    data = _read_peak(path)
    status = data.get("status", "")
    if data.get("peak_qps") is None:
        raise SettingsError(f"{path} holds no peak to plan from: {UNUSABLE.get(status, status)}")
    if isinstance(data.get("mix"), dict):
        return _from_mix(path, data, percentile, target_latency)
    rule = data.get("rule")
    if isinstance(rule, dict) and rule.get("name") == GOODPUT_RULE:
        return _from_goodput(path, data, rule, percentile, target_latency)
    if isinstance(rule, dict) and rule.get("name") == TOKEN_RULE:
        return _from_tokens(path, data, rule, percentile, target_latency)
    settings = data["settings"]
    measured_p = float(settings["percentile"]) * 100
    measured_ms = ns_to_ms(int(settings["target_latency_ns"]))
    p = measured_p if percentile is None else percentile
    bound = measured_ms if target_latency is None else target_latency
    if p > measured_p or bound < measured_ms:
        raise SettingsError(
            f"the peak in {path} was measured under p{measured_p:g} ≤ {measured_ms:g} ms; "
            f"p{p:g} ≤ {bound:g} ms is stricter: run find-peak with that SLO first"
        )
    notes = []
    if (p, bound) != (measured_p, measured_ms):
        notes.append(
            f"the peak was measured under the stricter p{measured_p:g} ≤ {measured_ms:g} ms, so "
            "the plan is conservative for the SLO asked"
        )
    if data.get("kind") == "sweep":
        notes.append(
            f"replicas of the sweep's recommended configuration: {data['winner']['label']}"
        )
    notes.extend(_convergence(data))
    shape = data.get("shape")
    if isinstance(shape, dict) and shape.get("peak_speedup") is not None:
        notes.append(
            f"the peak is a traffic shape's mean rate at its largest VALID speed-up "
            f"(×{float(shape['peak_speedup']):.3g} of {float(shape['mean_qps']):,.4g} QPS): "
            "the plan is for traffic of that shape"
        )
    searched = "sweep" if data.get("kind") == "sweep" else "find-peak"
    return Measured(
        float(data["peak_qps"]),
        f"p{p:g} ≤ {bound:g} ms",
        f"{searched}'s MLPerf rule: p{measured_p:g} ≤ {measured_ms:g} ms from the scheduled "
        "time, with early stopping",
        tuple(notes),
    )


def _convergence(data: dict[str, Any]) -> list[str]:
    status = data.get("status", "")
    if status == "bracketed":
        return []
    return [f"find-peak did not converge ({status}): {data.get('conclusion', '')}"]


def _from_goodput(
    path: Path,
    data: dict[str, Any],
    rule: dict[str, Any],
    percentile: float | None,
    target_latency: float | None,
) -> Measured:
    """A peak searched under the goodput rule: its SLO is the share of requests meeting every
    --slo, which --percentile and --target-latency cannot restate."""
    if percentile is not None or target_latency is not None:
        raise SettingsError(
            f"{path} was searched under the goodput rule ({rule.get('text', '')}): --percentile "
            "and --target-latency do not apply; run find-peak with the SLO you plan for"
        )
    try:
        share = float(rule["goodput_target"]) * 100
        slos = describe_all(tuple(Slo(str(s["name"]), int(s["bound_ns"])) for s in rule["slos"]))
    except (KeyError, TypeError, ValueError):
        raise SettingsError(f"{path}: its goodput rule is malformed") from None
    return Measured(
        float(data["peak_qps"]),
        f"goodput ≥ {share:g} % under {slos}",
        f"find-peak's goodput rule: {rule.get('text', '')}",
        tuple(_convergence(data)),
    )


def _from_tokens(
    path: Path,
    data: dict[str, Any],
    rule: dict[str, Any],
    percentile: float | None,
    target_latency: float | None,
) -> Measured:
    """A peak searched under LoadGen's token bounds: its SLO is p TTFT and p TPOT, which
    --target-latency (an end-to-end bound) cannot restate."""
    if percentile is not None or target_latency is not None:
        raise SettingsError(
            f"{path} was searched under the token bounds ({rule.get('text', '')}): --percentile "
            "and --target-latency do not apply; run find-peak with the bounds you plan for"
        )
    try:
        p = f"p{float(rule['percentile']) * 100:g}"
        held = [
            f"{p} {name} ≤ {ns_to_ms(int(rule[key])):g} ms"
            for name, key in (("TTFT", "ttft_bound_ns"), ("TPOT", "tpot_bound_ns"))
            if int(rule[key])
        ]
    except (KeyError, TypeError, ValueError):
        raise SettingsError(f"{path}: its token rule is malformed") from None
    if not held:
        raise SettingsError(f"{path}: its token rule holds no bound")
    return Measured(
        float(data["peak_qps"]),
        " and ".join(held),
        f"find-peak's token rule: {rule.get('text', '')}",
        tuple(_convergence(data)),
    )


def _from_mix(
    path: Path, data: dict[str, Any], percentile: float | None, target_latency: float | None
) -> Measured:
    """A find-peak --mix result: the peak is the mix's total QPS at its fixed weights, its SLO
    every entry's own bound; a replica then is a copy of the whole mix (every model on it)."""
    if percentile is not None or target_latency is not None:
        raise SettingsError(
            f"{path} is a mix: each entry has its own bound, so --percentile and "
            "--target-latency do not apply"
        )
    entries = [e for e in data["mix"].get("entries", []) if isinstance(e, dict)]
    bounds = ", ".join(
        f"{e.get('name')} p{float(e.get('percentile') or 0.99) * 100:g} ≤ "
        f"{ns_to_ms(int(e.get('target_latency_ns') or 0)):g} ms"
        for e in entries
    )
    shares = ", ".join(f"{e.get('name')} {float(e.get('share') or 0) * 100:.0f} %" for e in entries)
    notes = [
        f"the peak is the mix's total QPS at fixed weights ({shares}); a replica is a copy of "
        "the whole mix, every model on it, and the load must arrive in those proportions"
    ]
    notes.extend(_convergence(data))
    return Measured(
        float(data["peak_qps"]),
        f"every entry within its own bound ({bounds})",
        "find-peak --mix: the mix's total rate until its first entry breaks its own MLPerf bound",
        tuple(notes),
    )


def plan(
    target_qps: Annotated[
        float, typer.Option(parser=finite_float, help="Total QPS the deployment must carry.")
    ],
    peak_qps: Annotated[
        float | None,
        typer.Option(parser=finite_float, help="Measured peak QPS of one replica under the SLO."),
    ] = None,
    from_result: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="A find-peak.json or sweep.json (its winner) to take the peak and SLO from.",
        ),
    ] = None,
    headroom: Annotated[
        float, typer.Option(parser=finite_float, help="Fraction of the peak kept in reserve.")
    ] = 0.2,
    spare: Annotated[int, typer.Option(help="Extra replicas for failures (N+k).")] = 0,
    percentile: Annotated[
        float | None,
        typer.Option(
            parser=finite_float, help="SLO percentile (with --from: default the measured one)."
        ),
    ] = None,
    target_latency: Annotated[
        float | None,
        typer.Option(
            parser=finite_float, help="SLO bound in ms (with --from: default the measured one)."
        ),
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Write the plan as JSON here.")] = None,
) -> None:
    """How many replicas carry --target-qps within the SLO, with stated headroom and assumptions."""
    if (peak_qps is None) == (from_result is None):
        raise SettingsError("give exactly one of --peak-qps or --from FIND_PEAK_JSON")
    if percentile is not None and not 0 < percentile < 100:
        raise SettingsError(f"--percentile must be in (0, 100), got {percentile:g}")
    if target_latency is not None and target_latency <= 0:
        raise SettingsError(f"--target-latency must be > 0 ms, got {target_latency:g}")
    if from_result is not None:
        measured = _from_file(from_result, percentile, target_latency)
    else:
        assert peak_qps is not None
        slo = (
            f"p{percentile:g} ≤ {target_latency:g} ms"
            if percentile is not None and target_latency is not None
            else "the SLO the peak was measured under"
        )
        measured = Measured(peak_qps, slo, "given by hand (--peak-qps): no search read", ())
    result = plan_capacity(
        target_qps, measured.peak_qps, headroom, spare, measured.slo, measured.notes, measured.rule
    )
    render_plan(result)
    if output is not None:
        text = json.dumps({"schema": SCHEMA, "kind": "plan", **plain(result)}, indent=1)
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(output, text + "\n")
        except OSError as exc:
            raise ResultFileError(f"cannot write {output}: {exc.strerror or exc}") from None
        console.print(f"plan: {output}")


def _rate(qps: float) -> str:
    """A rate with its digits: 0.1 and up to one decimal, below it three significant ones (a
    peak of 0.004 QPS is not "0.0")."""
    return f"{qps:,.1f}" if qps >= 0.1 else f"{qps:.3g}"


def render_plan(result: CapacityPlan) -> None:
    table = Table(title="Capacity plan", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("target", f"{_rate(result.target_qps)} QPS within {escape(result.slo)}")
    table.add_row("measured peak", f"{_rate(result.peak_qps)} QPS per replica under that SLO")
    table.add_row("found by", escape(result.rule))
    table.add_row(
        "usable per replica",
        f"{_rate(result.usable_qps_per_replica)} QPS ({result.headroom * 100:g} % headroom)",
    )
    table.add_row(
        "[bold]replicas[/]",
        f"[bold]{result.replicas}[/] = {result.replicas_for_load} for the load"
        + (f" + {result.spare} spare" if result.spare else ""),
    )
    table.add_row(
        "load at target",
        f"{_rate(result.load_per_replica_qps)} QPS per replica = "
        f"{result.utilization_of_peak * 100:.0f} % of the measured peak",
    )
    console.print(table)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    console.print("Assumptions:")
    for assumption in result.assumptions:
        console.print(f"  - {escape(assumption)}", highlight=False)
