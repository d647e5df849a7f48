"""Run-to-run regression judgement: is B's latency or throughput worse than A's beyond noise? Pure.

With per-query records in both runs, each latency percentile gets a bootstrap confidence interval
on the difference B − A (percentile interval, 95 % by default, 2000 resamples, seeded). A change is
a **regression** only when the whole interval lies above 0 *and* the point change exceeds a minimum
relative effect (`min_effect`, 5 % by default): the first guards against noise, the second against
calling a real but irrelevant 0.3 % shift a regression. Improvements are judged symmetrically.

Why the bootstrap is cheap here: a percentile by LoadGen's rule is one order statistic,
sorted[k − 1] with k = floor(n·p) + 1. A bootstrap resample is F̂⁻¹(U₁ … Uₙ) for uniform Uᵢ
(F̂ = the empirical distribution), and F̂⁻¹ is monotone, so the resample's k-th smallest value is
F̂⁻¹(U₍ₖ₎), and the k-th order statistic of n uniforms is exactly Beta(k, n − k + 1). Drawing that
Beta variable and indexing the sorted data is therefore the *same distribution* as resampling n
values and sorting them, at O(n log n + resamples) instead of O(resamples · n): a 10-minute run's
million records take milliseconds.

Without records in either run there is no distribution to resample; a stated, weaker rule applies:
a relative change beyond `threshold_without_records` (10 %) is flagged. It cannot tell noise from
change, and the output says so. Throughput (completed QPS) is judged by the same relative rule
(completions track the seeded schedule, so they hardly vary between repeats), and a verdict that
turns from VALID to INVALID is a regression in itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from loadtest.core.units import NS_PER_MS

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_MIN_EFFECT = 0.05
DEFAULT_THRESHOLD_WITHOUT_RECORDS = 0.10
DEFAULT_SEED = 0

# (label, percentile, summary key)
LATENCY_METRICS = (
    ("p50", 0.5, "p50_ns"),
    ("p90", 0.9, "p90_ns"),
    ("p99", 0.99, "p99_ns"),
    ("p99.9", 0.999, "p999_ns"),
)

REGRESSION = "regression"
IMPROVEMENT = "improvement"
NO_CHANGE = "no significant change"

BOOTSTRAP = "bootstrap"
THRESHOLD = "threshold"


@dataclass(frozen=True)
class Interval:
    """A confidence interval on B − A (same unit as the metric)."""

    low: float
    high: float
    confidence: float


@dataclass(frozen=True)
class Change:
    """One metric in A and B, the relative change (B − A)/A, and the judgement."""

    metric: str
    a: float
    b: float
    unit: str  # "ns" or "QPS"
    higher_is_worse: bool
    interval: Interval | None
    judgement: str

    @property
    def difference(self) -> float:
        return self.b - self.a

    @property
    def relative(self) -> float | None:
        return (self.b - self.a) / self.a if self.a else None


@dataclass(frozen=True)
class RunSide:
    """What the diff needs of one run: its summary dict, verdict and latencies (None = no records).

    `latencies_ns`: completion − scheduled time of the successful queries, any order.
    """

    label: str
    scenario: str
    summary: dict[str, Any]
    valid: bool | None
    latencies_ns: np.ndarray | None
    offered_qps: float | None = None


@dataclass(frozen=True)
class DiffResult:
    a: str
    b: str
    method: str  # BOOTSTRAP or THRESHOLD
    method_text: str
    changes: tuple[Change, ...]
    validity: Change | None  # a/b as 1.0/0.0 (VALID/INVALID)
    notes: tuple[str, ...]

    @property
    def regressions(self) -> tuple[Change, ...]:
        found = [c for c in self.changes if c.judgement == REGRESSION]
        if self.validity is not None and self.validity.judgement == REGRESSION:
            found.append(self.validity)
        return tuple(found)

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)


def order_statistic_rank(count: int, percentile: float) -> int:
    """LoadGen's percentile as a 1-based order statistic: floor(n·p) + 1, at most n."""
    return min(count, int(count * percentile) + 1)


def bootstrap_percentile(
    sorted_ns: np.ndarray, percentile: float, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """`resamples` bootstrap replicates of the LoadGen percentile of the (ascending) values.

    Exact in distribution (see the module docstring): U₍ₖ₎ ~ Beta(k, n − k + 1), value = sorted at
    ceil(n·U₍ₖ₎) − 1.
    """
    n = len(sorted_ns)
    if n == 0:
        raise ValueError("no values to resample")
    k = order_statistic_rank(n, percentile)
    u = rng.beta(k, n - k + 1, size=resamples)
    index = np.clip(np.ceil(u * n).astype(np.int64) - 1, 0, n - 1)
    replicates: np.ndarray = sorted_ns[index]
    return replicates


def percentile_difference_interval(
    a_ns: np.ndarray,
    b_ns: np.ndarray,
    percentile: float,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """Percentile-bootstrap interval for percentile(B) − percentile(A), A and B resampled apart."""
    rng = np.random.default_rng(seed)
    a = np.sort(np.asarray(a_ns, dtype=np.float64))
    b = np.sort(np.asarray(b_ns, dtype=np.float64))
    differences = bootstrap_percentile(b, percentile, resamples, rng) - bootstrap_percentile(
        a, percentile, resamples, rng
    )
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(differences, [tail, 1.0 - tail])
    return Interval(float(low), float(high), confidence)


def judge(
    a: float,
    b: float,
    higher_is_worse: bool,
    min_effect: float,
    interval: Interval | None,
) -> str:
    """REGRESSION / IMPROVEMENT / NO_CHANGE: beyond the interval (when given) and min_effect."""
    if a == 0:
        return NO_CHANGE
    relative = (b - a) / abs(a)
    worse = relative if higher_is_worse else -relative
    if interval is not None:
        beyond_zero_up = interval.low > 0
        beyond_zero_down = interval.high < 0
        worse_beyond = beyond_zero_up if higher_is_worse else beyond_zero_down
        better_beyond = beyond_zero_down if higher_is_worse else beyond_zero_up
    else:
        worse_beyond = better_beyond = True
    if worse_beyond and worse > min_effect:
        return REGRESSION
    if better_beyond and -worse > min_effect:
        return IMPROVEMENT
    return NO_CHANGE


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def diff_runs(
    a: RunSide,
    b: RunSide,
    min_effect: float = DEFAULT_MIN_EFFECT,
    threshold_without_records: float = DEFAULT_THRESHOLD_WITHOUT_RECORDS,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> DiffResult:
    """Compare run B against baseline A. Raises ValueError for runs of different scenarios."""
    if a.scenario != b.scenario:
        raise ValueError(
            f"{a.label} is a {a.scenario} run and {b.label} a {b.scenario} run: "
            "diff compares runs of one scenario"
        )
    have_records = (
        a.latencies_ns is not None
        and b.latencies_ns is not None
        and len(a.latencies_ns) > 0
        and len(b.latencies_ns) > 0
    )
    notes: list[str] = []
    if have_records:
        method = BOOTSTRAP
        method_text = (
            f"bootstrap {confidence * 100:g} % confidence intervals on B − A "
            f"({resamples} resamples, seed {seed}) from per-query latencies; a regression must "
            f"exclude 0 and exceed {min_effect * 100:g} % relative change"
        )
    else:
        method = THRESHOLD
        missing = [s.label for s in (a, b) if s.latencies_ns is None or len(s.latencies_ns) == 0]
        method_text = (
            f"no per-query records in {', '.join(missing)} (run with --records): weaker rule, a "
            f"latency change beyond {threshold_without_records * 100:g} % is flagged, with no "
            "confidence interval, so noise cannot be told from change"
        )
    latency_threshold = min_effect if have_records else max(min_effect, threshold_without_records)
    a_latency = a.summary.get("latency") or {}
    b_latency = b.summary.get("latency") or {}
    changes: list[Change] = []
    for label, percentile, key in LATENCY_METRICS:
        a_value, b_value = _number(a_latency.get(key)), _number(b_latency.get(key))
        if a_value is None or b_value is None:
            continue
        interval = None
        if have_records:
            assert a.latencies_ns is not None and b.latencies_ns is not None
            interval = percentile_difference_interval(
                a.latencies_ns, b.latencies_ns, percentile, resamples, confidence, seed
            )
        judgement = judge(a_value, b_value, True, latency_threshold, interval)
        changes.append(Change(label, a_value, b_value, "ns", True, interval, judgement))
    a_qps, b_qps = _number(a.summary.get("completed_qps")), _number(b.summary.get("completed_qps"))
    if a_qps is not None and b_qps is not None:
        changes.insert(
            0,
            Change(
                "throughput",
                a_qps,
                b_qps,
                "QPS",
                False,
                None,
                judge(a_qps, b_qps, False, min_effect, None),
            ),
        )
    validity = None
    if a.valid is not None and b.valid is not None:
        flip = NO_CHANGE
        if a.valid and not b.valid:
            flip = REGRESSION
        elif b.valid and not a.valid:
            flip = IMPROVEMENT
        validity = Change("validity", float(a.valid), float(b.valid), "", False, None, flip)
    if a.offered_qps and b.offered_qps and abs(b.offered_qps / a.offered_qps - 1) > 0.01:
        notes.append(
            f"the runs offered different loads ({a.offered_qps:g} vs {b.offered_qps:g} QPS): "
            "latency differences mix the load change with any code or config change"
        )
    for side in (a, b):
        if side.summary.get("client_kept_up") is False:
            notes.append(
                f"{side.label} is client-bound (its client fell behind the schedule): its "
                "latencies include the client's queue"
            )
    return DiffResult(a.label, b.label, method, method_text, tuple(changes), validity, tuple(notes))


def exit_code(result: DiffResult, regression_code: int = 3) -> int:
    """For CI: `regression_code` when B regressed significantly, else 0."""
    return regression_code if result.regressed else 0


def describe(changes: Sequence[Change]) -> list[str]:
    """One line per regression, e.g. 'p99: 10.2 ms → 13.5 ms (+32.4 %)'."""
    lines = []
    for change in changes:
        if change.metric == "validity":
            lines.append("validity: VALID → INVALID")
            continue
        scale, unit = (NS_PER_MS, " ms") if change.unit == "ns" else (1.0, f" {change.unit}")
        relative = change.relative
        pct = f" ({relative * 100:+.1f} %)" if relative is not None else ""
        lines.append(
            f"{change.metric}: {change.a / scale:.3f}{unit} → {change.b / scale:.3f}{unit}{pct}"
        )
    return lines
