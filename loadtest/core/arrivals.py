"""When queries are due: the arrival law, behind one small interface (vegeta's Pacer is the model).

Two objects, because settings are written before a run's rate is final (find-peak and sweeps
rescale `qps`; a mix scales each entry):
- an `ArrivalLaw` is what the settings hold (`ServerSettings.arrival_law`): the law alone, e.g.
  Poisson, fixed gaps, or a recorded list of timestamps. Frozen and picklable; written into
  result.json's settings by its fields ({"name": "poisson"}).
- an `Arrivals` is that law bound to one run (`ServerSettings.arrivals`, built from the settings in
  one place): rate, minimum duration and count, seed. It yields the due times (int64 ns from the
  run's start, non-decreasing), names itself for reports ("Poisson at 500 QPS"), and knows its
  law's expected send-gap dispersion where the law has one. It crosses to worker processes and Ray
  actors inside shard plans, so it is picklable too.

Renewal laws (Poisson, constant, later gamma) draw independent gaps with mean 1 / qps and stop by
MLPerf LoadGen's rule: the last due time reaches the minimum duration *and* the count reaches the
minimum query count. `Timestamps` plays a given list exactly as given (the trace-replay hook); the
list is the whole run, so the minimums and the rate do not apply to it.

The seed draws a random law's gaps and, for every law, deals queries to shards
(core/schedule.py); the sample order has its own seed (LoadGen's two seeds). Adding a law is one
class here and one entry in LAWS (which a command-line flag can offer by name). Pure: no clock,
no I/O.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from loadtest.core.units import NS_PER_S
from loadtest.errors import SettingsError

Seed = int | np.random.SeedSequence


class Arrivals(ABC):
    """One run's arrivals: the due times, the seed that deals them to shards, and their law."""

    seed: int

    @abstractmethod
    def due_ns(self) -> np.ndarray:
        """Every query's due time: int64 ns from the run's start, non-decreasing."""

    @abstractmethod
    def describe(self) -> str:
        """The law and its rate for a report, e.g. "Poisson at 500 QPS"."""

    @property
    @abstractmethod
    def expected_gap_cv(self) -> float | None:
        """The law's coefficient of variation of the gaps (Poisson 1, fixed gaps 0); None when
        the law has none (a recorded trace: its own gaps are what it is)."""


class ArrivalLaw(ABC):
    """A law of arrivals before it is bound to a run: what the settings hold."""

    name: str

    @abstractmethod
    def arrivals(
        self, qps: float, min_duration_ns: int, min_query_count: int, seed: int
    ) -> Arrivals:
        """This law bound to a run's rate, minimums and seed."""


# --- renewal laws: independent gaps with mean 1 / qps ------------------------------------------


class RenewalLaw(ArrivalLaw):
    """Gaps drawn independently from one distribution with mean 1 / qps."""

    label: str  # for reports: "Poisson", "constant-gap"
    gap_cv: float

    @abstractmethod
    def gaps(self, rng: np.random.Generator, mean_gap_ns: float, size: int) -> np.ndarray:
        """`size` gaps (float ns) drawn from `rng`, mean `mean_gap_ns`."""

    def arrivals(
        self, qps: float, min_duration_ns: int, min_query_count: int, seed: int
    ) -> RenewalArrivals:
        return RenewalArrivals(self, qps, min_duration_ns, min_query_count, seed)


@dataclass(frozen=True)
class Poisson(RenewalLaw):
    """MLPerf's Server law: exponential gaps (a Poisson process). The default."""

    name: str = field(default="poisson", init=False)
    label = "Poisson"
    gap_cv = 1.0

    def gaps(self, rng: np.random.Generator, mean_gap_ns: float, size: int) -> np.ndarray:
        return rng.exponential(mean_gap_ns, size=size)


@dataclass(frozen=True)
class Constant(RenewalLaw):
    """Fixed gaps of exactly 1 / qps (what a closed-form rate limiter sends)."""

    name: str = field(default="constant", init=False)
    label = "constant-gap"
    gap_cv = 0.0

    def gaps(self, rng: np.random.Generator, mean_gap_ns: float, size: int) -> np.ndarray:
        return np.full(size, mean_gap_ns)


def renewal_due_ns(
    law: RenewalLaw, qps: float, min_duration_ns: int, min_query_count: int, seed: Seed
) -> np.ndarray:
    """Cumulative gaps of `law` until both minimums are met (LoadGen's stopping rule).

    Drawn in vectorised chunks from one RNG stream, so the result does not depend on chunk sizes:
    the i-th gap is always the i-th draw of `Generator(PCG64(seed))`.
    """
    if qps <= 0:
        raise ValueError("qps must be positive")
    rng = np.random.Generator(np.random.PCG64(seed))
    mean_gap_ns = NS_PER_S / qps
    expected = int(qps * min_duration_ns / NS_PER_S)
    chunk = max(min_query_count, expected + 4 * int(np.sqrt(expected + 1)) + 16)
    times = np.cumsum(law.gaps(rng, mean_gap_ns, chunk))
    while times[-1] < min_duration_ns or len(times) < min_query_count:
        more = np.cumsum(law.gaps(rng, mean_gap_ns, max(16, chunk // 8))) + times[-1]
        times = np.concatenate([times, more])
    # Cut right after the first index that satisfies both rules.
    reached_duration = int(np.searchsorted(times, min_duration_ns, side="left"))
    count = max(min_query_count, reached_duration + 1)
    return np.round(times[:count]).astype(np.int64)


@dataclass(frozen=True)
class RenewalArrivals(Arrivals):
    """A renewal law bound to a run: `qps`, the minimums, and the seed of its gaps."""

    law: RenewalLaw
    qps: float
    min_duration_ns: int
    min_query_count: int
    seed: int

    def due_ns(self) -> np.ndarray:
        return renewal_due_ns(
            self.law, self.qps, self.min_duration_ns, self.min_query_count, self.seed
        )

    def describe(self) -> str:
        return f"{self.law.label} at {self.qps:g} QPS"

    @property
    def expected_gap_cv(self) -> float | None:
        return self.law.gap_cv


def poisson(qps: float, min_duration_ns: int, min_query_count: int, seed: int) -> Arrivals:
    """LoadGen's Server arrivals from bare numbers (tests, benchmarks, library callers)."""
    return POISSON.arrivals(qps, min_duration_ns, min_query_count, seed)


# --- a given list of timestamps (trace replay) -------------------------------------------------


@dataclass(frozen=True, eq=False)
class Timestamps(ArrivalLaw):
    """Play these due times exactly (ns from the run's start): a recorded trace.

    The list is the whole run: rate and minimums do not apply. Sharding deals each query to a
    worker by the run's seed, so the shards together are exactly these queries (core/schedule.py).
    """

    times_ns: np.ndarray
    name: str = field(default="timestamps", init=False)

    def __post_init__(self) -> None:
        times = np.asarray(self.times_ns)
        if times.ndim != 1 or len(times) == 0:
            raise SettingsError("a list of timestamps needs at least one time")
        if not np.issubdtype(times.dtype, np.integer):
            if not np.all(np.isfinite(times)):
                raise SettingsError("timestamps must be finite")
            times = np.round(times)
        times = times.astype(np.int64)
        if times[0] < 0 or np.any(np.diff(times) < 0):
            raise SettingsError("timestamps must be ≥ 0 and in order (non-decreasing)")
        times.setflags(write=False)
        object.__setattr__(self, "times_ns", times)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Timestamps) and np.array_equal(self.times_ns, other.times_ns)

    def __hash__(self) -> int:
        return hash(self.times_ns.tobytes())

    def arrivals(
        self, qps: float, min_duration_ns: int, min_query_count: int, seed: int
    ) -> TimestampArrivals:
        return TimestampArrivals(self, seed)


@dataclass(frozen=True)
class TimestampArrivals(Arrivals):
    """A list of timestamps bound to a run: played as given; `seed` only deals them to shards."""

    law: Timestamps
    seed: int = 0

    def due_ns(self) -> np.ndarray:
        return self.law.times_ns.copy()

    @property
    def mean_qps(self) -> float:
        """Queries per second over the list's span (the first query counts from t = 0)."""
        times = self.law.times_ns
        return len(times) * NS_PER_S / int(times[-1]) if times[-1] > 0 else math.inf

    def describe(self) -> str:
        count = len(self.law.times_ns)
        span_s = int(self.law.times_ns[-1]) / NS_PER_S
        return f"{count:,} given timestamps over {span_s:g} s (mean {self.mean_qps:,.1f} QPS)"

    @property
    def expected_gap_cv(self) -> float | None:
        return None


# --- laws by name: what a command-line flag would offer ----------------------------------------

POISSON = Poisson()
CONSTANT = Constant()
LAWS: dict[str, ArrivalLaw] = {law.name: law for law in (POISSON, CONSTANT)}


def law_named(name: str) -> ArrivalLaw:
    """The law a user named ("poisson", "constant"), or one clear SettingsError."""
    try:
        return LAWS[name.strip().lower()]
    except KeyError:
        raise SettingsError(
            f"unknown arrival law {name!r}: choose one of {', '.join(LAWS)}"
        ) from None
