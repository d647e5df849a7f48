"""The Server scenario played by several generator processes (or Ray actors), merged exactly.

One Python process falls behind its own Poisson schedule long before a real server saturates, so
the schedule is split into N independent Poisson(λ/N) shards (schedule.shard_schedule; their
superposition is exactly Poisson(λ)). Each worker opens its own connection to the target,
prepares the same sample library (same seed), then waits at a barrier; the parent picks one start
instant and every worker plays its shard from there. CLOCK_MONOTONIC is shared by all processes
of a host, so local workers start within microseconds of each other; across Ray hosts the start
is a wall-clock instant, as good as the hosts' clock synchronisation.

A worker sends back a ShardResult: its per-query records (merged into one timeline, so every
percentile stays exact), HDR histograms of its latencies and send lag (merged with
`decode_and_add`, never by averaging percentiles), counts, and its self-measurement (CPU, event-
loop lag). The parent never averages a percentile.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as connection_wait
from pathlib import Path
from typing import Any

import numpy as np

from loadtest import timing
from loadtest.errors import LoadtestError, TargetError
from loadtest.records import Records
from loadtest.runner import Runner, RunOutcome
from loadtest.schedule import Schedule, merged_schedule, shard_schedule
from loadtest.selfmeasure import (
    ClientReport,
    Progress,
    WorkerReport,
    record_histograms,
    send_gap_cv,
)
from loadtest.settings import (
    AUTO_WORKERS,
    ClientSettings,
    ServerSettings,
    TargetSettings,
    resolve_loop,
)
from loadtest.stats import decode_histograms, encode_histogram, send_lag_stats
from loadtest.targets import triton_target
from loadtest.targets.base import Target
from loadtest.targets.shared_memory import with_shared_memory

# Rates one generator process held cleanly (send-lag p99 ≤ 1 ms) on one core of the 2-vCPU
# machine this was measured on (benchmarks/generator.py): HTTP 25k/s against the stub and 4k/s
# against the embedded Triton (the server saturated first); gRPC (grpcio's aio client, ~250 µs
# of CPU per call) 1.5k/s against the stub and 1k/s beside the embedded Triton. Automatic worker
# counts are sized from these with a 2× margin.
CLEAN_RATE_PER_WORKER = {"http": 20000.0, "grpc": 1200.0}
READY_TIMEOUT_S = 120.0
START_DELAY_NS = 300_000_000  # between the barrier and t = 0: time to deliver "start" to all
HISTOGRAMS = ("latency_from_scheduled", "latency_from_issue", "send_lag")


def auto_worker_count(qps: float, protocol: str, cores: int) -> int:
    """Enough processes that each runs at half its measured clean rate, at most one per core."""
    per_worker = CLEAN_RATE_PER_WORKER.get(protocol, CLEAN_RATE_PER_WORKER["grpc"]) / 2
    return max(1, min(cores, math.ceil(qps / per_worker)))


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
    drain_timeout_ns: int = 35_000_000_000
    keep_records: bool = True

    def schedule(self) -> Schedule:
        s = self.settings
        return shard_schedule(
            s.qps,
            s.min_duration_ns,
            s.min_query_count,
            self.library_size,
            s.schedule_seed,
            s.sample_seed,
            self.shard,
            self.shards,
        )


@dataclass
class ShardResult:
    """One worker's measurements, in a form that merges exactly."""

    shard: int
    host: str
    pid: int
    schedule: Schedule
    records: Records | None  # per-query rows, when the plan keeps them
    histograms: dict[str, str]  # HISTOGRAMS -> encoded HDR (V2, base64)
    scheduled: int
    issued: int
    ok: int
    errors: int
    cpu_s: float
    loop_lag_ns: np.ndarray
    connection_waits: int
    started_unix_ns: int
    duration_ns: int
    interrupted: bool
    stop_reason: str
    late_threshold_ns: int

    def worker_report(self) -> WorkerReport:
        lag = self.records.send_lag_ns() if self.records is not None else np.zeros(0, np.int64)
        lag_stats = send_lag_stats(lag, self.scheduled, self.late_threshold_ns)
        return WorkerReport.of(
            shard=self.shard,
            host=self.host,
            pid=self.pid,
            issued=self.issued,
            cpu_s=self.cpu_s,
            loop_lag_ns=self.loop_lag_ns,
            send_lag=lag_stats,
            connection_waits=self.connection_waits,
        )


def shard_result(
    shard: int,
    schedule: Schedule,
    outcome: RunOutcome,
    cpu_s: float,
    loop_lag_ns: np.ndarray,
    connection_waits: int,
    late_threshold_ns: int,
    keep_records: bool = True,
) -> ShardResult:
    """What one generator (a worker, or this process alone) measured, ready to merge."""
    records = outcome.records
    return ShardResult(
        shard=shard,
        host=socket.gethostname(),
        pid=os.getpid(),
        schedule=schedule,
        records=records if keep_records else None,
        histograms=record_histograms(records),
        scheduled=len(records),
        issued=int(records.issued.sum()),
        ok=int(records.ok.sum()),
        errors=int(records.errored.sum()),
        cpu_s=cpu_s,
        loop_lag_ns=loop_lag_ns,
        connection_waits=connection_waits,
        started_unix_ns=outcome.started_unix_ns,
        duration_ns=outcome.duration_ns,
        interrupted=outcome.interrupted,
        stop_reason=outcome.stop_reason,
        late_threshold_ns=late_threshold_ns,
    )


# --- the worker side -----------------------------------------------------------------------------


def make_target(plan: ShardPlan) -> Target:
    t = plan.target
    target = triton_target(t.url, t.protocol.value, t.model, t.model_version, t.request_timeout_s)
    return with_shared_memory(target, plan.client.shared_memory, tag=f"w{plan.shard}")


async def play_shard(
    plan: ShardPlan,
    until_start: Callable[[], Awaitable[int]],
    on_tick: Callable[[Records, int], None] | None = None,
) -> ShardResult:
    """Open and prepare, await the start instant (unix ns) from `until_start`, play the shard."""
    from loadtest.experiment import open_with_samples  # experiment imports this module

    target = make_target(plan)
    try:
        _, library = await open_with_samples(
            target, plan.library_size, plan.settings.sample_seed, plan.input_data, plan.shapes
        )
        if len(library) != plan.library_size:
            raise LoadtestError(
                f"worker {plan.shard} built {len(library)} samples, the parent {plan.library_size}"
            )
        schedule = plan.schedule()
        runner = Runner(
            schedule,
            target,
            max_duration_ns=plan.settings.max_duration_ns,
            drain_timeout_ns=plan.drain_timeout_ns,
            on_tick=on_tick,
        )
        start_unix_ns = await until_start()
        start_ns = time.perf_counter_ns() + (start_unix_ns - time.time_ns())
        if start_ns < time.perf_counter_ns():
            raise LoadtestError(
                f"worker {plan.shard} was not ready by the common start; raise the start delay"
            )
        cpu_before = time.process_time()
        outcome = await runner.run(start_at_ns=start_ns)
        cpu_s = time.process_time() - cpu_before
        waits = int(getattr(target, "connection_waits", 0))
    finally:
        await target.close()
    return shard_result(
        plan.shard,
        schedule,
        outcome,
        cpu_s,
        runner.loop_lag.lags_ns(),
        waits,
        plan.settings.late_threshold_ns,
        plan.keep_records,
    )


def worker_main(plan: ShardPlan, conn: Connection) -> None:
    """Entry point of a local worker process: ready -> wait for "start" -> result, over `conn`."""

    async def until_start() -> int:
        conn.send(("ready", None))
        loop = asyncio.get_running_loop()
        kind, value = await loop.run_in_executor(None, conn.recv)
        if kind != "start":
            raise LoadtestError("cancelled by the parent")
        return int(value)

    def tick(records: Records, now_ns: int) -> None:
        with contextlib.suppress(OSError):
            conn.send(("tick", (now_ns, Progress.of(records))))

    try:
        loop = resolve_loop(plan.client.loop, plan.settings.qps / plan.shards)
        result = timing.run(play_shard(plan, until_start, tick), loop.value)
    except LoadtestError as exc:
        conn.send(("error", str(exc)))
    except KeyboardInterrupt:
        conn.send(("error", "interrupted before the run started"))
    except Exception as exc:  # reported by the parent as one line naming the worker
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    else:
        conn.send(("result", result))
    finally:
        conn.close()


# --- the parent side -----------------------------------------------------------------------------


def _receive(conn: Connection, process: Any, shard: int, timeout_s: float) -> Any:
    if not conn.poll(timeout_s):
        raise TargetError(f"worker {shard} was not ready within {timeout_s:g} s")
    return _message(conn, process, shard)[1]


def _run_processes(
    plans: list[ShardPlan],
    on_started: Callable[[list[int]], None],
    on_progress: Callable[[Progress, int], None],
) -> list[ShardResult]:
    """Blocking: spawn one process per plan, barrier, common start, collect results in order."""
    context = multiprocessing.get_context("spawn")  # fork would copy gRPC threads and the loop
    processes, pipes = [], []
    try:
        for plan in plans:
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=worker_main,
                args=(plan, child_end),
                name=f"loadtest-worker-{plan.shard}",
                daemon=True,
            )
            process.start()
            child_end.close()
            processes.append(process)
            pipes.append(parent_end)
        on_started([p.pid for p in processes if p.pid is not None])
        for plan, conn, process in zip(plans, pipes, processes, strict=True):
            _receive(conn, process, plan.shard, READY_TIMEOUT_S)
        start_unix_ns = time.time_ns() + START_DELAY_NS
        for conn in pipes:
            conn.send(("start", start_unix_ns))
        return _collect(plans, pipes, processes, on_progress)
    finally:
        for conn in pipes:
            with contextlib.suppress(OSError):
                conn.send(("cancel", None))
            conn.close()
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(5)


def _collect(
    plans: list[ShardPlan],
    pipes: list[Connection],
    processes: list[Any],
    on_progress: Callable[[Progress, int], None],
) -> list[ShardResult]:
    """Each worker's result, passing their periodic ticks on (summed) as they arrive."""
    pending = {
        conn: (plan, process) for conn, plan, process in zip(pipes, plans, processes, strict=True)
    }
    results: dict[int, ShardResult] = {}
    latest: dict[int, tuple[int, Progress]] = {}
    while pending:
        for ready in connection_wait(list(pending), timeout=1.0):
            assert isinstance(ready, Connection)
            plan, process = pending[ready]
            kind, value = _message(ready, process, plan.shard)
            if kind == "tick":
                latest[plan.shard] = value
                now_ns = max(now for now, _ in latest.values())
                on_progress(Progress.total([p for _, p in latest.values()]), now_ns)
                continue
            results[plan.shard] = value
            del pending[ready]
    return [results[plan.shard] for plan in plans]


def _message(conn: Connection, process: Any, shard: int) -> tuple[str, Any]:
    try:
        kind, value = conn.recv()
    except EOFError:
        process.join(1)
        raise TargetError(f"worker {shard} died (exit code {process.exitcode})") from None
    if kind == "error":
        raise TargetError(f"worker {shard}: {value}")
    return str(kind), value


async def run_local_shards(
    plans: list[ShardPlan], on_progress: Callable[[Progress, int], None] | None = None
) -> list[ShardResult]:
    """Play the plans in worker processes; Ctrl-C is passed on, and the partial shards return."""
    loop = asyncio.get_running_loop()
    pids: list[int] = []

    def progress(snapshot: Progress, now_ns: int) -> None:  # on the collector thread
        if on_progress is not None:
            loop.call_soon_threadsafe(on_progress, snapshot, now_ns)

    def forward_interrupt() -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, forward_interrupt)
    try:
        results = await loop.run_in_executor(None, _run_processes, plans, pids.extend, progress)
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
    return results


# --- merging -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MergedShards:
    schedule: Schedule
    outcome: RunOutcome
    client: ClientReport  # its histograms are exact merges of the shards' HDR histograms
    cpu_s: float


def merge_records(shards: list[Records]) -> Records:
    """One Records for all shards, in due-time order; error kinds renumbered into one table."""
    kinds: list[str] = []
    for records in shards:
        kinds.extend(k for k in records.error_kinds if k not in kinds)
    scheduled = np.concatenate([r.scheduled_ns for r in shards])
    order = np.argsort(scheduled, kind="stable")
    merged = Records(
        scheduled_ns=scheduled[order],
        sample_index=np.concatenate([r.sample_index for r in shards])[order],
        samples_per_query=shards[0].samples_per_query if shards else 1,
        error_kinds=kinds,
    )
    codes = []
    for records in shards:
        table = np.array([kinds.index(k) for k in records.error_kinds] + [-1], dtype=np.int16)
        codes.append(table[records.error_code])  # -1 indexes the trailing -1: "no error"
    merged.issued_ns[:] = np.concatenate([r.issued_ns for r in shards])[order]
    merged.completed_ns[:] = np.concatenate([r.completed_ns for r in shards])[order]
    merged.status[:] = np.concatenate([r.status for r in shards])[order]
    merged.error_code[:] = np.concatenate(codes)[order]
    return merged


def client_report(
    results: list[ShardResult], placement: str, loop: str, merged: Records
) -> ClientReport:
    """The generator's self-measurement: per worker, plus merged HDR and the merged send law."""
    histograms = {
        name: encode_histogram(decode_histograms(r.histograms[name] for r in results))
        for name in HISTOGRAMS
    }
    return ClientReport(
        placement=placement,
        loop=loop,
        workers=tuple(r.worker_report() for r in results),
        send_gap_cv=send_gap_cv(merged.issued_ns[merged.issued]),
        histograms=histograms,
    )


def merge_shards(results: list[ShardResult], placement: str, loop: str) -> MergedShards:
    """Exact merge: records concatenated in time order, HDR histograms added, counts summed."""
    if not results:
        raise TargetError("no worker returned a result")
    results = sorted(results, key=lambda r: r.shard)
    missing = [r.shard for r in results if r.records is None]
    if missing:
        raise LoadtestError(f"workers {missing} kept no per-query records; cannot report exactly")
    records = merge_records([r.records for r in results if r.records is not None])
    reasons = sorted({r.stop_reason for r in results if r.stop_reason})
    outcome = RunOutcome(
        records=records,
        started_unix_ns=min(r.started_unix_ns for r in results),
        duration_ns=max(r.duration_ns for r in results),
        interrupted=any(r.interrupted for r in results),
        stop_reason="; ".join(reasons),
    )
    client = client_report(results, placement, loop, records)
    return MergedShards(
        schedule=merged_schedule([r.schedule for r in results]),
        outcome=outcome,
        client=client,
        cpu_s=sum(r.cpu_s for r in results),
    )


def plans_for(
    target: TargetSettings,
    settings: ServerSettings,
    client: ClientSettings,
    library_size: int,
    input_data: Path | None,
    shapes: dict[str, tuple[int, ...]] | None,
    drain_timeout_ns: int,
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
        )
        for k in range(shards)
    ]
