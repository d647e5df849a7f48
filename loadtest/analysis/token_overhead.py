"""A decoder served by Triton against the same loop in-process: TTFT and TPOT overhead; pure.

`loadtest compare` on a streamed (LLM) model plays each side the same seeded schedule and
samples at each QPS, so their per-query token figures are directly comparable (rules/tokens.py
defines them, after LoadGen): TTFT from the **scheduled** time, TPOT per query as
(e2e − TTFT) / (n − 1). For each figure this module gives, at p50 and p99 (LoadGen's exact
sorted[floor(n·p)], over the successful streamed queries of each run):

- the overhead Triton − native, and the ratio Triton ÷ native;
- seeded bootstrap intervals (95 %) for each side's p99 and for the p99 difference and ratio: each
  run resampled on its own (the runs are independent), the difference and the ratio taken over
  the paired resample estimates. When the two sides' p99 intervals overlap the verdict is
  "no difference measured at this resolution", as compare says for tensor models;
- completed tokens/s of each side (Σ tokens / the last completion from the first due time,
  LoadGen's) and their ratio.

A failed query has no token figures: the rows count failures apart (`failed`), so a side that
drops queries is never ranked faster unnoticed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from loadtest.analysis.compare import NO_DIFFERENCE, overlap
from loadtest.rules.stats import exact_percentile, percentile_index

CONFIDENCE = 0.95
RESAMPLES = 400


def bootstrap_estimates(values_ns: np.ndarray, percentile: float, seed: int) -> np.ndarray:
    """RESAMPLES seeded bootstrap estimates of one run's `percentile` (LoadGen's index rule);
    resampled in chunks so a long run is never copied RESAMPLES times at once."""
    values = np.asarray(values_ns, dtype=np.float64)
    n = len(values)
    rng = np.random.default_rng(seed)
    rank = percentile_index(n, percentile)
    estimates = np.empty(RESAMPLES)
    chunk = max(1, 2_000_000 // n)
    for start in range(0, RESAMPLES, chunk):
        count = min(chunk, RESAMPLES - start)
        drawn = values[rng.integers(0, n, size=(count, n))]
        estimates[start : start + count] = np.partition(drawn, rank, axis=1)[:, rank]
    return estimates


def _interval(estimates: np.ndarray) -> tuple[float, float]:
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(estimates, [tail, 1 - tail], method="lower")
    return float(low), float(high)


@dataclass(frozen=True)
class FigureOverhead:
    """One per-query figure (TTFT or TPOT, ns) of both sides at one QPS."""

    name: str  # "ttft" or "tpot"
    triton_p50_ns: int
    native_p50_ns: int
    triton_p99_ns: int
    native_p99_ns: int
    triton_p99_interval: tuple[float, float]
    native_p99_interval: tuple[float, float]
    p99_overhead_interval: tuple[float, float]  # of Triton − native, ns
    p99_ratio_interval: tuple[float, float]  # of Triton ÷ native

    @property
    def p50_overhead_ns(self) -> int:
        return self.triton_p50_ns - self.native_p50_ns

    @property
    def p99_overhead_ns(self) -> int:
        return self.triton_p99_ns - self.native_p99_ns

    @property
    def p50_ratio(self) -> float:
        return self.triton_p50_ns / self.native_p50_ns if self.native_p50_ns else math.nan

    @property
    def p99_ratio(self) -> float:
        return self.triton_p99_ns / self.native_p99_ns if self.native_p99_ns else math.nan

    @property
    def verdict(self) -> str:
        """The p99s told apart only when their bootstrap intervals are disjoint."""
        if overlap(self.triton_p99_interval, self.native_p99_interval):
            return NO_DIFFERENCE
        return (
            "Triton higher"
            if self.triton_p99_interval[0] > self.native_p99_interval[1]
            else ("native higher")
        )


def figure_overhead(
    name: str, triton_ns: np.ndarray, native_ns: np.ndarray, seed: int
) -> FigureOverhead | None:
    """Both sides' figure at p50 and p99 with the p99 intervals; None when a side has no value."""
    if not len(triton_ns) or not len(native_ns):
        return None
    mine, theirs = np.sort(triton_ns), np.sort(native_ns)
    # different streams per side, the same seeds every time: a rerun of the report agrees
    a = bootstrap_estimates(mine, 0.99, seed * 2 + 1)
    b = bootstrap_estimates(theirs, 0.99, seed * 2 + 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)
    return FigureOverhead(
        name=name,
        triton_p50_ns=exact_percentile(mine, 0.5),
        native_p50_ns=exact_percentile(theirs, 0.5),
        triton_p99_ns=exact_percentile(mine, 0.99),
        native_p99_ns=exact_percentile(theirs, 0.99),
        triton_p99_interval=_interval(a),
        native_p99_interval=_interval(b),
        p99_overhead_interval=_interval(a - b),
        p99_ratio_interval=_interval(ratio[np.isfinite(ratio)])
        if np.isfinite(ratio).any()
        else (math.nan, math.nan),
    )


@dataclass(frozen=True)
class SideTokens:
    """One side's streamed queries at one QPS, reduced to what the overhead needs (ns)."""

    ttft_ns: np.ndarray  # successful streamed queries, from the scheduled time
    tpot_ns: np.ndarray  # those with n > 1
    tokens: int  # Σ n (the server's count; native: the answer's tokens)
    completed_tokens_per_s: float
    queries: int  # successful streamed queries
    failed: int  # issued queries that failed or were never answered


@dataclass(frozen=True)
class TokenOverhead:
    """One Triton target against native at one QPS."""

    target: str
    qps: float
    ttft: FigureOverhead | None
    tpot: FigureOverhead | None
    triton: SideTokens
    native: SideTokens

    @property
    def tokens_per_s_ratio(self) -> float:
        native = self.native.completed_tokens_per_s
        return self.triton.completed_tokens_per_s / native if native else math.nan


def token_overhead(
    target: str, qps: float, triton: SideTokens, native: SideTokens, seed: int
) -> TokenOverhead:
    return TokenOverhead(
        target=target,
        qps=qps,
        ttft=figure_overhead("ttft", triton.ttft_ns, native.ttft_ns, seed),
        tpot=figure_overhead("tpot", triton.tpot_ns, native.tpot_ns, seed),
        triton=triton,
        native=native,
    )
