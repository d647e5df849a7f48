"""Runs one scenario end to end against an opened target: samples -> schedule -> runner.

A Server run's due times come from its settings' `arrivals` (core/arrivals.py), here or, sharded,
in each worker (shards/plan.py): nothing here knows which law they follow.

This is the glue the CLI calls; it holds no statistics and renders nothing. It measures the client's
own CPU time during the run, because a load generator that cannot keep up must be able to say so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from loadtest.core.prompts import PromptSettings
from loadtest.core.records import Records
from loadtest.core.schedule import Schedule, check_mask, schedule_of, uniform_sample_indices
from loadtest.core.settings import (
    AUTO_WORKERS,
    NS_PER_S,
    ClientSettings,
    OfflineCalibration,
    OfflineSettings,
    ServerSettings,
    StreamSettings,
    TargetSettings,
    available_cpus,
    resolve_loop,
)
from loadtest.core.target import ModelSpec, Target, retries_of
from loadtest.engine.measurement import Measurement
from loadtest.engine.runner import ClosedLoopRunner, OnStart, Runner, RunOutcome, nothing_to_do
from loadtest.engine.selfmeasure import Progress
from loadtest.engine.timing import running_loop_kind
from loadtest.errors import SettingsError
from loadtest.rules.error_budget import window_for
from loadtest.shards.client_cost import (
    CALIBRATION_IN_FLIGHT,
    CALIBRATION_NS,
    MIN_CALIBRATION_QUERIES,
    ClientCost,
)
from loadtest.shards.local import run_local_shards
from loadtest.shards.merge import client_report, merge_shards, shard_result
from loadtest.shards.plan import WorkerChoice, auto_worker_choice, plans_for


@dataclass(frozen=True)
class Generator:
    """How the Server scenario's load is generated: client settings plus what workers need to
    open their own target (the parent's target object cannot cross a process boundary)."""

    client: ClientSettings
    target: TargetSettings
    input_data: Path | None = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    prompts: PromptSettings = field(default_factory=PromptSettings)

    # The start-up calibration, measured once per generator: a find-peak's or a sweep's probes
    # share it (None: it ran and could not tell).
    _costs: dict[str, ClientCost | None] = field(default_factory=dict, compare=False, repr=False)

    def worker_count(self, qps: float) -> int:
        """The explicit --workers, else automatic by the fixed rule (shards/plan.py): the count
        before any calibration (a mix's, and the one a command resolves its loop with)."""
        return self._choice(qps, None, "").count

    def _beside_local_server(self) -> bool:
        from loadtest.server.deployment import is_loopback

        return is_loopback(self.target.url, self.target.protocol)

    def _cores(self) -> int:
        """Cores for workers. Automatic leaves one core to a server on this machine (a loopback
        URL): a generator process spinning beside a local server competes with it for the same
        cores (the measurement is in benchmarks/results/generator-benchmark-2026-11-27.txt)."""
        cores = self.client.cpu_count or available_cpus()
        return max(1, cores - 1) if self._beside_local_server() else cores

    def _choice(
        self, qps: float, cost: ClientCost | None, uncalibrated_because: str
    ) -> WorkerChoice:
        if self.client.workers != AUTO_WORKERS:
            return WorkerChoice(self.client.workers, "--workers")
        if self.target.url.startswith("fake://"):
            return WorkerChoice(1, "automatic: one, for an in-process fake target")
        protocol = self.target.protocol.value
        return auto_worker_choice(qps, protocol, self._cores(), cost, uncalibrated_because)

    def _why_not_calibrated(self, qps: float) -> str:
        """Why the automatic count at `qps` is not measured ("" when it is): only where it can
        choose more than one local worker, above the rate one worker holds by the fixed rule
        (below it, every setup measured held the rate with one). A Ray cluster's workers run on
        other machines than the one a calibration would measure."""
        if self.target.url.startswith("fake://"):
            return "an in-process fake target"
        if self.client.ray_address:
            return "a Ray cluster's machines are not this one"
        if self._cores() == 1:
            return "one core for workers"
        if self._choice(qps, None, "").count == 1:
            return "one worker holds this rate"
        return ""

    def calibrates(self, qps: float) -> bool:
        """Whether the automatic count measures this machine before a run at `qps`."""
        return self.client.workers == AUTO_WORKERS and not self._why_not_calibrated(qps)

    async def choose_workers(
        self, target: Target, qps: float, sample_count: int, sample_seed: int
    ) -> WorkerChoice:
        """The count for a run at `qps`, calibrated on `target` (the parent's open target) when
        `calibrates` says it matters; the calibration runs once per generator."""
        if self.client.workers != AUTO_WORKERS:
            return WorkerChoice(self.client.workers, "--workers")
        why_not = self._why_not_calibrated(qps)
        if why_not:
            return self._choice(qps, None, why_not)
        if "cost" not in self._costs:
            self._costs["cost"] = await measure_client_cost(
                target, sample_count, sample_seed, self._beside_local_server()
            )
        return self._choice(
            qps, self._costs["cost"], "the calibration answered too few queries to tell"
        )


async def run_server(
    target: Target,
    model: ModelSpec,
    sample_count: int,
    settings: ServerSettings,
    drain_timeout_ns: int,
    on_tick: Callable[[Records | Progress, int], None] | None = None,
    generator: Generator | None = None,
    on_start: OnStart = nothing_to_do,
) -> Measurement:
    """Draw the schedule from the settings' arrivals and play it open loop: in this process, or
    sharded over worker processes / Ray actors when the generator asks for more than one worker.

    `on_start` is awaited once everything is ready and just before t = 0 (after every worker's
    ready barrier when sharded), so whoever observes the server sees the run and no set-up."""
    choice = WorkerChoice(1, "")  # no generator: this process alone (tests, library callers)
    if generator is not None and settings.check_outputs:
        choice = _checked_workers(generator)
    elif generator is not None:
        choice = await generator.choose_workers(
            target, settings.qps, sample_count, settings.sample_seed
        )
    # A calibrated count of one where the fixed rule asked for more still plays in a worker
    # process: this process's loop was chosen for a share of the rate (commands/server.py).
    if generator is not None and (
        choice.count > 1
        or generator.client.ray_address
        or (not settings.check_outputs and generator.worker_count(settings.qps) > 1)
    ):
        return await _run_server_sharded(
            model, sample_count, settings, drain_timeout_ns, generator, choice, on_tick, on_start
        )
    schedule = schedule_of(settings.arrivals, sample_count, settings.sample_seed)
    runner = Runner(
        schedule,
        target,
        max_duration_ns=settings.max_duration_ns,
        drain_timeout_ns=drain_timeout_ns,
        on_tick=on_tick,
        error_window=window_for(settings.abort),
        keep=check_mask(len(schedule), settings.check_outputs, settings.sample_seed),
    )
    outcome, cpu_s = await _timed_run(runner, on_start)
    alone = shard_result(
        0,
        schedule,
        outcome,
        cpu_s,
        runner.loop_lag.lags_ns(),
        target.connection_waits if target.capabilities.counts_connection_waits else 0,
        settings.late_threshold_ns,
        transparent_retries=retries_of(target),
    )
    client = client_report([alone], "in-process", running_loop_kind(), outcome.records)
    client = replace(client, worker_choice=choice.why)
    return Measurement(model, schedule, outcome, cpu_s, client)


def _checked_workers(generator: Generator) -> WorkerChoice:
    """--check-outputs keeps the sampled answers in this process, so it plays alone: automatic
    worker counts become 1 (the report's client check says if one process fell behind), and an
    explicit --workers > 1 or --ray is refused in one line."""
    if generator.client.ray_address or (
        generator.client.workers != AUTO_WORKERS and generator.client.workers > 1
    ):
        raise SettingsError(
            "--check-outputs compares answers kept in this process: drop --ray and use --workers 1"
        )
    return WorkerChoice(1, "--check-outputs: this process alone, where the answers are kept")


async def _run_server_sharded(
    model: ModelSpec,
    sample_count: int,
    settings: ServerSettings,
    drain_timeout_ns: int,
    generator: Generator,
    choice: WorkerChoice,
    on_tick: Callable[[Progress, int], None] | None,
    on_start: OnStart,
) -> Measurement:
    client = replace(generator.client, workers=choice.count)
    plans = plans_for(
        generator.target,
        settings,
        client,
        sample_count,
        generator.input_data,
        generator.shapes,
        drain_timeout_ns,
        generator.prompts,
    )
    parent_cpu_before = time.process_time()
    if client.ray_address:
        from loadtest.shards.ray_actors import run_ray_shards

        results = await run_ray_shards(plans, client.ray_address, on_start)
        placement = f"ray {client.ray_address}"
    else:
        results = await run_local_shards(plans, on_tick, on_start)
        placement = "processes"
    parent_cpu_s = time.process_time() - parent_cpu_before
    loop = resolve_loop(client.loop, settings.qps / client.workers)
    merged = merge_shards(results, placement, loop.value, parent_cpu_s)
    report = replace(merged.client, worker_choice=choice.why)
    return Measurement(model, merged.schedule, merged.outcome, merged.cpu_s, report)


OFFLINE_CALIBRATION_SKIP = 0.25  # the first quarter of Offline's calibration is warm-up


async def closed_loop_throughput(
    target: Target,
    sample_count: int,
    sample_seed: int,
    in_flight: int,
    duration_ns: int,
    samples_per_query: int = 1,
    skip: float = 0.0,
    max_qps: float = 0.0,
) -> tuple[float, float, str]:
    """A calibration: a closed loop with `in_flight` outstanding for `duration_ns`. Returns the
    samples/s it completed, the seconds it lasted and why it was stopped early ("" when it was
    not). find-peak starts its search from it; `offline --expected-qps auto` sizes its query.

    `skip` > 0 counts only what completed between skip × duration and the duration (issuing
    stops there): the steady rate, without the warm-up (connections, a cold server) that made
    Offline's query on the embedded Triton 20 % short when counted in. `max_qps` > 0 paces
    the loop to at most that rate (--max-qps)."""
    indices = uniform_sample_indices(100_000, sample_count, sample_seed)
    runner = ClosedLoopRunner(
        indices,
        target,
        workers=in_flight,
        all_due_at_start=False,
        min_duration_ns=duration_ns,
        min_query_count=1,
        samples_per_query=samples_per_query,
        max_qps=max_qps,
    )
    outcome = await runner.run()
    records = outcome.records
    if skip > 0 and not outcome.interrupted:
        start, end = int(skip * duration_ns), duration_ns
        window = records.ok & (records.completed_ns >= start) & (records.completed_ns < end)
        rate = float(window.sum()) * samples_per_query * NS_PER_S / (end - start)
    else:
        ok = float(records.ok.sum()) * samples_per_query
        rate = ok * NS_PER_S / max(outcome.duration_ns, 1)
    return rate, outcome.duration_ns / NS_PER_S, outcome.stop_reason if outcome.interrupted else ""


async def measure_client_cost(
    target: Target, sample_count: int, sample_seed: int, beside_local_server: bool
) -> ClientCost | None:
    """A short closed loop on `target`: this process's CPU per answered query (the automatic
    worker count's input, shards/client_cost.py). None when too few queries were answered to
    tell: a slow server spreads the loop's idle cost over few queries, or the loop was stopped."""
    cpu_before = time.process_time()
    qps, seconds, stopped = await closed_loop_throughput(
        target, sample_count, sample_seed, CALIBRATION_IN_FLIGHT, CALIBRATION_NS
    )
    cpu_s = time.process_time() - cpu_before
    queries = round(qps * seconds)
    if stopped or queries < MIN_CALIBRATION_QUERIES or cpu_s <= 0:
        return None
    return ClientCost(cpu_s / queries, queries, seconds, beside_local_server)


async def calibrate_offline(
    target: Target, sample_count: int, settings: OfflineSettings
) -> OfflineSettings:
    """`--expected-qps auto`: the settings sized from a closed-loop calibration at the run's own
    in-flight cap and batch size (given settings are returned as they are)."""
    if settings.expected_qps is not None:
        return settings
    rate, seconds, _stopped = await closed_loop_throughput(
        target,
        sample_count,
        settings.sample_seed,
        settings.max_in_flight,
        settings.calibration_ns,
        settings.batch_size,
        skip=OFFLINE_CALIBRATION_SKIP,
    )
    return settings.calibrated(OfflineCalibration(rate, round(seconds, 3), settings.max_in_flight))


async def run_offline(
    target: Target,
    model: ModelSpec,
    sample_count: int,
    settings: OfflineSettings,
    on_tick: Callable[[Records, int], None] | None = None,
    on_start: OnStart = nothing_to_do,
) -> Measurement:
    """One Offline query: every request due at t = 0, issued as fast as the in-flight cap allows.
    The settings must be sized (`calibrate_offline` resolves `--expected-qps auto`)."""
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
        error_window=window_for(settings.abort),
        check_rate=settings.check_outputs,
        check_seed=settings.sample_seed,
    )
    outcome, cpu_s = await _timed_run(runner, on_start)
    return Measurement(model, schedule, outcome, cpu_s)


async def run_stream(
    target: Target,
    model: ModelSpec,
    sample_count: int,
    settings: StreamSettings,
    on_tick: Callable[[Records, int], None] | None = None,
    on_start: OnStart = nothing_to_do,
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
        error_window=window_for(settings.abort),
        check_rate=settings.check_outputs,
        check_seed=settings.sample_seed,
    )
    outcome, cpu_s = await _timed_run(runner, on_start)
    records = outcome.records
    schedule = Schedule(records.scheduled_ns.copy(), records.sample_index.copy())
    return Measurement(model, schedule, outcome, cpu_s)


async def _timed_run(
    runner: Runner | ClosedLoopRunner, on_start: OnStart
) -> tuple[RunOutcome, float]:
    """`on_start`, then the run: its outcome and the client CPU seconds the run itself took."""
    await on_start()
    cpu_before = time.process_time()
    outcome = await runner.run()
    return outcome, time.process_time() - cpu_before
