"""`loadtest compare`'s noise-aware part: each target's searched peak with its interval, the ratio
Triton ÷ native with its interval, p99 at equal QPS with seeded bootstrap intervals, and what is
being compared, as tables, lines and compare.json keys (`peak_search`, `p99_intervals`).

The seed's claim is "Triton reached ~95 % of the custom harness's throughput at the latency
bound"; the headline line says the same thing for this machine, with the interval, and says
"no difference measured at this resolution" whenever the two peaks' intervals overlap.
"""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table

from loadtest.analysis.compare import (
    EqualQpsInterval,
    PeakInterval,
    PeakRatio,
    bootstrap_percentile,
)
from loadtest.core.units import ms_cell
from loadtest.report.peak_report import probe_json
from loadtest.report.results import plain
from loadtest.scenarios.experiments.compare_run import (
    NATIVE,
    CompareResult,
    CompareRun,
    CompareSession,
)
from loadtest.scenarios.searches.compare_peak_run import ComparePeaks, TargetPeak
from loadtest.scenarios.searches.peak_run import ProbeRun
from loadtest.scenarios.searches.peak_search import FAILED_LATENCY_NS

CONFIDENCE = 0.95  # of the bootstrap intervals


def peak_interval(peak: TargetPeak) -> PeakInterval:
    """The peak with its interval; open above when nothing bounds it (Conclusion.open_above)."""
    return PeakInterval(peak.peak_qps, peak.low_qps, peak.high_qps, peak.conclusion.open_above)


def peak_ratios(peaks: ComparePeaks) -> list[PeakRatio]:
    """Each Triton target's peak against native's (none without a native target)."""
    native = peaks.peaks.get(NATIVE)
    if native is None:
        return []
    return [
        PeakRatio(name, peak_interval(peak), peak_interval(native), peaks.settings.resolution)
        for name, peak in peaks.peaks.items()
        if name != NATIVE
    ]


def _p99_interval(run: CompareRun) -> tuple[float, float] | None:
    latencies = run.measurement.outcome.records.latency_from_scheduled_ns()
    return bootstrap_percentile(
        latencies, run.summary.failed, 0.99, seed=run.settings.schedule_seed, confidence=CONFIDENCE
    )


def equal_qps_intervals(result: CompareResult) -> dict[str, list[EqualQpsInterval]]:
    """Per Triton target: p99 at each QPS both it and native ran usably (the fixed rates), each
    with a seeded bootstrap interval."""
    usable = [r for r in result.runs if r.summary.client_kept_up]
    native = {r.settings.qps: r for r in usable if r.target == NATIVE}
    out: dict[str, list[EqualQpsInterval]] = {}
    for run in usable:
        base = native.get(run.settings.qps)
        if run.target == NATIVE or base is None:
            continue
        mine, theirs = _p99_interval(run), _p99_interval(base)
        if mine is not None and theirs is not None:
            out.setdefault(run.target, []).append(EqualQpsInterval(run.settings.qps, mine, theirs))
    return out


def what_is_compared(session: CompareSession, result: CompareResult) -> list[str]:
    """Plain words on which servers the ratio compares (the seed compared real backends)."""
    config = result.triton_config or {}
    backend = str(config.get("backend", ""))
    lines = []
    if session.deployment.embedded is not None or backend == "python":
        lines.append(
            "on this machine the embedded Triton runs onnxruntime through a Python-backend shim, "
            "not Triton's C++ onnxruntime backend: the ratio measures Triton's serving path plus "
            "that shim against onnxruntime called in-process"
        )
        lines.append("a Docker or GPU deployment (--url) compares the real backends")
    elif backend:
        lines.append(f"Triton's '{backend}' backend against onnxruntime called in-process")
    return lines


# -- compare.json ---------------------------------------------------------------------------------


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def peak_search_json(peaks: ComparePeaks) -> dict[str, Any]:
    """compare.json's `peak_search`: the settings, every probe per target, peaks and ratios."""
    targets = []
    for peak in peaks.peaks.values():
        probes = []
        for run, repeat in zip(peak.runs, peak.repeated, strict=True):
            row = probe_json(run)
            row["repeat"] = repeat
            row["schedule_seed"] = run.settings.schedule_seed
            probes.append(row)
        targets.append(
            {
                "target": peak.target,
                "calibration_qps": peak.calibration_qps,
                "peak_qps": peak.peak_qps,
                "low_qps": peak.low_qps,
                "high_qps": peak.high_qps,
                "tokens_per_s_at_peak": _tokens_per_s(peak),  # the token rule's; else null
                "status": peak.conclusion.status,
                "open_above": peak.conclusion.open_above,
                "conclusion": peak.conclusion.text,
                "probes": probes,
            }
        )
    ratios = []
    for ratio in peak_ratios(peaks):
        bounds = ratio.interval
        ratios.append(
            {
                "target": ratio.target,
                "ratio": ratio.ratio,
                "low": _finite(bounds[0]) if bounds else None,
                "high": _finite(bounds[1]) if bounds else None,  # null: unbounded (open above)
                "percent": None if ratio.ratio is None else round(100 * ratio.ratio, 2),
                "differs": ratio.differs,
                "verdict": ratio.verdict,
            }
        )
    return {
        "settings": plain(peaks.settings),
        "rule": _rule(peaks),
        "elapsed_s": round(peaks.elapsed_s, 3),
        "budget_exhausted": peaks.budget_exhausted,
        "stop_reason": peaks.stop_reason,
        "interleaved": True,
        "targets": targets,
        "ratios": ratios,
    }


def p99_intervals_json(intervals: dict[str, list[EqualQpsInterval]]) -> list[dict[str, Any]]:
    """compare.json's `p99_intervals` (ns; null = ∞)."""
    return [
        {
            "target": name,
            "qps": e.qps,
            "confidence": CONFIDENCE,
            "p99_ns": [_finite(v) for v in e.p99],
            "native_p99_ns": [_finite(v) for v in e.native_p99],
            "differs": e.differs,
            "verdict": e.verdict,
        }
        for name, rows in intervals.items()
        for e in rows
    ]


# -- terminal -------------------------------------------------------------------------------------


def _percent(share: float) -> str:
    return "∞" if math.isinf(share) else f"{100 * share:.0f}"


def _qps(value: float) -> str:
    return f"{value:,.1f}"


def _latency(ns: float) -> str:
    return "∞" if not math.isfinite(ns) or ns >= FAILED_LATENCY_NS else ms_cell(ns)


def _rule(peaks: ComparePeaks) -> str:
    """What the search held, in words."""
    s = peaks.settings
    if s.token_rule:
        return s.rule_text()
    return f"the SLO (p{s.percentile * 100:g} ≤ {s.target_latency_ns / 1e6:g} ms)"


def _probe_figure(run: ProbeRun, token_rule: bool) -> str:
    """A probe's measured figure: its percentile latency, or under the token rule its
    percentile TTFT / TPOT (the search's own number there is a ratio to the bounds)."""
    if not token_rule:
        return _latency(run.probe.latency_ns)
    if run.probe.latency_ns >= FAILED_LATENCY_NS:
        return "∞ (failures)"
    return " / ".join("—" if ns is None else ms_cell(ns) for ns in (run.ttft_ns, run.tpot_ns))


def _tokens_per_s(peak: TargetPeak) -> float | None:
    """Completed tokens/s of the peak's last VALID run (None: no peak, or not the token rule)."""
    runs = [r for r in peak.runs if r.probe.qps == peak.peak_qps and r.probe.valid]
    return runs[-1].tokens_per_s if runs else None


def _interval_cell(peak: TargetPeak) -> str:
    if peak.peak_qps is None:
        return "—"
    if peak.conclusion.open_above:
        return f"≥ {_qps(peak.low_qps)} (nothing failed above)"
    return f"\\[{_qps(peak.low_qps)}, {_qps(peak.high_qps)}]"


def peak_table(peaks: ComparePeaks) -> Table:
    s = peaks.settings
    p = f"p{s.percentile * 100:g}"
    table = Table(
        title=f"Peak under {_rule(peaks)} — same search as find-peak, probes interleaved across "
        "targets, boundary repeated on another seed",
        title_justify="left",
    )
    measured = f"{p} TTFT / TPOT ms" if s.token_rule else f"{p} ms"
    columns = [
        ("target", "left"),
        ("calibration\nQPS", "right"),
        (f"probes (QPS: verdict, {measured})", "left"),
        ("peak QPS", "right"),
        ("interval", "right"),
    ]
    if s.token_rule:
        columns.append(("tokens/s\nat peak", "right"))
    for name, justify in columns:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for peak in peaks.peaks.values():
        cells = []
        for run, repeat in zip(peak.runs, peak.repeated, strict=True):
            probe = run.probe
            word = "CLIENT-BOUND" if probe.client_bound else ("VALID" if probe.valid else "INVALID")
            again = " (repeat)" if repeat else ""
            missed = [str(stage.number) for stage in run.stages if not stage.met]
            stages = f" (stage {', '.join(missed)} missed)" if missed else ""
            figure = _probe_figure(run, s.token_rule)
            cells.append(f"{_qps(probe.qps)}: {word}, {figure}{stages}{again}")
        calibration = "—" if peak.calibration_qps is None else _qps(peak.calibration_qps)
        row = [
            peak.target,
            calibration,
            "\n".join(cells) or "none",
            "none" if peak.peak_qps is None else _qps(peak.peak_qps),
            _interval_cell(peak),
        ]
        if s.token_rule:
            rate = _tokens_per_s(peak)
            row.append("—" if rate is None else f"{rate:,.0f}")
        table.add_row(*row)
    table.caption = (
        "peak = the highest rate VALID every time it ran; interval = \\[peak, lowest INVALID rate] "
        f"(or one resolution step, {s.resolution * 100:g} %, when none failed); "
        f"{peaks.elapsed_s:.0f} s of probes"
        + ("; the budget ran out" if peaks.budget_exhausted else "")
        + ("; tokens/s: completed tokens ÷ the last completion (LoadGen's)" if s.token_rule else "")
    )
    return table


def ratio_lines(peaks: ComparePeaks, bound_ms: float, percentile: float) -> list[str]:
    """The headline, in the seed's terms: Triton as a % of native's throughput at the bound."""
    token_rule = peaks.settings.token_rule
    held = f"under {_rule(peaks)}" if token_rule else f"at p{percentile * 100:g} ≤ {bound_ms:g} ms"
    lines = []
    for ratio in peak_ratios(peaks):
        bounds = ratio.interval
        if ratio.ratio is None or bounds is None:
            lines.append(f"{ratio.target} ÷ native peak: {ratio.verdict}")
            continue
        tokens = ""
        if token_rule:
            rates = [_tokens_per_s(peaks.peaks[name]) for name in (ratio.target, NATIVE)]
            if all(rate is not None for rate in rates):
                tokens = f"; {rates[0]:,.0f} / {rates[1]:,.0f} tokens/s"
        lines.append(
            f"{ratio.target} reached {100 * ratio.ratio:.0f} % of native onnxruntime's "
            f"throughput {held} "
            f"(interval {_percent(bounds[0])}–{_percent(bounds[1])} %; "
            f"{ratio.triton.peak_qps:,.1f} / {ratio.native.peak_qps:,.1f} QPS{tokens}): "
            f"{ratio.verdict}"
        )
    return lines


def equal_qps_lines(intervals: dict[str, list[EqualQpsInterval]]) -> list[str]:
    lines = []
    for name, rows in intervals.items():
        for e in rows:
            lines.append(
                f"{name} p99 at {e.qps:g} QPS: {_latency(e.p99[0])}–{_latency(e.p99[1])} ms "
                f"against native {_latency(e.native_p99[0])}–"
                f"{_latency(e.native_p99[1])} ms ({CONFIDENCE * 100:g} % bootstrap): {e.verdict}"
            )
    return lines
