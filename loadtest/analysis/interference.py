"""Interference: how much worse each model of a mix does together than alone, and how sure. Pure.

For each entry the same seeded schedule (Server) or the same query (Offline) is played alone and
then with the others, and two ratios are taken, together ÷ alone:
- **latency at the entry's percentile**: for Server from the *scheduled* time (the verdict's
  latency), for Offline from the actual send (the per-request latency under the in-flight cap;
  from t = 0 it would only restate the duration). Failed and unanswered queries count as +∞, as
  in the verdict, so a model that drops requests together never looks faster.
- **completed throughput**: Server completed QPS, Offline samples/s, as their summaries give them.

Intervals (95 %, seeded, 2000 resamples), from the per-query records of both runs, resampled
independently:
- the percentile by the exact order-statistic bootstrap of analysis/diff.py (the k-th smallest of
  a resample of n values is the data at the Beta(k, n − k + 1) quantile: exact in distribution);
- the throughput by resampling the run's one-second bins of completions (how steady the rate
  was), the interval scaled to the point estimate.
A ratio near 1 whose interval holds 1 is "concurrent ≈ isolated"; one whose interval lies above 1
(latency) or below 1 (throughput) is interference beyond the run-to-run noise these intervals
capture (they do not capture a machine that changed between the two runs: those are minutes
apart, so a noisy host shows up as interference; repeat the mix to tell).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loadtest.analysis.diff import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, bootstrap_percentile
from loadtest.core.records import Records
from loadtest.core.units import NS_PER_S
from loadtest.rules.stats import exact_percentile_with_failures

LATENCY_FROM_SCHEDULED = "completion − scheduled time (failures as +∞)"
LATENCY_FROM_SEND = "completion − actual send (failures as +∞)"
INTERVAL_METHOD = (
    "95 % percentile bootstrap, 2000 resamples, seeded: latency by the exact order-statistic "
    "bootstrap over queries, throughput over 1-s bins of completions"
)


@dataclass(frozen=True)
class Ratio:
    """together ÷ alone, with its interval; None where a side is 0 or infinite."""

    value: float | None
    low: float | None
    high: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {"value": self.value, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class RunSide:
    """What the ratio needs of one run of an entry."""

    records: Records
    throughput: float  # completed QPS (Server) or samples/s (Offline), from its summary
    first_ns: int  # the throughput's span: first scheduled time ...
    last_ns: int  # ... to the last successful completion
    client_kept_up: bool = True  # False: its latencies include the client's own lag


@dataclass(frozen=True)
class InterferenceRow:
    name: str
    scenario: str
    percentile: float
    latency_origin: str
    latency_alone_ns: float | None  # None: no latency (nothing issued); inf: failures reach it
    latency_together_ns: float | None
    latency_ratio: Ratio
    throughput_alone: float
    throughput_together: float
    throughput_ratio: Ratio
    client_kept_up_alone: bool = True
    client_kept_up_together: bool = True

    @property
    def client_bound(self) -> bool:
        """A side where the generator fell behind: its latency measured the client too."""
        return not (self.client_kept_up_alone and self.client_kept_up_together)

    def to_dict(self) -> dict[str, object]:
        def ns(value: float | None) -> float | str | None:
            return "inf" if value is not None and np.isinf(value) else value

        return {
            "name": self.name,
            "scenario": self.scenario,
            "percentile": self.percentile,
            "latency_origin": self.latency_origin,
            "latency_alone_ns": ns(self.latency_alone_ns),
            "latency_together_ns": ns(self.latency_together_ns),
            "latency_ratio": self.latency_ratio.to_dict(),
            "throughput_alone": self.throughput_alone,
            "throughput_together": self.throughput_together,
            "throughput_ratio": self.throughput_ratio.to_dict(),
            "client_kept_up_alone": self.client_kept_up_alone,
            "client_kept_up_together": self.client_kept_up_together,
            "interval": INTERVAL_METHOD,
        }


def latencies_with_failures(records: Records, from_send: bool) -> np.ndarray:
    """Ascending float latencies of every issued query, failed and unanswered ones as +∞."""
    ok = records.ok
    origin = records.issued_ns if from_send else records.scheduled_ns
    values = (records.completed_ns[ok] - origin[ok]).astype(np.float64)
    failed = int((records.issued & ~ok).sum())
    return np.sort(np.concatenate([values, np.full(failed, np.inf)]))


def _percentile_point(values: np.ndarray, percentile: float) -> float | None:
    if not len(values):
        return None
    finite = values[np.isfinite(values)].astype(np.int64)
    point = exact_percentile_with_failures(finite, len(values) - len(finite), percentile)
    return float("inf") if point is None else float(point)


def _finite_ratio(together: float | None, alone: float | None) -> float | None:
    if together is None or alone is None or not np.isfinite(together) or not np.isfinite(alone):
        return None
    return together / alone if alone > 0 else None


def _interval(ratios: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    ratios = ratios[np.isfinite(ratios)]
    if not len(ratios):
        return None, None
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(ratios, [tail, 1.0 - tail])
    return float(low), float(high)


def latency_ratio(
    alone: np.ndarray,
    together: np.ndarray,
    percentile: float,
    rng: np.random.Generator,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[float | None, float | None, Ratio]:
    """(alone, together, ratio) at the percentile; inputs ascending, failures as +∞."""
    a, t = _percentile_point(alone, percentile), _percentile_point(together, percentile)
    value = _finite_ratio(t, a)
    if value is None:
        return a, t, Ratio(None, None, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        replicates = bootstrap_percentile(
            together, percentile, resamples, rng
        ) / bootstrap_percentile(alone, percentile, resamples, rng)
    low, high = _interval(replicates, confidence)
    return a, t, Ratio(value, low, high)


def completion_bins(records: Records, first_ns: int, last_ns: int) -> np.ndarray:
    """Successful completions per bin of ≈ 1 s over [first, last] (at least 2 bins)."""
    span = max(last_ns - first_ns, 1)
    bins = max(2, int(span // NS_PER_S))
    done = records.completed_ns[records.ok]
    done = done[(done >= first_ns) & (done <= last_ns)]
    index = np.minimum(((done - first_ns) * bins) // span, bins - 1)
    return np.bincount(index.astype(np.int64), minlength=bins).astype(np.float64)


def throughput_ratio(
    alone: RunSide,
    together: RunSide,
    rng: np.random.Generator,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Ratio:
    value = _finite_ratio(together.throughput, alone.throughput)
    if value is None:
        return Ratio(None, None, None)
    a = completion_bins(alone.records, alone.first_ns, alone.last_ns)
    t = completion_bins(together.records, together.first_ns, together.last_ns)
    a_mean, t_mean = a.mean(), t.mean()
    if a_mean <= 0 or t_mean <= 0:
        return Ratio(value, None, None)
    a_boot = rng.choice(a, size=(resamples, len(a))).mean(axis=1)
    t_boot = rng.choice(t, size=(resamples, len(t))).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = (t_boot / t_mean) / (a_boot / a_mean)
    low, high = _interval(relative, confidence)
    if low is None or high is None:
        return Ratio(value, None, None)
    return Ratio(value, value * low, value * high)


def interference_row(
    name: str,
    scenario: str,
    percentile: float,
    alone: RunSide,
    together: RunSide,
    seed: int = 0,
) -> InterferenceRow:
    """One entry's ratios (Offline latencies from the send, Server from the scheduled time)."""
    from_send = scenario == "Offline"
    rng = np.random.default_rng(seed)
    a_lat, t_lat, lat_ratio = latency_ratio(
        latencies_with_failures(alone.records, from_send),
        latencies_with_failures(together.records, from_send),
        percentile,
        rng,
    )
    return InterferenceRow(
        name=name,
        scenario=scenario,
        percentile=percentile,
        latency_origin=LATENCY_FROM_SEND if from_send else LATENCY_FROM_SCHEDULED,
        latency_alone_ns=a_lat,
        latency_together_ns=t_lat,
        latency_ratio=lat_ratio,
        throughput_alone=alone.throughput,
        throughput_together=together.throughput,
        throughput_ratio=throughput_ratio(alone, together, rng),
        client_kept_up_alone=alone.client_kept_up,
        client_kept_up_together=together.client_kept_up,
    )
