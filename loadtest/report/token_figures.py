"""Plotly figures of streamed runs' token figures: TTFT (both origins), TPOT and ITL by percentile,
tokens per response, completed tokens per second over time.

Each takes (run style, token series) pairs: the style is the run's own `figures.RunSeries`, so a
run keeps its colour and its client-bound mark from the latency plots. Every title says what the
figure measures from where, and every subtitle how its percentiles were taken (curves.SOURCE_TEXT:
exact from records, HDR histogram, or the printed percentiles only). Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from loadtest.report.curves import FROM_HISTOGRAM, FROM_RECORDS, FROM_SUMMARY, PercentileCurve
from loadtest.report.figures import (
    RunSeries,
    add_percentile_trace,
    bound_note,
    layout,
    percentile_axes,
)
from loadtest.report.token_series import CREDITED_AT_COMPLETION, TokenSeries
from loadtest.rules.tokens import TPOT_ORIGIN, TTFT_ORIGIN, TTFT_SEND_ORIGIN

Runs = Sequence[tuple[RunSeries, TokenSeries]]
SHOWN_VALUES = 60  # tokens per response: one bar per value up to this many values, else bins
ITL_ORIGIN = "gaps between consecutive responses of one answer, every answer pooled"


# curves.SOURCE_TEXT, short enough for a subtitle (the page's notes carry the long texts)
SHORT_SOURCE = {
    FROM_RECORDS: "exact from per-query records (sorted[floor(n·p)])",
    FROM_HISTOGRAM: "from the HDR histogram (3 significant digits)",
    FROM_SUMMARY: "the printed percentiles only (p50 … p99.9)",
}


def sources(curves: Sequence[tuple[str, PercentileCurve]]) -> str:
    """How the drawn curves' percentiles were taken: once if they agree, else per run (each of
    a run's curves named by what `label` says of it)."""
    drawn = [(label, curve) for label, curve in curves if curve.count]
    kinds = {curve.source for _, curve in drawn}
    if len(kinds) <= 1:
        return SHORT_SOURCE[kinds.pop()] if kinds else "no values"
    return "; ".join(f"{label}: {SHORT_SOURCE[curve.source]}" for label, curve in drawn)


def _token_sources(runs: Runs) -> str:
    found = sorted({tokens.token_source for _, tokens in runs if tokens.token_source})
    return " / ".join(found) or "unknown"


def ttft_figure(runs: Runs) -> go.Figure:
    """Time to first token by percentile: from the scheduled time (solid) and the send (dotted)."""
    figure = go.Figure()
    widest = 0.0
    for style, tokens in runs:
        for curve, origin, dash in (
            (tokens.ttft, "from scheduled", "solid"),
            (tokens.ttft_from_send, "from send", "dot"),
        ):
            name = f"{style.name}: {origin}"
            drawn = add_percentile_trace(figure, curve, name, style.color, dash, style.label)
            widest = max(widest, drawn)
    percentile_axes(figure, widest, "time to first token (ms)")
    curves: list[tuple[str, PercentileCurve]] = []
    for style, tokens in runs:  # a run's two curves named apart only where their sources differ
        if tokens.ttft.source == tokens.ttft_from_send.source or not tokens.ttft_from_send.count:
            curves.append((style.label, tokens.ttft))
        else:
            curves.append((f"{style.label} from scheduled", tokens.ttft))
            curves.append((f"{style.label} from send", tokens.ttft_from_send))
    return layout(
        figure,
        "Time to first token (TTFT) by percentile",
        f"solid: {TTFT_ORIGIN}, what the TTFT bound holds; dotted: {TTFT_SEND_ORIGIN}; "
        f"{bound_note([s for s, _ in runs])}<br>percentiles {sources(curves)}",
    )


def tpot_figure(runs: Runs) -> go.Figure:
    """Time per output token by percentile, one value per query."""
    figure = go.Figure()
    widest = 0.0
    for style, tokens in runs:
        drawn = add_percentile_trace(
            figure, tokens.tpot, style.name, style.color, style.dash, style.label
        )
        widest = max(widest, drawn)
    percentile_axes(figure, widest, "time per output token (ms)")
    return layout(
        figure,
        "Time per output token (TPOT) by percentile, over queries",
        f"{TPOT_ORIGIN}; queries with n_tokens > 1; n_tokens: {_token_sources(runs)}<br>"
        f"percentiles {sources([(s.label, t.tpot) for s, t in runs])}",
    )


def itl_figure(runs: Runs) -> go.Figure:
    """Inter-chunk latency (ITL) by percentile, from each run's merged gap histogram."""
    figure = go.Figure()
    widest = 0.0
    drawn_curves: list[tuple[str, PercentileCurve]] = []
    for style, tokens in runs:
        if tokens.itl is None:
            continue
        drawn_curves.append((style.label, tokens.itl))
        drawn = add_percentile_trace(
            figure, tokens.itl, style.name, style.color, style.dash, style.label
        )
        widest = max(widest, drawn)
    percentile_axes(figure, widest, "gap between responses (ms)")
    return layout(
        figure,
        "Inter-chunk latency (ITL) by percentile",
        f"{ITL_ORIGIN} (a response may carry several tokens)<br>"
        f"percentiles {sources(drawn_curves)}, merged over workers",
    )


def _shares(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, float | None]:
    """(x, share of queries, bar width): one bar per value when few, else equal bins."""
    distinct, counts = np.unique(np.round(values, 3), return_counts=True)
    if len(distinct) <= SHOWN_VALUES:
        return distinct, counts / len(values), None
    counts, edges = np.histogram(values, bins=SHOWN_VALUES)
    return (edges[:-1] + edges[1:]) / 2, counts / len(values), float(edges[1] - edges[0])


def tokens_per_response_figure(runs: Runs) -> go.Figure:
    """Each query's mean tokens per response, as a share of the run's queries."""
    figure = go.Figure()
    for style, tokens in runs:
        values = tokens.tokens_per_response
        if values is None or not len(values):
            continue
        x, share, width = _shares(values)
        figure.add_trace(
            go.Bar(
                x=x,
                y=share,
                width=width,
                name=style.name,
                marker={"color": style.color},
                customdata=np.rint(share * len(values)),
                hovertemplate="%{x:g} tokens/response: %{y:.2%} (%{customdata} queries)"
                "<extra>" + style.label + "</extra>",
            )
        )
    figure.update_layout(barmode="group")
    figure.update_xaxes(title="tokens per response (a query's n_tokens / its responses)")
    figure.update_yaxes(title="share of successful queries", tickformat=".0%", rangemode="tozero")
    return layout(
        figure,
        "Tokens per response (chunk), per query",
        f"successful streamed queries, from per-query records; n_tokens: {_token_sources(runs)}"
        "<br>a response is not a token: a server may send several per response",
    )


def tokens_per_second_figure(runs: Runs) -> go.Figure:
    """Completed tokens per second over time, with each run's completed tokens/s (LoadGen)."""
    figure = go.Figure()
    bucket_s = 1.0
    for style, tokens in runs:
        series = tokens.tokens_per_s
        if series is None or not len(series.tokens):
            continue
        bucket_s = series.bucket_ns / 1e9
        x = series.centres_s
        figure.add_trace(
            go.Scatter(
                x=x,
                y=series.per_s,
                name=style.name,
                legendgroup=style.label,
                mode="lines+markers",
                marker={"size": 4},
                line={"color": style.color, "dash": style.dash},
                hovertemplate="t=%{x:g} s: %{y:,.1f} tokens/s<extra>" + style.label + "</extra>",
            )
        )
        if tokens.completed_tokens_per_s is not None:
            figure.add_trace(
                go.Scatter(
                    x=[0.0, float(x[-1] + bucket_s / 2)],
                    y=[tokens.completed_tokens_per_s] * 2,
                    name=f"{style.label}: Σ n_tokens / last completion",
                    legendgroup=style.label,
                    mode="lines",
                    line={"color": style.color, "dash": "dash", "width": 1},
                    hovertemplate="completed tokens/s %{y:,.1f}<extra>" + style.label + "</extra>",
                )
            )
    figure.update_xaxes(title="time since the first scheduled query (s)", rangemode="tozero")
    figure.update_yaxes(title="completed tokens / s", rangemode="tozero")
    return layout(
        figure,
        "Completed tokens per second over time",
        f"{bucket_s:g} s buckets from the first due time (points at centres; the last may be "
        f"partial): {CREDITED_AT_COMPLETION}<br>dashed: completed tokens/s = Σ n_tokens / the "
        f"last completion (LoadGen); n_tokens: {_token_sources(runs)}",
    )
