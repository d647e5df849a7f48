"""Runs one scenario end to end against an opened target: samples -> schedule -> runner.

This is the glue the CLI calls; it holds no statistics and renders nothing. It measures the client's
own CPU time during the run, because a load generator that cannot keep up must be able to say so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loadtest.records import Records
from loadtest.runner import Runner, RunOutcome
from loadtest.samples import load_samples, random_samples
from loadtest.schedule import Schedule, server_schedule
from loadtest.settings import ServerSettings
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
    on_runner: Callable[[Runner], None] | None = None,
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
    if on_runner:
        on_runner(runner)
    cpu_before = time.process_time()
    outcome = await runner.run()
    return Measurement(model, schedule, outcome, time.process_time() - cpu_before)
