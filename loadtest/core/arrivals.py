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

Renewal laws (Poisson, constant, gamma) draw independent gaps with mean 1 / qps and stop by
MLPerf LoadGen's rule: the last due time reaches the minimum duration *and* the count reaches the
minimum query count. `Timestamps` plays a given list exactly as given (the trace-replay hook); the
list is the whole run, so the minimums and the rate do not apply to it.

The seed draws a random law's gaps and, for every law, deals queries to shards
(core/schedule.py); the sample order has its own seed (LoadGen's two seeds). Adding a law is one
class here and one entry in LAWS (which a command-line flag can offer by name), or for a law with
a parameter, its "NAME:VALUE" form in `law_named` (gamma). A rate that changes over time is
core/stages.py (any renewal law over a profile); a trace read from a file, engine/traces/.
Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from loadtest.core.trace import Trace, TraceRows
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

    @property
    def trace_rows(self) -> TraceRows | None:
        """What a recorded trace says about each query (its row, sample, lengths, model), in
        due-time order; None for a drawn law."""
        return None


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

    @property
    @abstractmethod
    def label(self) -> str:
        """The law for reports: "Poisson", "constant-gap", "gamma (CV 2)"."""

    @property
    @abstractmethod
    def gap_cv(self) -> float:
        """The gaps' coefficient of variation (the send-law check's expectation)."""

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


# A CV above this is a handful of queries in huge clumps (shape 1/CV² = 0.01: most gaps round to
# 0 ns): a burst test, not an arrival law, and sampling error swamps any measured CV.
MAX_GAMMA_CV = 10.0


@dataclass(frozen=True)
class Gamma(RenewalLaw):
    """Gamma-distributed gaps with a chosen dispersion `cv` (vLLM's and AIPerf's "burstiness").

    Gaps ~ Gamma(shape k = 1 / cv², scale = 1 / (qps · k)): mean exactly 1 / qps whatever `cv`,
    coefficient of variation exactly `cv`. CV 1 is Poisson, below 1 smoother, above 1 burstier.
    The drawn gaps are played as drawn: unlike vLLM's benchmark, which rescales the cumulative
    schedule so its last arrival lands at N / rate, nothing here renormalises them, so the
    schedule is one realisation of the process it names. vLLM's `--burstiness` b is k, so
    `Gamma.from_burstiness(b)` has CV 1 / √b.
    """

    cv: float
    name: str = field(default="gamma", init=False)

    def __post_init__(self) -> None:
        if isinstance(self.cv, bool) or not isinstance(self.cv, (int, float)):
            raise SettingsError(f"the gamma law's CV must be a number, got {self.cv!r}")
        if not (math.isfinite(self.cv) and 0 < self.cv <= MAX_GAMMA_CV):
            raise SettingsError(
                f"the gamma law's CV must be in (0, {MAX_GAMMA_CV:g}], got {self.cv:g} "
                "(CV 1 is Poisson; for evenly spaced queries use the constant law)"
            )
        object.__setattr__(self, "cv", float(self.cv))

    @classmethod
    def from_burstiness(cls, burstiness: float) -> Gamma:
        """vLLM's `--burstiness` (AIPerf's `--arrival-smoothness`): the gamma shape k."""
        if not (math.isfinite(burstiness) and burstiness > 0):
            raise SettingsError(f"burstiness must be a finite number > 0, got {burstiness:g}")
        return cls(1 / math.sqrt(burstiness))

    @property
    def shape(self) -> float:
        return 1 / (self.cv * self.cv)

    @property
    def label(self) -> str:
        return f"gamma (CV {self.cv:g})"

    @property
    def gap_cv(self) -> float:
        return self.cv

    def gaps(self, rng: np.random.Generator, mean_gap_ns: float, size: int) -> np.ndarray:
        return rng.gamma(self.shape, mean_gap_ns / self.shape, size=size)


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
    `rows` (one per time) is what the trace says about each query, dealt with it; `source` names
    the trace for reports. `Timestamps.of(trace)` is a trace read by engine/traces/.
    """

    times_ns: np.ndarray
    name: str = field(default="timestamps", init=False)
    rows: TraceRows | None = None
    source: str = ""

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
        if self.rows is not None and len(self.rows) != len(times):
            raise SettingsError("a trace's rows and timestamps differ in number")

    @classmethod
    def of(cls, trace: Trace) -> Timestamps:
        """A trace read from a file (engine/traces/), replayed as it is."""
        return cls(trace.times_ns, rows=trace.rows, source=trace.source)

    @property
    def mean_qps(self) -> float:
        """Queries per second over the list's span (its count when all are due at 0)."""
        span_s = int(self.times_ns[-1]) / NS_PER_S
        return len(self.times_ns) / span_s if span_s > 0 else float(len(self.times_ns))

    def at_rate(self, qps: float) -> Timestamps:
        """The same list played faster or slower so that its mean rate is `qps` (find-peak's
        speed-up over a trace); the rows stay with their queries."""
        if not (math.isfinite(qps) and qps > 0):
            raise SettingsError(f"a trace's rate must be > 0, got {qps}")
        factor = qps / self.mean_qps
        if factor == 1:
            return self
        times = np.round(self.times_ns / factor).astype(np.int64)
        return Timestamps(times, rows=self.rows, source=f"{self.source} ×{factor:.4g}")

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Timestamps)
            and np.array_equal(self.times_ns, other.times_ns)
            and self.rows == other.rows
            and self.source == other.source
        )

    def __hash__(self) -> int:
        return hash((self.times_ns.tobytes(), self.source))

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
        what = (
            f"{self.law.source}: {count:,} queries"
            if self.law.source
            else f"{count:,} given timestamps"
        )
        return f"{what} over {span_s:g} s (mean {self.mean_qps:,.1f} QPS)"

    @property
    def expected_gap_cv(self) -> float | None:
        return None

    @property
    def trace_rows(self) -> TraceRows | None:
        return self.law.rows


# --- laws by name: what a command-line flag would offer ----------------------------------------

POISSON = Poisson()
CONSTANT = Constant()
LAWS: dict[str, ArrivalLaw] = {law.name: law for law in (POISSON, CONSTANT)}
# Laws with a parameter, named "NAME:VALUE" or "NAME:KEY=VALUE".
PARAMETRISED = {"gamma": "gamma:CV, gamma:cv=CV or gamma:burstiness=K"}
CHOICES = ", ".join([*LAWS, *PARAMETRISED.values()])


def _number(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"arrival law {spec!r}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise SettingsError(f"arrival law {spec!r}: {text!r} is not a finite number")
    return value


def _gamma(parameter: str, spec: str) -> Gamma:
    key, _, value = parameter.rpartition("=")
    key = key.strip().lower()
    if key in ("", "cv"):
        return Gamma(_number(value.strip(), spec))
    if key == "burstiness":
        return Gamma.from_burstiness(_number(value.strip(), spec))
    raise SettingsError(f"arrival law {spec!r}: unknown parameter {key!r} (cv or burstiness)")


def law_named(name: str) -> ArrivalLaw:
    """The law a user named ("poisson", "constant", "gamma:2", "gamma:burstiness=0.25"), or
    one clear SettingsError."""
    spec = name.strip().lower()
    law, colon, parameter = spec.partition(":")
    if law in LAWS and not colon:
        return LAWS[law]
    if law == "gamma":
        if not parameter.strip():
            raise SettingsError(f"arrival law {name!r} needs its CV: {PARAMETRISED['gamma']}")
        return _gamma(parameter, name)
    if law in LAWS:
        raise SettingsError(f"arrival law {name!r}: {law} takes no parameter")
    raise SettingsError(f"unknown arrival law {name!r}: choose one of {CHOICES}")
