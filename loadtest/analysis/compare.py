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

from collections.abc import Sequence
from dataclasses import dataclass

from loadtest.scenarios.experiments.compare_run import NATIVE


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
