"""Plotly figures for the HTML report: percentile (HDR) plot, CDF, timeline, find-peak curve, split.

Each builder takes plain numbers (curves, timelines, dicts read from result files) and returns a
`plotly.graph_objects.Figure`; html.py turns them into divs. Every figure's title says what its
latency is (completion − scheduled time), and runs whose client fell behind its schedule are drawn
dashed and named "client-bound", because their latencies include the client's own queue.
Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from loadtest.core.units import NS_PER_MS, NS_PER_S, ns_to_s
from loadtest.report.curves import PercentileCurve, percentile_ticks
from loadtest.rules.stats import Timeline

PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
)
ORIGIN = "latency = completion − scheduled time (no coordinated omission)"
CLIENT_BOUND = "client-bound"


@dataclass(frozen=True, eq=False)
class RunSeries:
    """What the run-level figures need from one run."""

    label: str
    index: int  # colour slot
    curve: PercentileCurve
    timeline: Timeline | None  # None when the file has neither a timeline nor records
    client_kept_up: bool

    @property
    def name(self) -> str:
        return self.label if self.client_kept_up else f"{self.label} ⚠ {CLIENT_BOUND}"

    @property
    def color(self) -> str:
        return PALETTE[self.index % len(PALETTE)]

    @property
    def dash(self) -> str:
        return "solid" if self.client_kept_up else "dash"


def layout(figure: go.Figure, title: str, subtitle: str, height: int = 440) -> go.Figure:
    figure.update_layout(
        title={"text": f"{title}<br><sup>{subtitle}</sup>", "x": 0.01},
        template="plotly_white",
        height=height,
        margin={"l": 70, "r": 20, "t": 80, "b": 60},
        legend={"orientation": "h", "y": -0.18},
        hovermode="closest",
    )
    return figure


def bound_note(runs: Sequence[RunSeries]) -> str:
    bound = [r.label for r in runs if not r.client_kept_up]
    if not bound:
        return "client kept up with its schedule in every run"
    return f"⚠ {CLIENT_BOUND} (client fell behind, latencies include its queue): " + ", ".join(
        bound
    )


def add_percentile_trace(
    figure: go.Figure, curve: PercentileCurve, name: str, color: str, dash: str, label: str
) -> float:
    """One curve on an HDR percentile plot (x = 1/(1 − p), y in ms); returns its widest x (0 when
    the curve is empty and nothing was drawn)."""
    if curve.count == 0:
        return 0.0
    x = curve.inverse_tail
    figure.add_trace(
        go.Scatter(
            x=x,
            y=curve.latency_ns / NS_PER_MS,
            name=name,
            mode="lines+markers" if len(x) < 20 else "lines",
            line={"color": color, "dash": dash, "shape": "hv"},
            customdata=curve.percentile * 100,
            hovertemplate="p%{customdata:.4g}: %{y:.3f} ms<extra>" + label + "</extra>",
        )
    )
    return float(x.max())


def percentile_axes(figure: go.Figure, widest: float, y_title: str) -> None:
    """The HDR plot's axes: a log x labelled 50 %, 90 %, 99 %, ... up to `widest`; y from 0."""
    ticks, labels = percentile_ticks(max(widest, 10.0))
    figure.update_xaxes(
        type="log", tickvals=ticks, ticktext=labels, title="percentile (x = 1/(1 − p), log)"
    )
    figure.update_yaxes(title=y_title, rangemode="tozero")


def percentile_figure(runs: Sequence[RunSeries], method: str) -> go.Figure:
    """Latency vs percentile, x = 1/(1 − p) on a log axis labelled 50 %, 90 %, 99 %, 99.9 % …"""
    figure = go.Figure()
    widest = 10.0
    for run in runs:
        drawn = add_percentile_trace(figure, run.curve, run.name, run.color, run.dash, run.label)
        widest = max(widest, drawn)
    percentile_axes(figure, widest, "latency (ms)")
    return layout(
        figure,
        "Latency by percentile (HDR plot)",
        f"{ORIGIN}; percentile {method}; {bound_note(runs)}",
    )


def cdf_figure(runs: Sequence[RunSeries]) -> go.Figure:
    """Fraction of successful queries at or under each latency."""
    figure = go.Figure()
    for run in runs:
        curve = run.curve
        if curve.count == 0:
            continue
        figure.add_trace(
            go.Scatter(
                x=curve.latency_ns / NS_PER_MS,
                y=curve.percentile,
                name=run.name,
                mode="lines+markers" if len(curve.percentile) < 20 else "lines",
                line={"color": run.color, "dash": run.dash, "shape": "hv"},
                hovertemplate="%{x:.3f} ms: %{y:.4%}<extra>" + run.label + "</extra>",
            )
        )
    figure.update_xaxes(title="latency (ms)", type="log")
    figure.update_yaxes(title="fraction of successful queries ≤ latency", range=[0, 1.02])
    return layout(figure, "Latency CDF", f"{ORIGIN}; {bound_note(runs)}")


TIMELINE_ROWS = (
    "completed QPS (solid) vs scheduled (dotted)",
    "p99 latency (solid), p50 (dotted) (ms)",
    "errors / s",
    "send lag p99 (solid), max (dotted) (ms)",
    "in flight",
)


def timeline_figure(runs: Sequence[RunSeries]) -> go.Figure:
    """Per-second series (from the records, or result.json's timeline): throughput, p99 and p50,
    errors, send lag, in-flight."""
    figure = make_subplots(
        rows=len(TIMELINE_ROWS),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.045,
        subplot_titles=TIMELINE_ROWS,
    )
    for run in runs:
        line = run.timeline
        if line is None:
            continue
        seconds = ns_to_s(line.bucket_ns)
        t = (line.start_ns + line.bucket_ns / 2) / NS_PER_S  # bucket midpoints
        series: list[tuple[int, np.ndarray, str]] = [
            (1, line.completed / seconds, "solid"),
            (1, line.scheduled / seconds, "dot"),
            (2, line.p99_latency_ns / NS_PER_MS, "solid"),
            (2, line.p50_latency_ns / NS_PER_MS, "dot"),
            (3, line.errors / seconds, run.dash),
            (4, line.p99_send_lag_ns / NS_PER_MS, "solid"),
            (4, line.max_send_lag_ns / NS_PER_MS, "dot"),
            (5, line.in_flight.astype(np.float64), run.dash),
        ]
        for number, (row, values, dash) in enumerate(series):
            figure.add_trace(
                go.Scatter(
                    x=t,
                    y=values,
                    name=run.name,
                    legendgroup=run.label,
                    showlegend=number == 0,
                    mode="lines+markers",
                    marker={"size": 4},
                    line={"color": run.color, "dash": dash},
                    hovertemplate="t=%{x:g} s: %{y:.4g}<extra>" + run.label + "</extra>",
                ),
                row=row,
                col=1,
            )
    figure.update_xaxes(title="time since the first scheduled query (s)", row=len(TIMELINE_ROWS))
    figure.update_yaxes(rangemode="tozero")
    bucket = next((ns_to_s(r.timeline.bucket_ns) for r in runs if r.timeline is not None), 1.0)
    return layout(
        figure,
        "Timeline",
        f"{bucket:g} s buckets (points at bucket centres); p99 of {ORIGIN}, by completion "
        f"time; {bound_note(runs)}",
        height=900,
    )


def peak_figure(
    probes: Sequence[dict[str, Any]],
    peak_qps: float | None,
    slo_ns: float | None,
    percentile_label: str,
) -> go.Figure:
    """Latency–throughput curve of a find-peak / sweep: probes, the SLO line and the chosen peak.

    Each probe is {"qps": offered QPS, "p99_ns": its latency at the percentile, "valid": bool};
    probes missing qps or latency are skipped.
    """
    points = sorted(
        (float(p["qps"]), float(p["p99_ns"]) / NS_PER_MS, p.get("valid"))
        for p in probes
        if isinstance(p.get("qps"), (int, float)) and isinstance(p.get("p99_ns"), (int, float))
    )
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=[q for q, _, _ in points],
            y=[v for _, v, _ in points],
            mode="lines",
            line={"color": "#888"},
            name="probes (in QPS order)",
            hoverinfo="skip",
        )
    )
    for valid, color, name in ((True, "#2ca02c", "valid"), (False, "#d62728", "invalid")):
        chosen = [(q, v) for q, v, ok in points if bool(ok) is valid]
        figure.add_trace(
            go.Scatter(
                x=[q for q, _ in chosen],
                y=[v for _, v in chosen],
                mode="markers",
                marker={"color": color, "size": 10, "symbol": "circle" if valid else "x"},
                name=f"{name} probe",
                hovertemplate="%{x:g} QPS: %{y:.3f} ms<extra>" + name + "</extra>",
            )
        )
    if slo_ns:
        figure.add_hline(
            y=slo_ns / NS_PER_MS,
            line={"color": "#d62728", "dash": "dash"},
            annotation_text=f"SLO {slo_ns / NS_PER_MS:g} ms",
            annotation_position="top left",
        )
    if peak_qps:
        figure.add_vline(
            x=peak_qps,
            line={"color": "#1f77b4", "dash": "dot"},
            annotation_text=f"peak {peak_qps:g} QPS",
            annotation_position="top right",
        )
        at_peak = [v for q, v, _ in points if q == peak_qps]
        if at_peak:
            figure.add_trace(
                go.Scatter(
                    x=[peak_qps],
                    y=at_peak[:1],
                    mode="markers",
                    marker={"symbol": "star", "size": 18, "color": "#1f77b4"},
                    name="chosen peak",
                )
            )
    figure.update_xaxes(title="offered load (QPS)")
    figure.update_yaxes(title=f"{percentile_label} latency (ms)", rangemode="tozero")
    return layout(
        figure,
        "Latency–throughput curve (find-peak)",
        f"{percentile_label} of {ORIGIN} per probe; peak = highest valid offered load",
    )


def split_figure(labels: Sequence[str], parts: Sequence[dict[str, float]]) -> go.Figure:
    """Stacked bars of where a query's time went, one bar per compare row (ms)."""
    names: list[str] = []
    for row in parts:
        names.extend(name for name in row if name not in names)
    figure = go.Figure()
    for i, name in enumerate(names):
        figure.add_trace(
            go.Bar(
                x=list(labels),
                y=[row.get(name, 0.0) / NS_PER_MS for row in parts],
                name=name.removesuffix("_ns").replace("_", " "),
                marker={"color": PALETTE[i % len(PALETTE)]},
                hovertemplate="%{x}: %{y:.3f} ms<extra>" + name + "</extra>",
            )
        )
    figure.update_layout(barmode="stack")
    figure.update_yaxes(title="mean time per query (ms)")
    return layout(
        figure,
        "Where the time goes (server-side split)",
        "Triton statistics: queue, compute input / infer / output; the rest is client + network",
    )


def metric_series_figure(series: Mapping[str, Sequence[float]]) -> go.Figure:
    """Metrics recorded as series (e.g. GPU utilisation per scrape), one line each, vs sample."""
    figure = go.Figure()
    for i, (name, values) in enumerate(series.items()):
        figure.add_trace(
            go.Scatter(
                y=list(values),
                name=name,
                mode="lines+markers",
                line={"color": PALETTE[i % len(PALETTE)]},
            )
        )
    figure.update_xaxes(title="scrape")
    return layout(figure, "Server metrics (Triton :8002)", "as scraped during the run", 360)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (latency, throughput) points no other point beats on both (lower latency
    and higher throughput), in latency order."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def sweep_figure(
    points: Sequence[dict[str, Any]],
    winner: int | None,
    slo_ns: float | None,
    percentile_label: str,
) -> go.Figure:
    """The sweep's configurations as (latency at the peak, peak QPS), the Pareto front and the
    chosen point. Each point is {"label", "peak_qps", "latency_ns", "interval": [lo, hi]}."""
    usable = [
        p
        for p in points
        if isinstance(p.get("peak_qps"), (int, float)) and isinstance(p.get("latency_ns"), int)
    ]
    xy = [(p["latency_ns"] / NS_PER_MS, float(p["peak_qps"])) for p in usable]
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=[x for x, _ in xy],
            y=[y for _, y in xy],
            mode="markers",
            marker={"color": "#888", "size": 9},
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [max(0.0, p["interval"][1] - p["peak_qps"]) for p in usable],
                "arrayminus": [max(0.0, p["peak_qps"] - p["interval"][0]) for p in usable],
                "color": "#bbb",
            },
            text=[p["label"] for p in usable],
            name="configurations (peak interval as bars)",
            hovertemplate="%{text}<br>%{y:,.1f} QPS, %{x:.2f} ms<extra></extra>",
        )
    )
    front = pareto_front(xy)
    figure.add_trace(
        go.Scatter(
            x=[xy[i][0] for i in front],
            y=[xy[i][1] for i in front],
            mode="lines+markers",
            line={"color": "#1f77b4"},
            marker={"size": 10},
            text=[usable[i]["label"] for i in front],
            name="Pareto front",
            hovertemplate="%{text}<br>%{y:,.1f} QPS, %{x:.2f} ms<extra>front</extra>",
        )
    )
    chosen = [p for p in usable if p.get("number") == winner]
    if chosen:
        figure.add_trace(
            go.Scatter(
                x=[chosen[0]["latency_ns"] / NS_PER_MS],
                y=[chosen[0]["peak_qps"]],
                mode="markers",
                marker={"symbol": "star", "size": 20, "color": "#2ca02c"},
                text=[chosen[0]["label"]],
                name="recommended",
                hovertemplate="%{text}<extra>recommended</extra>",
            )
        )
    if slo_ns:
        figure.add_vline(
            x=slo_ns / NS_PER_MS,
            line={"color": "#d62728", "dash": "dash"},
            annotation_text=f"SLO {slo_ns / NS_PER_MS:g} ms",
        )
    figure.update_xaxes(title=f"{percentile_label} latency at the peak (ms)", rangemode="tozero")
    figure.update_yaxes(title="peak QPS within the SLO", rangemode="tozero")
    return layout(
        figure,
        "Throughput–latency of each configuration (sweep)",
        f"peak = highest Poisson rate VALID every time; latency: {percentile_label} of {ORIGIN}",
    )
