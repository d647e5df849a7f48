"""Several Server streams, one timeline: the superposed schedule of a mix of models. Pure.

Each Server entry of a mix plays its own seeded schedule (core.schedule.schedule_of, with the
entry's own `Arrivals`, sample seed and sample library), exactly the schedule it would play
alone. The mix is their superposition: every entry's queries in one timeline, ordered by due
time. A query's sample index is made global by shifting it past the libraries of the entries
before it (`offsets`), so one runner (and one target that routes by index, targets/mix.py) plays
them all, and the row's entry is read back from its index. Because the superposition is one
schedule, the shards split it as they split one model's (core.schedule.deal): each query goes to
a shard uniformly at random, seeded from the mix's seed (`shard_of`), and the shards together are
the same queries at the same times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loadtest.core.arrivals import Arrivals
from loadtest.core.schedule import Schedule, deal, schedule_of


@dataclass(frozen=True)
class Stream:
    """One Server entry's arrivals and samples (all it takes to redraw its schedule anywhere)."""

    arrivals: Arrivals
    library_size: int
    sample_seed: int

    def schedule(self) -> Schedule:
        return schedule_of(self.arrivals, self.library_size, self.sample_seed)


def entry_seed(seed: int, index: int) -> int:
    """The schedule seed of entry `index` of a mix seeded with `seed`: independent streams per
    entry (SeedSequence spawning), reproducible, and the same whether the entry plays alone or in
    the mix."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint32)[0])


def offsets_of(library_sizes: list[int] | tuple[int, ...]) -> np.ndarray:
    """[0, n0, n0 + n1, ...]: where each entry's samples start in the global index."""
    return np.concatenate([[0], np.cumsum(library_sizes, dtype=np.int64)]).astype(np.int64)


def entry_of(sample_index: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Each row's entry (0-based) from its global sample index."""
    return (np.searchsorted(offsets, sample_index, side="right") - 1).astype(np.int64)


@dataclass(frozen=True)
class MixSchedule:
    """The superposed schedule (global sample indices) and each entry's own schedule."""

    schedule: Schedule
    offsets: np.ndarray  # len(entries) + 1
    entries: tuple[Schedule, ...]  # each as it plays alone (local sample indices)

    @property
    def entry(self) -> np.ndarray:
        return entry_of(self.schedule.sample_index, self.offsets)


def mix_schedule(streams: list[Stream] | tuple[Stream, ...]) -> MixSchedule:
    """Every stream's own schedule, shifted to global sample indices and merged by due time
    (ties keep entry order), so row for row it is the union of the entries' schedules."""
    if not streams:
        raise ValueError("a mix needs at least one Server stream")
    offsets = offsets_of([s.library_size for s in streams])
    own = tuple(s.schedule() for s in streams)
    times = np.concatenate([s.scheduled_ns for s in own])
    samples = np.concatenate(
        [s.sample_index.astype(np.int64) + offsets[k] for k, s in enumerate(own)]
    )
    order = np.argsort(times, kind="stable")
    merged = Schedule(times[order], samples[order].astype(np.int32))
    return MixSchedule(merged, offsets, own)


def shard_of(mix: Schedule, seed: int, shard: int, shards: int) -> Schedule:
    """Shard `shard` of `shards` of the superposed schedule, dealt by the mix's `seed` as one
    model's schedule is dealt by its own (core.schedule.deal): the shards' union is the mix."""
    return deal(mix, seed, shard, shards)
