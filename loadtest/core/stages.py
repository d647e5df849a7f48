"""Load stages: a rate that changes over time (steps and linear ramps), in the spirit of k6's
`stages`, played by any renewal law (core/arrivals.py) within each stage.

A profile is written as comma-separated stages, each `DURATION:RATE` (a step: RATE queries per
second for DURATION) or `DURATION:FROM->TO` (a linear ramp from FROM to TO QPS), and
`DURATION:->TO` ramps from where the previous stage ended:

    30s:100,60s:400,30s:100        three steps
    60s:100->400,2m:400,30s:->0    a ramp up, a plateau, a ramp down to nothing

DURATION is a number with a unit, `ms`, `s`, `m` or `h`, or several (`1m30s`); a bare number is
refused (the unit is never guessed). A rate is ≥ 0 (a stage at 0 is a pause).

How queries are drawn (time rescaling): the law's own unit-rate process is drawn first (seeded,
gaps of mean 1, cumulative sums U₁ < U₂ < ...), and each Uᵢ is mapped through the inverse of the
profile's cumulative rate Λ(t) = ∫₀ᵗ λ(s) ds: tᵢ = Λ⁻¹(Uᵢ). For Poisson this is exact: the result
is the inhomogeneous Poisson process of intensity λ(t). For the other renewal laws it is the
standard construction of a renewal process with a time-varying rate: within a step stage the
gaps are the law's own at that stage's rate (so gamma keeps its CV), and across a ramp the law's
gaps are stretched as the rate changes. Nothing is renormalised: the count in each stage is
whatever the draws give (its expectation is Λ over the stage).

The profile is the whole run: a staged run's minimum duration and query count do not apply
(as for a trace). `ServerSettings.qps` scales it: `Staged.arrivals(qps)` multiplies every rate by
qps / profile.mean_qps, so qps = the profile's own mean plays it as written, and find-peak's
rescaled rate plays the same shape faster or slower. Each query's stage is recovered from the
stage boundaries (`StagedArrivals.stage_bounds_ns`, `stage_index`), so reports can judge each
stage alone. Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from loadtest.core.arrivals import ArrivalLaw, Arrivals, RenewalLaw
from loadtest.core.units import NS_PER_MS, NS_PER_S
from loadtest.errors import SettingsError

# A profile longer than this is not a load test (a year); it also keeps every sum of
# durations far inside int64 nanoseconds.
MAX_PROFILE_NS = 366 * 24 * 3600 * NS_PER_S
# More queries than this would not fit the schedule's arrays in memory (16 bytes each and more).
MAX_EXPECTED_QUERIES = 1_000_000_000

UNIT_NS = {"ms": NS_PER_MS, "s": NS_PER_S, "m": 60 * NS_PER_S, "h": 3600 * NS_PER_S}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")


@dataclass(frozen=True)
class Stage:
    """`duration_ns` at a rate going linearly from `start_qps` to `end_qps` (equal for a step)."""

    duration_ns: int
    start_qps: float
    end_qps: float

    @property
    def is_ramp(self) -> bool:
        return self.start_qps != self.end_qps

    @property
    def expected_count(self) -> float:
        """Λ over this stage: the expected number of queries (the trapezoid's area)."""
        return (self.start_qps + self.end_qps) / 2 * self.duration_ns / NS_PER_S

    def spec(self) -> str:
        rate = f"{self.start_qps:g}->{self.end_qps:g}" if self.is_ramp else f"{self.start_qps:g}"
        return f"{_duration_text(self.duration_ns)}:{rate}"


def _duration_text(ns: int) -> str:
    for unit in ("h", "m", "s"):
        if ns % UNIT_NS[unit] == 0:
            return f"{ns // UNIT_NS[unit]}{unit}"
    return f"{ns / NS_PER_MS:g}ms"


@dataclass(frozen=True)
class RateProfile:
    """The stages, in order: a rate λ(t) that is piecewise constant or linear."""

    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        if not self.stages:
            raise SettingsError("a load profile needs at least one stage")
        for stage in self.stages:
            if stage.duration_ns <= 0:
                raise SettingsError("every stage needs a duration > 0")
            for rate in (stage.start_qps, stage.end_qps):
                if not (math.isfinite(rate) and rate >= 0):
                    raise SettingsError(f"every stage's rate must be finite and ≥ 0, got {rate}")
        if self.duration_ns > MAX_PROFILE_NS:
            raise SettingsError(
                f"the stages last {self.duration_ns / NS_PER_S:g} s in all: more than a year"
            )
        if not self.expected_count > 0:
            raise SettingsError("the stages offer no queries: every rate is 0")
        if self.expected_count > MAX_EXPECTED_QUERIES:
            raise SettingsError(
                f"the stages offer {self.expected_count:.3g} queries, more than "
                f"{MAX_EXPECTED_QUERIES:.0e}: shorten them or lower the rates"
            )

    @property
    def duration_ns(self) -> int:
        return sum(s.duration_ns for s in self.stages)

    @property
    def expected_count(self) -> float:
        return math.fsum(s.expected_count for s in self.stages)

    @property
    def mean_qps(self) -> float:
        """The whole profile's mean rate: expected queries / duration."""
        return self.expected_count * NS_PER_S / self.duration_ns

    @property
    def bounds_ns(self) -> np.ndarray:
        """The stages' boundaries, int64 ns from the run's start: [0, end₀, end₁, ..., end]."""
        return np.concatenate([[0], np.cumsum([s.duration_ns for s in self.stages])]).astype(
            np.int64
        )

    def scaled(self, factor: float) -> RateProfile:
        """Every rate × `factor`: the same shape, faster or slower."""
        if factor == 1:
            return self
        return RateProfile(
            tuple(
                Stage(s.duration_ns, s.start_qps * factor, s.end_qps * factor) for s in self.stages
            )
        )

    def spec(self) -> str:
        """The profile in the form `parse_stages` reads."""
        return ",".join(s.spec() for s in self.stages)

    def time_of(self, expected: np.ndarray) -> np.ndarray:
        """Λ⁻¹: the time (int64 ns from the start) by which `expected` queries are due, for each
        value in [0, expected_count]. Within a ramp of slope a from rate r₀, Λ = r₀s + a s²/2 is
        solved as s = 2u / (r₀ + √(r₀² + 2au)), which is stable for a ramp up or down."""
        counts = np.array([s.expected_count for s in self.stages])
        ends = np.cumsum(counts)
        starts = ends - counts
        stage = np.minimum(np.searchsorted(ends, expected, side="left"), len(self.stages) - 1)
        rate0 = np.array([s.start_qps for s in self.stages])[stage]
        slope = np.array(
            [(s.end_qps - s.start_qps) * NS_PER_S / s.duration_ns for s in self.stages]
        )[stage]  # QPS per second
        within = np.maximum(expected - starts[stage], 0.0)
        root = np.sqrt(np.maximum(rate0 * rate0 + 2 * slope * within, 0.0))
        denominator = rate0 + root
        with np.errstate(divide="ignore", invalid="ignore"):
            seconds = np.where(within > 0, 2 * within / denominator, 0.0)
        bounds = self.bounds_ns
        offset = np.minimum(np.round(seconds * NS_PER_S), np.diff(bounds)[stage])
        return bounds[stage] + offset.astype(np.int64)


def _stage_error(number: int, text: str, why: str) -> SettingsError:
    return SettingsError(f"--stages: stage {number} {text!r}: {why}")


def parse_duration_ns(text: str) -> int:
    """'30s', '500ms', '2m', '1h', '1m30s' -> whole ns; ValueError (a sentence) otherwise."""
    compact = text.strip().lower()
    if not compact:
        raise ValueError("the duration is missing")
    parts = list(_PART.finditer(compact))
    if not parts or "".join(p.group(0) for p in parts) != compact:
        if re.fullmatch(r"[\d.]+", compact):
            raise ValueError(f"the duration {text.strip()!r} needs a unit (ms, s, m or h)")
        raise ValueError(f"the duration {text.strip()!r} is not like 30s, 500ms, 2m or 1m30s")
    total = math.fsum(float(p.group(1)) * UNIT_NS[p.group(2)] for p in parts)
    if not total <= MAX_PROFILE_NS:
        raise ValueError(f"the duration {text.strip()!r} is more than a year")
    ns = round(total)
    if ns <= 0:
        raise ValueError(f"the duration {text.strip()!r} is zero")
    return ns


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"the rate {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"the rate {text.strip()!r} is not a finite number")
    if value < 0:
        raise ValueError(f"the rate {text.strip()!r} is negative")
    return value


def parse_stages(text: str) -> RateProfile:
    """'30s:100,60s:100->400,30s:->100' -> a RateProfile; one SettingsError line otherwise."""
    if not text.strip():
        raise SettingsError("--stages is empty: want e.g. 30s:100,60s:100->400")
    stages: list[Stage] = []
    for number, item in enumerate(text.split(","), start=1):
        duration, colon, rate = item.partition(":")
        if not colon:
            raise _stage_error(number, item, "want DURATION:RATE or DURATION:FROM->TO")
        try:
            duration_ns = parse_duration_ns(duration)
            start, arrow, end = rate.partition("->")
            if arrow and not start.strip():
                if not stages:
                    raise ValueError("the first stage cannot ramp from a previous one")
                first = stages[-1].end_qps
            else:
                first = _rate(start)
            stages.append(Stage(duration_ns, first, _rate(end) if arrow else first))
        except ValueError as exc:
            raise _stage_error(number, item.strip(), str(exc)) from None
    total_ns = sum(s.duration_ns for s in stages)
    if total_ns > MAX_PROFILE_NS:
        raise SettingsError(f"--stages last {total_ns / NS_PER_S:g} s in all: more than a year")
    return RateProfile(tuple(stages))


# --- the law: a renewal law played over a profile ---------------------------------------------


@dataclass(frozen=True)
class Staged(ArrivalLaw):
    """`law` (Poisson by default at the command line) played over `profile` by time rescaling."""

    law: RenewalLaw
    profile: RateProfile
    name: str = field(default="staged", init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.law, RenewalLaw):
            raise SettingsError(
                f"stages play a renewal law (poisson, constant or gamma), not {self.law.name}"
            )

    def arrivals(
        self, qps: float, min_duration_ns: int, min_query_count: int, seed: int
    ) -> StagedArrivals:
        if not (math.isfinite(qps) and qps > 0):
            raise SettingsError(f"a staged run's rate must be > 0, got {qps}")
        factor = qps / self.profile.mean_qps
        return StagedArrivals(self.law, self.profile.scaled(factor), factor, seed)


@dataclass(frozen=True)
class StagedArrivals(Arrivals):
    """A staged law bound to a run: the (scaled) profile, and the seed of the law's draws."""

    law: RenewalLaw
    profile: RateProfile
    factor: float  # the written profile's rates × this (1 when played as written)
    seed: int

    def due_ns(self) -> np.ndarray:
        total = self.profile.expected_count
        rng = np.random.Generator(np.random.PCG64(self.seed))
        chunk = int(total + 4 * math.sqrt(total) * max(1.0, self.law.gap_cv) + 16)
        unit = np.cumsum(self.law.gaps(rng, 1.0, chunk))
        while unit[-1] <= total:
            more = np.cumsum(self.law.gaps(rng, 1.0, max(16, chunk // 8))) + unit[-1]
            unit = np.concatenate([unit, more])
        return self.profile.time_of(unit[: int(np.searchsorted(unit, total, side="right"))])

    @property
    def stage_bounds_ns(self) -> np.ndarray:
        """Stage k holds the queries due in (bounds[k], bounds[k + 1]] (and stage 0 a query due
        at 0): a query due exactly at a boundary was accumulated by the stage that ends there
        (Λ⁻¹ takes the earliest time, so one due at the end of a stage before a pause stays in
        that stage)."""
        return self.profile.bounds_ns

    def stage_index(self, due_ns: np.ndarray) -> np.ndarray:
        """Each due time's stage (0-based), by the stage boundaries."""
        inner = self.stage_bounds_ns[1:-1]
        return np.searchsorted(inner, np.asarray(due_ns), side="left").astype(np.int32)

    def describe(self) -> str:
        scaled = f" ×{self.factor:.4g}" if self.factor != 1 else ""
        count = len(self.profile.stages)
        return (
            f"{self.law.label} over {count} stage{'s' if count != 1 else ''} "
            f"{self.profile.spec()}{scaled} (mean {self.profile.mean_qps:,.4g} QPS)"
        )

    @property
    def expected_gap_cv(self) -> float | None:
        """The law's CV for a single step; None otherwise (a changing rate adds dispersion)."""
        stages = self.profile.stages
        return self.law.gap_cv if len(stages) == 1 and not stages[0].is_ramp else None
