"""Arrivals + seeds -> Schedule: each query's due time and sample, made before the clock starts.

The due times come from an `Arrivals` (core/arrivals.py: Poisson by default, as MLPerf LoadGen's
Server scenario draws them, or another law, or a given list of timestamps). Every generated query
is issued. Sample indices are drawn uniformly from the sample library with their own seed, so the
arrival law and the sample order can be varied independently (as LoadGen's two seeds allow); a
recorded trace that names each query's sample plays those samples instead, and its per-query
rows (core/trace.TraceRows: trace index, lengths, model) travel with the schedule.
Sharding (`deal`) gives each query of the one whole schedule to a worker at random, seeded, so
the shards together are the whole schedule whatever their number.

We use numpy's PCG64 rather than LoadGen's mt19937, so schedules are reproducible run to run but not
bit-identical to LoadGen's. Pure: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loadtest.core.arrivals import POISSON, Arrivals, Seed, poisson, renewal_due_ns
from loadtest.core.trace import TraceRows
from loadtest.core.units import NS_PER_S as NS_PER_S  # re-exported: callers import it from here
from loadtest.errors import SettingsError


@dataclass(frozen=True)
class Schedule:
    """Due times (int64 ns from the run's start, non-decreasing) and sample indices (int32);
    for a recorded trace, `rows`: what the trace says about each query (its trace index...)."""

    scheduled_ns: np.ndarray
    sample_index: np.ndarray
    rows: TraceRows | None = None

    def __post_init__(self) -> None:
        if len(self.scheduled_ns) != len(self.sample_index):
            raise ValueError("scheduled_ns and sample_index differ in length")
        if self.rows is not None and len(self.rows) != len(self.scheduled_ns):
            raise ValueError("scheduled_ns and rows differ in length")

    def __len__(self) -> int:
        return len(self.scheduled_ns)

    @property
    def span_ns(self) -> int:
        """Time from the run's start to the last due time."""
        return int(self.scheduled_ns[-1]) if len(self) else 0


# Mixed into the deal seed for the RNG that deals queries to shards, so that stream is
# independent of the arrival-time stream drawn from the same seed.
SHARD_STREAM = 0x5A4D


def poisson_arrivals_ns(
    qps: float, min_duration_ns: int, min_query_count: int, seed: Seed
) -> np.ndarray:
    """Poisson due times from bare numbers (core/arrivals.py's default law)."""
    return renewal_due_ns(POISSON, qps, min_duration_ns, min_query_count, seed)


def uniform_sample_indices(count: int, sample_count: int, seed: Seed) -> np.ndarray:
    """Each query's sample, uniform over the library (LoadGen's sample_index_rng)."""
    if sample_count <= 0:
        raise ValueError("sample_count must be positive")
    rng = np.random.Generator(np.random.PCG64(seed))
    return rng.integers(0, sample_count, size=count, dtype=np.int32)


def schedule_of(arrivals: Arrivals, sample_count: int, sample_seed: Seed) -> Schedule:
    """The whole schedule, ready before the run starts: `arrivals`' due times, each with a
    sample drawn from its own seed, or the sample its trace row names."""
    times = arrivals.due_ns()
    rows = arrivals.trace_rows
    if rows is not None and rows.sample is not None:
        if len(rows) and (rows.sample.min() < 0 or rows.sample.max() >= sample_count):
            raise SettingsError(
                f"the trace names samples {int(rows.sample.min())}-{int(rows.sample.max())} but "
                f"the sample library holds {sample_count} (0-{sample_count - 1}; --samples)"
            )
        return Schedule(times, rows.sample.astype(np.int32), rows)
    return Schedule(times, uniform_sample_indices(len(times), sample_count, sample_seed), rows)


def shard_owners(count: int, seed: int, shards: int) -> np.ndarray:
    """Which shard plays each of `count` queries: uniform at random, from `seed`'s deal stream."""
    return np.random.Generator(np.random.PCG64([seed, SHARD_STREAM])).integers(
        0, shards, size=count
    )


def deal(schedule: Schedule, seed: int, shard: int, shards: int) -> Schedule:
    """Shard `shard` of `shards` of a whole schedule: each query goes to a shard uniformly at
    random (`shard_owners`), keeping its time and sample, so the shards together are exactly the
    whole schedule whatever `shards` is. Random thinning of a Poisson process gives independent
    Poisson processes, so each shard of a Poisson schedule is itself Poisson at qps / shards."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} of {shards}")
    if shards == 1:
        return schedule
    mine = shard_owners(len(schedule), seed, shards) == shard
    rows = None if schedule.rows is None else schedule.rows.take(mine)
    return Schedule(schedule.scheduled_ns[mine], schedule.sample_index[mine], rows)


def shard_schedule_of(
    arrivals: Arrivals, sample_count: int, sample_seed: int, shard: int, shards: int
) -> Schedule:
    """Shard `shard` of `shards`: the queries of the one seeded schedule that this shard plays.

    The whole schedule is drawn exactly as one process would draw it, then dealt by the
    arrivals' seed. So a run's arrivals do not depend on how many processes play them. Every
    shard draws the full schedule (cheap: a few MB for an hour at 1k QPS) and keeps its share.
    """
    return deal(schedule_of(arrivals, sample_count, sample_seed), arrivals.seed, shard, shards)


def server_schedule(
    qps: float,
    min_duration_ns: int,
    min_query_count: int,
    sample_count: int,
    schedule_seed: int,
    sample_seed: Seed,
) -> Schedule:
    """The Poisson Server schedule from bare numbers (tests, benchmarks, library callers)."""
    arrivals = poisson(qps, min_duration_ns, min_query_count, schedule_seed)
    return schedule_of(arrivals, sample_count, sample_seed)


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
    """Shard of the Poisson Server schedule from bare numbers (see shard_schedule_of)."""
    arrivals = poisson(qps, min_duration_ns, min_query_count, schedule_seed)
    return shard_schedule_of(arrivals, sample_count, sample_seed, shard, shards)


def merged_schedule(shards: list[Schedule]) -> Schedule:
    """The shards' queries in one timeline, ordered by due time (ties keep shard order)."""
    times = np.concatenate([s.scheduled_ns for s in shards])
    samples = np.concatenate([s.sample_index for s in shards])
    order = np.argsort(times, kind="stable")
    rows = None
    if shards and all(s.rows is not None for s in shards):
        rows = TraceRows.concatenate([s.rows for s in shards if s.rows is not None]).take(order)
    return Schedule(times[order], samples[order], rows)


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
