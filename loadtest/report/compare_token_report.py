"""`loadtest compare` on a decoder: TTFT and TPOT overhead (Triton − native) and tokens/s, as a
table, lines of what is compared, and compare.json's `token_overhead`.

The arithmetic is analysis/token_overhead.py; the per-query figures are rules/tokens.py's
(LoadGen's: TTFT from the scheduled time, TPOT per query excluding the first token).
"""

from __future__ import annotations

import math
from typing import Any

from rich.markup import escape
from rich.table import Table

from loadtest.analysis.token_overhead import (
    CONFIDENCE,
    FigureOverhead,
    SideTokens,
    TokenOverhead,
    token_overhead,
)
from loadtest.core.units import ms_cell
from loadtest.rules.tokens import TPOT_ORIGIN, TTFT_ORIGIN, per_query, token_figures
from loadtest.scenarios.experiments.compare_run import NATIVE, CompareResult, CompareRun

PERCENTILE_METHOD = "exact sorted[floor(n·p)] over the successful streamed queries (LoadGen)"


def side_tokens(run: CompareRun) -> SideTokens:
    """One run's streamed queries reduced to the overhead's inputs."""
    records = run.measurement.outcome.records
    q = per_query(records)
    figures = token_figures(records)
    return SideTokens(
        ttft_ns=q.ttft,
        tpot_ns=q.tpot,
        tokens=int(q.tokens.sum()),
        completed_tokens_per_s=figures.completed_tokens_per_s if figures else 0.0,
        queries=len(q.tokens),
        failed=run.summary.failed,
    )


def token_overheads(result: CompareResult) -> list[TokenOverhead]:
    """Each Triton target against native at every QPS both played with the client on schedule
    (a client-bound run measured the load generator)."""
    usable = [r for r in result.runs if r.summary.client_kept_up]
    native = {r.settings.qps: r for r in usable if r.target == NATIVE}
    rows = []
    for run in usable:
        base = native.get(run.settings.qps)
        if run.target == NATIVE or base is None:
            continue
        rows.append(
            token_overhead(
                run.target,
                run.settings.qps,
                side_tokens(run),
                side_tokens(base),
                run.settings.schedule_seed,
            )
        )
    return rows


# -- compare.json --------------------------------------------------------------------------------


def _finite(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


def _pair(values: tuple[float, float]) -> list[float | None]:
    return [_finite(v) for v in values]


def figure_json(figure: FigureOverhead | None) -> dict[str, Any] | None:
    if figure is None:
        return None
    return {
        "triton_p50_ns": figure.triton_p50_ns,
        "native_p50_ns": figure.native_p50_ns,
        "p50_overhead_ns": figure.p50_overhead_ns,
        "p50_ratio": _finite(figure.p50_ratio),
        "triton_p99_ns": figure.triton_p99_ns,
        "native_p99_ns": figure.native_p99_ns,
        "p99_overhead_ns": figure.p99_overhead_ns,
        "p99_ratio": _finite(figure.p99_ratio),
        "triton_p99_interval_ns": _pair(figure.triton_p99_interval),
        "native_p99_interval_ns": _pair(figure.native_p99_interval),
        "p99_overhead_interval_ns": _pair(figure.p99_overhead_interval),
        "p99_ratio_interval": _pair(figure.p99_ratio_interval),
        "verdict": figure.verdict,
    }


def _side_json(side: SideTokens) -> dict[str, Any]:
    return {
        "queries": side.queries,
        "failed": side.failed,
        "tokens": side.tokens,
        "completed_tokens_per_s": round(side.completed_tokens_per_s, 3),
    }


def token_overhead_json(rows: list[TokenOverhead]) -> dict[str, Any]:
    """compare.json's `token_overhead`: the definitions once, then one entry per target × QPS."""
    return {
        "definitions": {
            "ttft": TTFT_ORIGIN,
            "tpot": TPOT_ORIGIN,
            "percentiles": PERCENTILE_METHOD,
            "overhead": "Triton − native at the same percentile, same schedule and samples",
            "ratio": "Triton ÷ native",
            "intervals": f"{CONFIDENCE * 100:g} % seeded bootstrap, each run resampled alone; "
            "the difference and ratio over the paired resample estimates",
            "tokens": "server num_output_tokens (Triton); the answer's tokens (native)",
            "completed_tokens_per_s": "Σ tokens / the last completion (from the first due time)",
        },
        "rows": [
            {
                "target": row.target,
                "qps": row.qps,
                "ttft": figure_json(row.ttft),
                "tpot": figure_json(row.tpot),
                "triton": _side_json(row.triton),
                "native": _side_json(row.native),
                "tokens_per_s_ratio": _finite(row.tokens_per_s_ratio),
            }
            for row in rows
        ],
    }


def run_tokens_json(run: CompareRun) -> dict[str, Any] | None:
    """A row's own token figures (result.json's `tokens`), when its answers streamed."""
    figures = token_figures(run.measurement.outcome.records)
    return figures.to_json() if figures else None


# -- terminal -------------------------------------------------------------------------------------


def _ms(ns: float) -> str:
    return ms_cell(ns) if math.isfinite(ns) else "∞"


def _signed_ms(ns: float) -> str:
    return f"{ns / 1e6:+,.3f}" if math.isfinite(ns) else "—"


def _ratio(value: float) -> str:
    return f"{value:.2f}×" if math.isfinite(value) else "—"


def _row(figure: FigureOverhead) -> list[str]:
    low, high = figure.p99_overhead_interval
    r_low, r_high = figure.p99_ratio_interval
    return [
        f"{_ms(figure.triton_p50_ns)} / {_ms(figure.native_p50_ns)}",
        f"{_signed_ms(figure.p50_overhead_ns)} ({_ratio(figure.p50_ratio)})",
        f"{_ms(figure.triton_p99_ns)} / {_ms(figure.native_p99_ns)}",
        f"{_signed_ms(figure.p99_overhead_ns)} \\[{_signed_ms(low)}, {_signed_ms(high)}]",
        f"{_ratio(figure.p99_ratio)} \\[{_ratio(r_low)}, {_ratio(r_high)}]",
        figure.verdict,
    ]


def token_overhead_table(rows: list[TokenOverhead]) -> Table:
    """One row per target, QPS and figure (TTFT, TPOT), then tokens/s: Triton beside native."""
    table = Table(
        title="Decoder: Triton − native — TTFT from the scheduled time, TPOT per query (first "
        "token excluded), same schedule and samples",
        title_justify="left",
    )
    for name, justify in (
        ("target", "left"),
        ("QPS", "right"),
        ("figure", "left"),
        ("p50 ms\nTriton / native", "right"),
        ("p50 Δ ms (÷)", "right"),
        ("p99 ms\nTriton / native", "right"),
        ("p99 Δ ms \\[95 %]", "right"),
        ("p99 ÷ \\[95 %]", "right"),
        ("p99 verdict", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        t, n = row.triton, row.native
        for figure in (row.ttft, row.tpot):
            if figure is not None:
                table.add_row(row.target, f"{row.qps:g}", figure.name.upper(), *_row(figure))
        failed = f", failed {t.failed} / {n.failed}" if t.failed or n.failed else ""
        table.add_row(
            row.target,
            f"{row.qps:g}",
            "tokens/s",
            f"{t.completed_tokens_per_s:,.1f} / {n.completed_tokens_per_s:,.1f}",
            f"÷ {_ratio(row.tokens_per_s_ratio)}",
            f"tokens {t.tokens:,} / {n.tokens:,}{failed}",
            end_section=True,
        )
    table.caption = escape(
        f"percentiles: {PERCENTILE_METHOD}; Δ = Triton − native, ÷ = Triton ÷ native; [95 %] = "
        "seeded bootstrap of each run, Δ and ÷ over paired resamples; the verdict says 'no "
        "difference' while the two sides' p99 intervals overlap; tokens: Triton's "
        "num_output_tokens, native's answer length; tokens/s = Σ tokens / last completion"
    )
    return table


def decoder_compared(server_version: str, embedded: bool) -> list[str]:
    """What the decoder comparison sets against what, in plain words."""
    triton = f"Triton {server_version}" if server_version else "Triton"
    where = "the embedded " if embedded else ""
    return [
        f"{where}{triton} Python backend (model.py: the decoder's generation loop, "
        "onnxruntime CPU) streaming each token as one response, against the same loop "
        "(models/decoding.py) in loadtest's process (onnxruntime CPU): the overhead is Triton's "
        "serving path (request into the Python stub, one response per token, the stream)",
        "config parity: both sides run one step runner (batch 1, steps taken in turn), "
        "onnxruntime intra-op threads from config.pbtxt, inter-op 1, spinning off in both pools",
        "the native side shares loadtest's process and CPU with the load generator",
    ]
