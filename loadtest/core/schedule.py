"""Settings + seeds -> Schedule: each query's due time and sample, made before the clock starts.

This follows MLPerf LoadGen's Server scenario: inter-arrival gaps are exponential with rate `qps`
(a Poisson process), drawn from a seeded RNG, and generation continues until the last due time
reaches the minimum duration *and* the count reaches the minimum query count. Every generated query
is issued. Sample indices are drawn uniformly from the sample library with their own seed, so the
arrival law and the sample order can be varied independently (as LoadGen's two seeds allow).

We use numpy's PCG64 rather than LoadGen's mt19937, so schedules are reproducible run to run but not
bit-identical to LoadGen's. Pure: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loadtest.core.units import NS_PER_S


@dataclass(frozen=True)
class Schedule:
    """Due times (int64 ns from the run's start, non-decreasing) and sample indices (int32)."""

    scheduled_ns: np.ndarray
    sample_index: np.ndarray

    def __post_init__(self) -> None:
        if len(self.scheduled_ns) != len(self.sample_index):
            raise ValueError("scheduled_ns and sample_index differ in length")

    def __len__(self) -> int:
        return len(self.scheduled_ns)

    @property
    def span_ns(self) -> int:
        """Time from the run's start to the last due time."""
        return int(self.scheduled_ns[-1]) if len(self) else 0


Seed = int | np.random.SeedSequence
# Mixed into the schedule seed for the RNG that deals queries to shards, so that stream is
# independent of the arrival-time stream drawn from the same seed.
SHARD_STREAM = 0x5A4D


def poisson_arrivals_ns(
    qps: float, min_duration_ns: int, min_query_count: int, seed: Seed
) -> np.ndarray:
    """Cumulative exponential gaps until both minimums are met (LoadGen's stopping rule).

    Drawn in vectorised chunks from one RNG stream, so the result does not depend on chunk sizes:
    the i-th gap is always the i-th draw of `Generator(PCG64(seed)).exponential`.
    """
    if qps <= 0:
        raise ValueError("qps must be positive")
    rng = np.random.Generator(np.random.PCG64(seed))
    mean_gap_ns = NS_PER_S / qps
    expected = int(qps * min_duration_ns / NS_PER_S)
    chunk = max(min_query_count, expected + 4 * int(np.sqrt(expected + 1)) + 16)
    times = np.cumsum(rng.exponential(mean_gap_ns, size=chunk))
    while times[-1] < min_duration_ns or len(times) < min_query_count:
        more = np.cumsum(rng.exponential(mean_gap_ns, size=max(16, chunk // 8))) + times[-1]
        times = np.concatenate([times, more])
    # Cut right after the first index that satisfies both rules.
    reached_duration = int(np.searchsorted(times, min_duration_ns, side="left"))
    count = max(min_query_count, reached_duration + 1)
    return np.round(times[:count]).astype(np.int64)


def uniform_sample_indices(count: int, sample_count: int, seed: Seed) -> np.ndarray:
    """Each query's sample, uniform over the library (LoadGen's sample_index_rng)."""
    if sample_count <= 0:
        raise ValueError("sample_count must be positive")
    rng = np.random.Generator(np.random.PCG64(seed))
    return rng.integers(0, sample_count, size=count, dtype=np.int32)


def server_schedule(
    qps: float,
    min_duration_ns: int,
    min_query_count: int,
    sample_count: int,
    schedule_seed: Seed,
    sample_seed: Seed,
) -> Schedule:
    """The whole Server-scenario schedule, ready before the run starts."""
    times = poisson_arrivals_ns(qps, min_duration_ns, min_query_count, schedule_seed)
    return Schedule(times, uniform_sample_indices(len(times), sample_count, sample_seed))


def shard_schedule(
    qps: float,
    min_duration_ns: int,
    min_query_count: int,
    sample_count: int,
    schedule_seed: int,
    sample_seed: int,
    shard: int,
    shards: int,
) -> Schedule:
    """Shard `shard` of `shards`: the queries of the one seeded schedule that this shard plays.

    The whole Server schedule is drawn exactly as one process would draw it, then each query is
    given to a shard uniformly at random (an RNG seeded from the schedule seed). So a run's
    arrivals do not depend on how many processes play them: the shards together are the same
    queries at the same times with the same samples whatever `shards` is. Random thinning of a
    Poisson process gives independent Poisson processes, so each shard is itself Poisson at
    qps / shards. Every shard draws the full schedule (cheap: a few MB for an hour at 1k QPS) and
    keeps its share.
    """
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} of {shards}")
    full = server_schedule(
        qps, min_duration_ns, min_query_count, sample_count, schedule_seed, sample_seed
    )
    if shards == 1:
        return full
    owner = np.random.Generator(np.random.PCG64([schedule_seed, SHARD_STREAM])).integers(
        0, shards, size=len(full)
    )
    mine = owner == shard
    return Schedule(full.scheduled_ns[mine], full.sample_index[mine])


def merged_schedule(shards: list[Schedule]) -> Schedule:
    """The shards' queries in one timeline, ordered by due time (ties keep shard order)."""
    times = np.concatenate([s.scheduled_ns for s in shards])
    samples = np.concatenate([s.sample_index for s in shards])
    order = np.argsort(times, kind="stable")
    return Schedule(times[order], samples[order])


CHECK_STREAM = 0x6F757470  # a third seeded stream beside arrivals and samples: "outp"


def check_mask(count: int, rate: float, seed: int, start: int = 0) -> np.ndarray:
    """Which queries --check-outputs samples: query i is chosen with probability `rate`, drawn
    from its own seeded stream, so the choice is made with the schedule, is the same run to
    run, and is independent of arrivals and samples. `start` continues the stream (queries
    start .. start + count - 1), for stream scenarios whose query count grows as they play."""
    if count <= 0 or rate <= 0:
        return np.zeros(max(count, 0), dtype=bool)
    bits = np.random.PCG64([seed, CHECK_STREAM])
    bits.advance(start)  # one 64-bit draw per double below
    return np.random.Generator(bits).random(count) < rate
