"""Plays a mix of models once, every entry starting at one instant: the Server entries as one
superposed schedule, the Offline entries as their own closed loops beside it.

The Server entries' schedules are superposed (core/mix_schedule.py) and played by the one open-loop
runner every Server run uses, through a target that routes each query to its entry
(targets/mix.py); with several workers (or Ray) the superposition is split into shards exactly as
one model's schedule is (shards/plan.MixShards), and merged back exactly. Each Offline entry is
scenarios.mlperf.play.run_offline on its own target, whose start hook waits for the mix's t = 0. The
records are then cut back into each entry's own rows, in its own sample indices, so every entry is
judged exactly as a run of it alone would be (and an entry played alone here is that run).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import numpy as np

from loadtest.core.mix_schedule import MixSchedule, entry_of, mix_schedule
from loadtest.core.records import NOT_SET_NS, Records
from loadtest.core.settings import (
    ClientSettings,
    OfflineSettings,
    ServerSettings,
    TargetSettings,
    resolve_loop,
)
from loadtest.core.target import ModelSpec, Target, retries_of
from loadtest.engine.measurement import Measurement
from loadtest.engine.runner import Runner, RunOutcome
from loadtest.engine.selfmeasure import ClientReport
from loadtest.engine.timing import running_loop_kind
from loadtest.scenarios.experiments.mix_spec import MixEntry, MixSpec
from loadtest.scenarios.mlperf.play import Generator, run_offline
from loadtest.shards.merge import client_report, merge_shards, shard_result
from loadtest.shards.plan import MixShards, plans_for
from loadtest.targets.mix import MixMember, MixTarget

IN_PROCESS_START_NS = 20_000_000  # on_start -> t = 0 when one process plays everything


@dataclass(frozen=True)
class OpenedEntry:
    """An entry whose target is open and prepared with its own sample library."""

    entry: MixEntry
    target: Target
    spec: ModelSpec
    library_size: int
    resolved: TargetSettings  # where it was measured (the embedded server's address, if started)

    @property
    def name(self) -> str:
        return self.entry.name

    def member(self) -> MixMember:
        settings = self.entry.settings
        return MixMember(
            name=self.name,
            target=self.resolved,
            sample_count=settings.sample_count,
            sample_seed=settings.sample_seed,
            input_data=self.entry.flags.input_data,
            shapes=dict(self.entry.flags.shapes),
        )


@dataclass(frozen=True)
class MixMeasurement:
    """One play of (part of) a mix: each entry's Measurement, in the entry's own terms."""

    measurements: dict[str, Measurement]
    client: ClientReport | None  # the Server part's generator, all its entries together
    client_cpu_s: float  # every generator process of this play, Offline loops included
    placement: str
    interrupted: bool
    stop_reason: str


def entry_records(records: Records, mask: np.ndarray, offset: int) -> Records:
    """The rows of one entry, with its own (local) sample indices."""
    part = records.take(mask)
    part.sample_index = (part.sample_index.astype(np.int64) - offset).astype(np.int32)
    return part


def split_outcome(outcome: RunOutcome, mix: MixSchedule, names: list[str]) -> dict[str, RunOutcome]:
    """The superposed run's outcome cut into one outcome per Server entry (its duration: to its
    own last completion, as a run of it alone; the whole run's when the run was cut short)."""
    records = outcome.records
    entry = entry_of(records.sample_index, mix.offsets)
    parts: dict[str, RunOutcome] = {}
    for k, name in enumerate(names):
        part = entry_records(records, entry == k, int(mix.offsets[k]))
        done = part.completed_ns[part.completed_ns != NOT_SET_NS]
        last = int(done.max()) if len(done) else 0
        duration = max(outcome.duration_ns, last) if outcome.stop_reason else last
        # The gaps between answer parts are one histogram for the whole superposition (in its
        # client report), not cut per entry: an entry's outcome carries none.
        parts[name] = replace(outcome, records=part, duration_ns=duration, part_gaps="")
    return parts


def mix_server_settings(spec: MixSpec, server: list[OpenedEntry]) -> ServerSettings:
    """The totals a shard plan carries for a mix (rate for the loop choice, max duration, the
    tightest late threshold); each entry keeps its own settings for its verdict."""
    servers = [e.entry.settings for e in server if isinstance(e.entry.settings, ServerSettings)]
    return ServerSettings(
        qps=sum(s.qps for s in servers),
        target_latency_ns=max(s.target_latency_ns for s in servers),
        min_duration_ns=spec.min_duration_ns,
        min_query_count=1,
        max_duration_ns=spec.max_duration_ns,
        schedule_seed=spec.seed,
        late_threshold_ns=min(s.late_threshold_ns for s in servers),
        sample_count=sum(e.library_size for e in server),
    )


async def _until(start_ns: int) -> None:
    """Sleep, then yield, until perf_counter reaches `start_ns` (an Offline loop's t = 0)."""
    wait = start_ns - time.perf_counter_ns()
    if wait > 2_000_000:
        await asyncio.sleep((wait - 1_000_000) / 1e9)
    while time.perf_counter_ns() < start_ns:
        await asyncio.sleep(0)


async def play_mix(
    spec: MixSpec,
    entries: list[OpenedEntry],
    client: ClientSettings,
    drain_timeout_ns: int,
    on_start: Callable[[], Awaitable[None]],
) -> MixMeasurement:
    """Play `entries` together (one entry = that entry alone, on the same schedule)."""
    server = [e for e in entries if isinstance(e.entry.settings, ServerSettings)]
    offline = [e for e in entries if isinstance(e.entry.settings, OfflineSettings)]
    mix = mix_schedule([spec.stream(e.entry, e.library_size) for e in server]) if server else None
    started = asyncio.Event()
    start_ns = [0]

    async def opened(delay_ns: int = IN_PROCESS_START_NS) -> int:
        """Everything is ready: observers start, t = 0 is `delay_ns` from now, for every part."""
        await on_start()
        start_ns[0] = time.perf_counter_ns() + delay_ns
        started.set()
        return start_ns[0]

    async def offline_start() -> None:
        await started.wait()
        await _until(start_ns[0])

    cpu_before = time.process_time()
    tasks: list[asyncio.Task[Measurement]] = []
    for e in offline:
        settings = e.entry.settings
        assert isinstance(settings, OfflineSettings)
        tasks.append(
            asyncio.ensure_future(
                run_offline(e.target, e.spec, e.library_size, settings, on_start=offline_start)
            )
        )
    measurements: dict[str, Measurement] = {}
    report: ClientReport | None = None
    placement = "in-process"
    workers_cpu_s = 0.0
    try:
        if mix is not None:
            generator = Generator(client, server[0].resolved)
            workers = generator.worker_count(mix_server_settings(spec, server).qps)
            if workers > 1 or client.ray_address:
                outcome, report, placement, workers_cpu_s = await _play_sharded(
                    spec, server, mix, replace(client, workers=workers), drain_timeout_ns, opened
                )
            else:
                outcome, report = await _play_here(spec, server, mix, drain_timeout_ns, opened)
            parts = split_outcome(outcome, mix, [e.name for e in server])
            for k, e in enumerate(server):
                measurements[e.name] = Measurement(e.spec, mix.entries[k], parts[e.name], 0.0)
        else:
            await opened()
        for e, task in zip(offline, tasks, strict=True):
            measurements[e.name] = await task
    finally:
        for task in tasks:
            task.cancel()
    cpu_s = time.process_time() - cpu_before + workers_cpu_s
    measurements = _apportion_cpu(measurements, cpu_s)
    stopped = [m.outcome for m in measurements.values() if m.outcome.stop_reason]
    return MixMeasurement(
        measurements=measurements,
        client=report,
        client_cpu_s=cpu_s,
        placement=placement,
        interrupted=any(m.outcome.interrupted for m in measurements.values()),
        stop_reason="; ".join(sorted({o.stop_reason for o in stopped})),
    )


def _apportion_cpu(measurements: dict[str, Measurement], cpu_s: float) -> dict[str, Measurement]:
    """The generator's CPU is one figure for the whole play; each entry is charged its share of
    the issued queries (the report says so)."""
    issued = {n: int(m.outcome.records.issued.sum()) for n, m in measurements.items()}
    total = sum(issued.values())
    return {
        n: replace(m, client_cpu_s=cpu_s * issued[n] / total if total else 0.0)
        for n, m in measurements.items()
    }


async def _play_here(
    spec: MixSpec,
    server: list[OpenedEntry],
    mix: MixSchedule,
    drain_timeout_ns: int,
    opened: Callable[[], Awaitable[int]],
) -> tuple[RunOutcome, ClientReport]:
    target = MixTarget.prepared(
        [e.name for e in server], [e.target for e in server], [e.library_size for e in server]
    )
    runner = Runner(
        mix.schedule,
        target,
        max_duration_ns=spec.max_duration_ns,
        drain_timeout_ns=drain_timeout_ns,
    )
    start_at_ns = await opened()
    cpu_before = time.process_time()
    outcome = await runner.run(start_at_ns=start_at_ns)
    cpu_s = time.process_time() - cpu_before
    settings = mix_server_settings(spec, server)
    alone = shard_result(
        0,
        mix.schedule,
        outcome,
        cpu_s,
        runner.loop_lag.lags_ns(),
        target.connection_waits,
        settings.late_threshold_ns,
        transparent_retries=retries_of(target),
    )
    return outcome, client_report([alone], "in-process", running_loop_kind(), outcome.records)


async def _play_sharded(
    spec: MixSpec,
    server: list[OpenedEntry],
    mix: MixSchedule,
    client: ClientSettings,
    drain_timeout_ns: int,
    opened: Callable[[int], Awaitable[int]],
) -> tuple[RunOutcome, ClientReport, str, float]:
    """The superposition split over worker processes or Ray actors, merged back exactly."""
    settings = mix_server_settings(spec, server)
    shards = MixShards(
        members=tuple(e.member() for e in server),
        streams=tuple(spec.stream(e.entry, e.library_size) for e in server),
        seed=spec.seed,
    )
    plans = [
        replace(plan, mix=shards)
        for plan in plans_for(
            server[0].resolved, settings, client, mix.offsets[-1].item(), None, {}, drain_timeout_ns
        )
    ]

    async def at_barrier() -> None:
        # Every worker is ready; the shards start START_DELAY after this (the Offline loops too).
        from loadtest.shards.local import START_DELAY_NS
        from loadtest.shards.ray_actors import RAY_START_DELAY_NS

        await opened(RAY_START_DELAY_NS if client.ray_address else START_DELAY_NS)

    if client.ray_address:
        from loadtest.shards.ray_actors import run_ray_shards

        results = await run_ray_shards(plans, client.ray_address, at_barrier)
        placement = f"ray {client.ray_address}"
    else:
        from loadtest.shards.local import run_local_shards

        results = await run_local_shards(plans, None, at_barrier)
        placement = "processes"
    loop = resolve_loop(client.loop, settings.qps / client.workers)
    merged = merge_shards(results, placement, loop.value)
    return merged.outcome, merged.client, placement, merged.cpu_s
