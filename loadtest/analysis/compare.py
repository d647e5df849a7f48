"""Triton as a percentage of native: the arithmetic of `loadtest compare`; pure.

Every target was played the same seeded Poisson schedule at each QPS, so points at the same QPS
are directly comparable. A run where the client fell behind its own schedule ("client-bound")
measured the load generator, not the target: it is kept in the table but excluded from every
comparison below. From the usable points:

- peak QPS under the SLO = the highest requested QPS whose run is VALID (latency bound, duration,
  query count and early stopping all met). It is a lower bound on the true peak: only the probed
  rates are known (`loadtest compare` runs a fixed list, no search);
- p99 at equal QPS = target p99 / native p99 × 100, per QPS where both runs are usable. Failed
  and unanswered queries count as +∞ in that p99 (as in the verdict's performance constraint), so
  a target that drops requests is never ranked faster for it: its p99 is ∞ once the failures
  reach the percentile's rank;
- per-request overhead = target p50 − native p50 at the lowest QPS both measured usably, where
  queueing is least and the difference is the serving path itself (protocol, server, copies).

Output agreement (the largest |target − native| element difference over the checked samples) is
measured while the targets are open, in scenarios/experiments/compare_run.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from loadtest.scenarios.experiments.compare_run import NATIVE
from loadtest.targets.native import NativeOptions


@dataclass(frozen=True)
class RunPoint:
    """One target at one QPS, reduced to what the comparison needs (latencies in ns)."""

    target: str
    qps: float  # requested (scheduled) rate
    achieved_qps: float  # completed queries per second
    p50_ns: int
    p99_ns: int | None  # over every issued query, failures at +∞; None = ∞
    valid: bool
    client_bound: bool
    failed: int = 0  # issued queries that failed or were never answered

    @property
    def usable(self) -> bool:
        """Measures the target, not the client."""
        return not self.client_bound

    @property
    def label(self) -> str:
        if self.client_bound:
            return "CLIENT-BOUND"
        return "VALID" if self.valid else "INVALID"


@dataclass(frozen=True)
class EqualQps:
    qps: float
    p99_ns: int | None  # None = ∞ (failures reach the percentile's rank)
    native_p99_ns: int | None

    @property
    def percent(self) -> float:
        """Target p99 / native p99 × 100: ∞ when only the target's p99 is ∞, NaN when the
        native one is (nothing to compare against)."""
        if self.native_p99_ns is None or not self.native_p99_ns:
            return float("nan")
        if self.p99_ns is None:
            return float("inf")
        return 100.0 * self.p99_ns / self.native_p99_ns


@dataclass(frozen=True)
class Relative:
    """One target against the native baseline; None = not measurable from these runs."""

    target: str
    peak_qps: float | None
    native_peak_qps: float | None
    p99_at_equal_qps: tuple[EqualQps, ...]
    overhead_qps: float | None  # the QPS the overhead was taken at
    overhead_ns: int | None  # p50 target − p50 native

    @property
    def peak_percent(self) -> float | None:
        if self.peak_qps is None or not self.native_peak_qps:
            return None
        return 100.0 * self.peak_qps / self.native_peak_qps


def peak_qps(points: Sequence[RunPoint], target: str) -> float | None:
    """Highest requested QPS with a VALID, usable run of `target`; None if none was."""
    good = [p.qps for p in points if p.target == target and p.valid and p.usable]
    return max(good) if good else None


def _usable_by_qps(points: Sequence[RunPoint], target: str) -> dict[float, RunPoint]:
    return {p.qps: p for p in points if p.target == target and p.usable}


def relative(points: Sequence[RunPoint], target: str, baseline: str = NATIVE) -> Relative:
    mine, base = _usable_by_qps(points, target), _usable_by_qps(points, baseline)
    shared = sorted(set(mine) & set(base))
    equal = tuple(EqualQps(q, mine[q].p99_ns, base[q].p99_ns) for q in shared)
    lowest = shared[0] if shared else None
    return Relative(
        target=target,
        peak_qps=peak_qps(points, target),
        native_peak_qps=peak_qps(points, baseline),
        p99_at_equal_qps=equal,
        overhead_qps=lowest,
        overhead_ns=None if lowest is None else mine[lowest].p50_ns - base[lowest].p50_ns,
    )


# --- noise-aware comparison: peaks with intervals, p99 with bootstrap intervals -----------------
NO_DIFFERENCE = "no difference measured at this resolution"


@dataclass(frozen=True)
class PeakInterval:
    """One target's searched peak: the highest rate VALID every time it ran (the boundary probe
    repeated on another seed) and its interval [low, high] (high: the lowest rate INVALID, or one
    resolution step above the peak when none failed), as the sweep ranks its points."""

    peak_qps: float | None
    low_qps: float
    high_qps: float
    # the search stopped with no failing rate above the peak (the client fell behind, the
    # calibration ceiling or the budget): the peak is a lower bound, its top unknown
    open_above: bool = False


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Two closed intervals overlap: the sweep's tie rule (sweep_search.overlap)."""
    return a[0] <= b[1] and b[0] <= a[1]


@dataclass(frozen=True)
class PeakRatio:
    """Triton's peak ÷ native's, with the interval their two intervals allow."""

    target: str
    triton: PeakInterval
    native: PeakInterval
    # the search's resolution: intervals closer than this are not told apart (a probe at the
    # knee passes or fails by chance, so a gap narrower than one search step is no difference)
    resolution: float = 0.0

    @property
    def ratio(self) -> float | None:
        if self.triton.peak_qps is None or not self.native.peak_qps:
            return None
        return self.triton.peak_qps / self.native.peak_qps

    @property
    def interval(self) -> tuple[float, float] | None:
        """[Triton low ÷ native high, Triton high ÷ native low], each top stretched by the
        resolution, a peak that is only a lower bound (`open_above`) taken as unbounded above;
        None when a peak is missing. It holds 1 exactly when `differs` is False."""
        if self.ratio is None or self.native.high_qps <= 0 or self.native.low_qps <= 0:
            return None
        stretch = 1 + self.resolution
        native_high = math.inf if self.native.open_above else self.native.high_qps * stretch
        triton_high = math.inf if self.triton.open_above else self.triton.high_qps * stretch
        return (self.triton.low_qps / native_high, triton_high / self.native.low_qps)

    @property
    def differs(self) -> bool:
        """The two peaks' intervals are disjoint by more than the search's resolution: a
        difference this search can resolve (the ratio's interval excludes 1)."""
        bounds = self.interval
        return bounds is not None and not bounds[0] <= 1 <= bounds[1]

    @property
    def verdict(self) -> str:
        if self.ratio is None:
            return "not measurable (a target has no VALID rate)"
        if not self.differs:
            open_ended = [
                name
                for name, peak in ((self.target, self.triton), ("native", self.native))
                if peak.open_above
            ]
            if open_ended:
                return (
                    f"not decided: {' and '.join(open_ended)} found no failing rate (a lower "
                    "bound), so the ratio's interval holds 1"
                )
            return NO_DIFFERENCE
        return "Triton higher" if self.ratio > 1 else "native higher"


def bootstrap_percentile(
    latencies_ns: np.ndarray,
    failed: int,
    percentile: float,
    seed: int,
    resamples: int = 400,
    confidence: float = 0.95,
) -> tuple[float, float] | None:
    """A seeded percentile bootstrap of one run's `percentile` latency, failures at +∞ (an
    interval end may be ∞); None without any query. Resamples in chunks so a long run's
    latencies are never copied `resamples` times at once."""
    values = np.concatenate([np.asarray(latencies_ns, dtype=np.float64), np.full(failed, np.inf)])
    n = len(values)
    if n == 0:
        return None
    rng = np.random.default_rng(seed)
    rank = min(n - 1, max(0, int(np.ceil(percentile * n)) - 1))
    estimates = np.empty(resamples)
    chunk = max(1, 2_000_000 // n)
    for start in range(0, resamples, chunk):
        count = min(chunk, resamples - start)
        drawn = values[rng.integers(0, n, size=(count, n))]
        estimates[start : start + count] = np.partition(drawn, rank, axis=1)[:, rank]
    tail = (1 - confidence) / 2
    low, high = np.quantile(estimates, [tail, 1 - tail], method="lower")
    return float(low), float(high)


@dataclass(frozen=True)
class EqualQpsInterval:
    """p99 at one QPS for both targets, each with its bootstrap interval (ns; ∞ allowed)."""

    qps: float
    p99: tuple[float, float]
    native_p99: tuple[float, float]

    @property
    def differs(self) -> bool:
        return not overlap(self.p99, self.native_p99)

    @property
    def verdict(self) -> str:
        if not self.differs:
            return NO_DIFFERENCE
        return "Triton lower" if self.p99[1] < self.native_p99[0] else "native lower"


def config_differences(triton: Mapping[str, Any] | None, native: NativeOptions) -> list[str]:
    """Where the native side serves the model differently from the Triton it is compared with
    (instances, batching, queue delay, threads): then the ratio compares configurations, not
    servers. [] when they agree or Triton's config could not be read."""
    if triton is None:
        return []
    batching = bool(triton.get("dynamic_batching")) and int(triton.get("max_batch_size", 0)) > 1
    pairs: list[tuple[str, Any, Any]] = [
        ("instances", triton.get("instances"), native.instances),
        ("dynamic batching", batching, native.batching),
    ]
    if batching and native.batching:
        pairs += [
            ("max batch size", triton.get("max_batch_size"), native.max_batch_size),
            ("max queue delay µs", triton.get("max_queue_delay_us"), native.max_queue_delay_us),
        ]
    for name, key, mine in (
        ("intra-op threads", "intra_op_thread_count", native.intra_op_threads),
        ("inter-op threads", "inter_op_thread_count", native.inter_op_threads),
    ):
        theirs = triton.get(key)
        if theirs not in (None, ""):
            pairs.append((name, int(theirs), mine))
    return [
        f"{name}: Triton {theirs}, native {mine}" for name, theirs, mine in pairs if theirs != mine
    ]
