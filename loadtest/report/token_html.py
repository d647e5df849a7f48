"""The HTML report's token sections for streamed runs: the figures across runs (TTFT, TPOT, ITL,
tokens per response, tokens/s over time) and each run's table of token figures with their origins
(result.json's `tokens` object). "" for runs that did not stream, so other reports are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loadtest.core.units import ms_cell
from loadtest.report import token_figures
from loadtest.report.figures import RunSeries
from loadtest.report.html_blocks import esc, figure_html, fmt_value, ms, obj, table
from loadtest.report.resultfile import ResultFile
from loadtest.report.token_series import token_series

# (key in result.json's `tokens`, the row's name)
DISTRIBUTIONS = (
    ("ttft", "TTFT from scheduled"),
    ("ttft_from_send", "TTFT from send"),
    ("tpot", "TPOT per query"),
    ("itl", "ITL (gap between responses)"),
)
COLUMNS = (  # (key in a LatencyStats dict, the heading); times in ms
    ("count", "count"),
    ("min_ns", "min ms"),
    ("mean_ns", "mean ms"),
    ("p50_ns", "p50 ms"),
    ("p90_ns", "p90 ms"),
    ("p99_ns", "p99 ms"),
    ("p999_ns", "p99.9 ms"),
    ("max_ns", "max ms"),
)


def tokens_figures_html(runs: Sequence[ResultFile], styles: Sequence[RunSeries]) -> str:
    """The token figures of every streamed run among `runs` (`styles`: their latency plots'
    series, same order); "" when none streamed."""
    pairs = [
        (style, series)
        for run, style in zip(runs, styles, strict=True)
        if (series := token_series(run)) is not None
    ]
    if not pairs:
        return ""
    parts = [
        "<h3>Tokens (streamed answers)</h3>",
        figure_html(token_figures.ttft_figure(pairs), "fig-ttft"),
        figure_html(token_figures.tpot_figure(pairs), "fig-tpot"),
    ]
    notes = []
    with_itl = [(s, t) for s, t in pairs if t.itl is not None]
    if with_itl:
        parts.append(figure_html(token_figures.itl_figure(with_itl), "fig-itl"))
    missing = [s.label for s, t in pairs if t.itl is None]
    if missing:
        notes.append(
            f"No ITL for {', '.join(missing)}: no merged histogram of the gaps between responses "
            "in the file (single-stream runs keep none)."
        )
    with_records = [(s, t) for s, t in pairs if t.tokens_per_s is not None]
    if with_records:
        parts.append(
            figure_html(token_figures.tokens_per_response_figure(with_records), "fig-chunks")
        )
        parts.append(
            figure_html(token_figures.tokens_per_second_figure(with_records), "fig-tokens-per-s")
        )
    missing = [s.label for s, t in pairs if t.tokens_per_s is None]
    if missing:
        notes.append(
            f"Tokens per response by query and tokens/s over time need per-query records "
            f"(--records), not in {', '.join(missing)}: their TTFT comes from the HDR histogram "
            "and their TTFT from send and TPOT from the printed percentiles only."
        )
    parts += [f'<p class="note">{esc(note)}</p>' for note in notes]
    return "".join(parts)


def _cell(key: str, value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "—"
    return f"{value:,}" if key == "count" else ms_cell(value)


def _distribution_row(name: str, stats: Any, origin: Any) -> list[object]:
    stats = obj(stats)
    return [name, origin or "—", *(_cell(key, stats.get(key)) for key, _ in COLUMNS)]


def tokens_html(tokens: Any) -> str:
    """A streamed run's token figures, each with its origin; "" when the run did not stream."""
    tokens = obj(tokens)
    if not tokens:
        return ""
    origins = obj(tokens.get("origins"))
    rows = [
        _distribution_row(name, tokens.get(key), origins.get(key))
        for key, name in DISTRIBUTIONS
        if key != "itl" or obj(tokens.get("itl")).get("count")
    ]
    bounds = obj(tokens.get("bounds"))
    bound_text = "none"
    if bounds.get("ttft_ns") or bounds.get("tpot_ns"):
        percentile = bounds.get("percentile")
        tag = f"p{percentile * 100:g}" if isinstance(percentile, (int, float)) else "p99"
        bound_text = (
            f"{tag} TTFT ≤ {ms(bounds.get('ttft_ns') or None)}, {tag} TPOT ≤ "
            f"{ms(bounds.get('tpot_ns') or None)} ({bounds.get('source') or 'given'})"
        )
    figures = [
        ["tokens", tokens.get("token_source", "—"),
         f"{_cell('count', tokens.get('tokens'))} over {_cell('count', tokens.get('queries'))} "
         "streamed queries"],
        ["tokens per response", "Σ n_tokens / Σ responses; max: a query's, rounded up",
         f"{fmt_value('', tokens.get('tokens_per_chunk_mean'))} mean, "
         f"{tokens.get('tokens_per_chunk_max')} max"],
        ["completed tokens/s", origins.get("completed_tokens_per_s", "—"),
         fmt_value("", tokens.get("completed_tokens_per_s"))],
        ["answers of ≤ 1 token", "LoadGen: an error (n_tokens must be > 1; no TPOT)",
         tokens.get("one_token_answers")],
        ["bounds", "--ttft-bound/--tpot-bound or --mlperf-model", bound_text],
    ]  # fmt: skip
    method = obj(tokens.get("ttft")).get("method", "")
    return (
        "<h3>Tokens</h3>"
        + table(["figure", "origin", *(label for _, label in COLUMNS)], rows, numeric=2)
        + table(["figure", "origin", "value"], figures, numeric=2)
        + f'<p class="note">TTFT and TPOT percentiles: {esc(method)}, over successful streamed '
        "queries; ITL from its HDR histogram (3 significant digits).</p>"
    )
