"""Latency-vs-percentile curves for the HDR plot and the CDF, from the best data a file has.

Three sources, best first:
1. per-query records: exact, the LoadGen rule `sorted[floor(n·p)]` at every plotted p, so the curve
   passes through exactly the percentiles the summary prints;
2. the HDR histogram (`summary.latency_hdr`, 3 significant figures): values within ≈ 0.1 %;
3. the summary's six percentiles (p50 … p99.9) and max: a coarse outline.

The x axis of an HDR percentile plot is 1/(1 − p) on a log scale, so 90 %, 99 %, 99.9 % ... are
evenly spaced and the tail gets the room it deserves (Gil Tene's HdrHistogram plots). Pure: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

from loadtest.rules.stats import LOADGEN_PERCENTILES, decode_histograms

FROM_RECORDS = "records"
FROM_HISTOGRAM = "histogram"
FROM_SUMMARY = "summary"

SOURCE_TEXT = {
    FROM_RECORDS: "exact, from per-query records (LoadGen rule sorted[floor(n·p)])",
    FROM_HISTOGRAM: "from the HDR histogram (3 significant figures, ≈ 0.1 % value resolution)",
    FROM_SUMMARY: "from the summary's percentiles only (p50 … p99.9; no records or histogram)",
}

MAX_POINTS = 1500


@dataclass(frozen=True, eq=False)
class PercentileCurve:
    """Latency (ns) at percentiles p (fractions in [0, 1)); `source` says where it came from."""

    percentile: np.ndarray  # float64, ascending, < 1
    latency_ns: np.ndarray  # float64, non-decreasing
    count: int
    source: str

    @property
    def inverse_tail(self) -> np.ndarray:
        """1/(1 − p): the HDR plot's x coordinate."""
        return 1.0 / (1.0 - self.percentile)


def _grid(count: int) -> np.ndarray:
    """Percentiles to plot for n values: log-spaced in 1/(1 − p) from p = 0 to the last rank."""
    if count <= 1:
        return np.zeros(1)
    inverse = np.geomspace(1.0, float(count), num=min(MAX_POINTS, count))
    printed = [p for p in LOADGEN_PERCENTILES if p < 1.0 - 1.0 / count]  # the summary's own
    return np.unique(np.concatenate((1.0 - 1.0 / inverse, printed)))


def from_latencies(latencies_ns: np.ndarray) -> PercentileCurve:
    """Exact curve from raw latencies: at each p the LoadGen value sorted[floor(n·p)]."""
    values = np.sort(np.asarray(latencies_ns, dtype=np.int64))
    n = len(values)
    if n == 0:
        return PercentileCurve(np.zeros(0), np.zeros(0), 0, FROM_RECORDS)
    # Every rank i is p = i/n; pick the ranks nearest the log grid so steps in the tail are kept.
    ranks = np.unique(np.minimum(n - 1, np.floor(n * _grid(n)).astype(np.int64)))
    ranks = np.unique(np.concatenate((ranks, [n - 1])))
    return PercentileCurve(ranks / n, values[ranks].astype(np.float64), n, FROM_RECORDS)


def from_histogram(encoded: str) -> PercentileCurve:
    """Curve read off an encoded HDR histogram (value at each percentile of the grid)."""
    histogram = decode_histograms([encoded])
    n = int(histogram.get_total_count())
    if n == 0:
        return PercentileCurve(np.zeros(0), np.zeros(0), 0, FROM_HISTOGRAM)
    grid = _grid(n)
    # hdrh returns the value of rank round(n·p/100); ask for LoadGen's rank floor(n·p) + 1 instead.
    ranks = np.minimum(np.floor(n * grid) + 1, n)
    values = values_at_percentiles(histogram, ranks * 100.0 / n)
    return PercentileCurve(grid, values.astype(np.float64), n, FROM_HISTOGRAM)


def values_at_percentiles(histogram: HdrHistogram, percentiles: np.ndarray) -> np.ndarray:
    """hdrh's get_value_at_percentile at many percentiles in one pass: the same values (its
    target count, its first bucket reaching it, its highest equivalent value), without its
    Python walk of the whole counts array per percentile (1,500 points took seconds)."""
    total = int(histogram.get_total_count())
    counts = np.fromiter(
        (histogram.get_count_at_index(i) for i in range(histogram.counts_len)), dtype=np.int64
    )
    reached = np.cumsum(counts)
    requested = np.minimum(np.asarray(percentiles, dtype=np.float64), 100.0)
    targets = np.maximum((requested * total / 100 + 0.5).astype(np.int64), 1)
    indices = np.minimum(np.searchsorted(reached, targets, side="left"), len(counts) - 1)
    values = {index: histogram.get_value_from_index(index) for index in np.unique(indices).tolist()}
    return np.array(
        [
            histogram.get_highest_equivalent_value(values[index])
            if percentile
            else histogram.get_lowest_equivalent_value(values[index])
            for index, percentile in zip(indices.tolist(), requested.tolist(), strict=True)
        ],
        dtype=np.int64,
    )


def from_summary(latency: dict[str, Any]) -> PercentileCurve:
    """The six printed percentiles (keys p50_ns … p999_ns of Summary.latency)."""
    keys = ("p50_ns", "p90_ns", "p95_ns", "p97_ns", "p99_ns", "p999_ns")
    points = [
        (p, float(latency[k]))
        for p, k in zip(LOADGEN_PERCENTILES, keys, strict=True)
        if isinstance(latency.get(k), (int, float))
    ]
    given = latency.get("count")
    count = int(given) if isinstance(given, (int, float)) and math.isfinite(given) else 0
    if count == 0 or not points:
        return PercentileCurve(np.zeros(0), np.zeros(0), count, FROM_SUMMARY)
    return PercentileCurve(
        np.array([p for p, _ in points]), np.array([v for _, v in points]), count, FROM_SUMMARY
    )


def best_curve(summary: dict[str, Any], latencies_ns: np.ndarray | None) -> PercentileCurve:
    """Records if given, else the summary's HDR histogram, else its printed percentiles."""
    return curve_of(latencies_ns, summary.get("latency_hdr"), summary.get("latency"))


def curve_of(values_ns: np.ndarray | None, encoded: Any, stats: Any) -> PercentileCurve:
    """The best curve of one figure: its per-query values if given, else its encoded HDR
    histogram, else its printed percentiles (a LatencyStats dict: p50_ns … p999_ns, count)."""
    if values_ns is not None:
        return from_latencies(values_ns)
    if isinstance(encoded, str) and encoded:
        try:
            return from_histogram(encoded)
        except Exception:  # a corrupt histogram string: fall back rather than fail the report
            pass
    return from_summary(stats if isinstance(stats, dict) else {})


def percentile_ticks(max_inverse_tail: float) -> tuple[list[float], list[str]]:
    """Tick positions (1/(1 − p)) and labels 0 %, 50 %, 90 %, 99 %, 99.9 %, … up to the data."""
    values = [1.0, 2.0]
    labels = ["0%", "50%"]
    nines = 1
    while 10.0**nines <= max(max_inverse_tail, 10.0) * 1.0001:
        values.append(10.0**nines)
        labels.append(f"{100 - 100 / 10**nines:.{max(nines - 2, 0)}f}%")
        nines += 1
    return values, labels
