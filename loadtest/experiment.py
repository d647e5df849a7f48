"""Runs one scenario end to end against an opened target: samples -> schedule -> runner.

This is the glue the CLI calls; it holds no statistics and renders nothing. It measures the client's
own CPU time during the run, because a load generator that cannot keep up must be able to say so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadtest.records import Records
from loadtest.runner import ClosedLoopRunner, Runner, RunOutcome
from loadtest.samples import load_samples, random_samples
from loadtest.schedule import Schedule, server_schedule, uniform_sample_indices
from loadtest.settings import OfflineSettings, ServerSettings, StreamSettings
from loadtest.targets.base import ModelSpec, Sample, Target


@dataclass(frozen=True)
class Measurement:
    """What one run produced, before interpretation."""

    model: ModelSpec
    schedule: Schedule
    outcome: RunOutcome
    client_cpu_s: float  # this process's user+system CPU during the run


async def open_with_samples(
    target: Target,
    sample_count: int,
    sample_seed: int,
    input_data: Path | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
    batch_size: int = 1,
) -> tuple[ModelSpec, list[Sample]]:
    """Open the target and prepare the sample library on it (raises TargetError/SettingsError)."""
    model = await target.open()
    if input_data is not None:
        samples = load_samples(input_data, model)
    else:
        samples = random_samples(model, sample_count, sample_seed, shapes, batch_size)
    await target.prepare(samples)
    return model, samples


async def run_server(
    target: Target,
    model: ModelSpec,
    sample_count: int,
    settings: ServerSettings,
    drain_timeout_ns: int,
    on_tick: Callable[[Records, int], None] | None = None,
) -> Measurement:
    """Generate the whole Poisson schedule, then play it open loop."""
    schedule = server_schedule(
        settings.qps,
        settings.min_duration_ns,
        settings.min_query_count,
        sample_count,
        settings.schedule_seed,
        settings.sample_seed,
    )
    runner = Runner(
        schedule,
        target,
        max_duration_ns=settings.max_duration_ns,
        drain_timeout_ns=drain_timeout_ns,
        on_tick=on_tick,
    )
    cpu_before = time.process_time()
    outcome = await runner.run()
    return Measurement(model, schedule, outcome, time.process_time() - cpu_before)


async def run_offline(
    target: Target,
    model: ModelSpec,
    sample_count: int,
    settings: OfflineSettings,
    on_tick: Callable[[Records, int], None] | None = None,
) -> Measurement:
    """One Offline query: every request due at t = 0, issued as fast as the in-flight cap allows."""
    indices = uniform_sample_indices(settings.requests, sample_count, settings.sample_seed)
    schedule = Schedule(np.zeros(len(indices), dtype=np.int64), indices)
    runner = ClosedLoopRunner(
        indices,
        target,
        workers=settings.max_in_flight,
        all_due_at_start=True,
        max_duration_ns=settings.max_duration_ns,
        samples_per_query=settings.batch_size,
        on_tick=on_tick,
    )
    cpu_before = time.process_time()
    outcome = await runner.run()
    return Measurement(model, schedule, outcome, time.process_time() - cpu_before)


async def run_stream(
    target: Target,
    model: ModelSpec,
    sample_count: int,
    settings: StreamSettings,
    on_tick: Callable[[Records, int], None] | None = None,
) -> Measurement:
    """SingleStream / MultiStream: one query in flight until duration and count are both met."""
    rng = np.random.Generator(np.random.PCG64(settings.sample_seed))

    def more(n: int) -> np.ndarray:
        return rng.integers(0, sample_count, size=n, dtype=np.int32)

    runner = ClosedLoopRunner(
        more(max(1024, settings.min_query_count)),
        target,
        workers=1,
        more_samples=more,
        all_due_at_start=False,
        min_duration_ns=settings.min_duration_ns,
        min_query_count=settings.min_query_count,
        max_duration_ns=settings.max_duration_ns,
        samples_per_query=settings.samples_per_query,
        on_tick=on_tick,
    )
    cpu_before = time.process_time()
    outcome = await runner.run()
    records = outcome.records
    schedule = Schedule(records.scheduled_ns.copy(), records.sample_index.copy())
    return Measurement(model, schedule, outcome, time.process_time() - cpu_before)
