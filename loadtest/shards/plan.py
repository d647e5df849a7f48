"""What each generator process plays: the Server schedule split into shards, one plan per shard.

One Python process falls behind its own schedule long before a real server saturates, so the
schedule is split into N shards whose superposition is exactly the one-process schedule
(core.schedule.shard_schedule_of). A plan is picklable: it crosses to a local process or a Ray
actor, which opens its own target from it (a target object cannot cross a process boundary). The
plan's settings carry the arrival law; `ShardPlan.arrivals` binds it to the run, as the parent
does, so every worker draws the same whole schedule and keeps its share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.core.arrivals import Arrivals
from loadtest.core.mix_schedule import Stream, mix_schedule, shard_of
from loadtest.core.prompts import PromptSettings
from loadtest.core.schedule import Schedule, shard_schedule_of
from loadtest.core.settings import AUTO_WORKERS, ClientSettings, ServerSettings, TargetSettings
from loadtest.shards.client_cost import ClientCost
from loadtest.targets.mix import MixMember

# The clean rate one generator process is assumed to hold, per protocol, when no calibration
# measured this machine (shards/client_cost.py: a Ray cluster, a mix, a rate one worker holds
# anyway, or a calibration that answered too few queries); the automatic worker count runs each
# process at half of it. The rule: one worker's highest clean rate beside a local
# Triton (the default setup, where client and server share the cores), the lowest of the three
# runs of 2026-12-01 on 2 shared vCPUs (benchmarks/results/generator-benchmark*.txt), rounded
# down: HTTP 6000,
# 7000 and 9000; gRPC with the wire client 6500, 7000 and 8500 (grpc.aio: 1500-3000). Alone
# against the stub one HTTP worker held 24k-38k, so against a remote server these leave more
# headroom still.
# Scaling on bigger hosts (16 cores) has not been measured: these are per-process figures, and
# the count is capped at one worker per core (one core left to a local server).
CLEAN_RATE_PER_WORKER = {"http": 6000.0, "grpc": 6000.0}


def fixed_clean_rate(protocol: str) -> float:
    return CLEAN_RATE_PER_WORKER.get(protocol, CLEAN_RATE_PER_WORKER["grpc"])


def auto_worker_count(qps: float, protocol: str, cores: int, clean_rate: float = 0.0) -> int:
    """Enough processes that each runs at half its clean rate (`clean_rate` when calibrated,
    else the fixed rule), at most one per core."""
    per_worker = (clean_rate or fixed_clean_rate(protocol)) / 2
    return max(1, min(cores, math.ceil(qps / per_worker)))


@dataclass(frozen=True)
class WorkerChoice:
    """How many generator processes play a run, and why: the report says which rule chose."""

    count: int
    why: str


def auto_worker_choice(
    qps: float, protocol: str, cores: int, cost: ClientCost | None, uncalibrated_because: str
) -> WorkerChoice:
    """The automatic count with its reason: from the calibrated cost when there is one, else by
    the fixed rule, saying why no calibration set it."""
    free = f"{cores} core{'s' if cores > 1 else ''} free for workers"
    if cost is not None:
        count = auto_worker_count(qps, protocol, cores, cost.clean_rate)
        return WorkerChoice(count, f"automatic: {cost.describe()}; each runs at ≤ half; {free}")
    return WorkerChoice(
        auto_worker_count(qps, protocol, cores),
        f"automatic: each worker at ≤ half of {fixed_clean_rate(protocol):,.0f} QPS (the fixed "
        f"rule of shards/plan.py; {uncalibrated_because}); {free}",
    )


@dataclass(frozen=True)
class MixShards:
    """A mix of models played as one superposed schedule (core/mix_schedule.py): each worker
    opens every entry (targets/mix.MixTarget) and plays its share of the union."""

    members: tuple[MixMember, ...]
    streams: tuple[Stream, ...]
    seed: int  # deals the superposed schedule's queries to shards

    def schedule(self, shard: int, shards: int) -> Schedule:
        return shard_of(mix_schedule(self.streams).schedule, self.seed, shard, shards)


@dataclass(frozen=True)
class ShardPlan:
    """Everything one worker needs to play its shard; picklable (sent to a process or actor)."""

    target: TargetSettings
    settings: ServerSettings
    client: ClientSettings
    shard: int
    shards: int
    library_size: int
    input_data: Path | None = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    prompts: PromptSettings = field(default_factory=PromptSettings)
    drain_timeout_ns: int = 35_000_000_000
    keep_records: bool = True
    mix: MixShards | None = None  # several models: `settings` then holds the mix's totals

    @property
    def arrivals(self) -> Arrivals:
        """The run's arrivals, from the settings the plan carries (one model; a mix's streams
        carry their own)."""
        return self.settings.arrivals

    def schedule(self) -> Schedule:
        if self.mix is not None:
            return self.mix.schedule(self.shard, self.shards)
        return shard_schedule_of(
            self.arrivals, self.library_size, self.settings.sample_seed, self.shard, self.shards
        )


def plans_for(
    target: TargetSettings,
    settings: ServerSettings,
    client: ClientSettings,
    library_size: int,
    input_data: Path | None,
    shapes: dict[str, tuple[int, ...]] | None,
    drain_timeout_ns: int,
    prompts: PromptSettings | None = None,
) -> list[ShardPlan]:
    shards = client.workers
    if shards == AUTO_WORKERS:
        raise ValueError("resolve the automatic worker count first")
    return [
        ShardPlan(
            target=target,
            settings=settings,
            client=client,
            shard=k,
            shards=shards,
            library_size=library_size,
            input_data=input_data,
            shapes=dict(shapes or {}),
            drain_timeout_ns=drain_timeout_ns,
            prompts=prompts or PromptSettings(),
        )
        for k in range(shards)
    ]
