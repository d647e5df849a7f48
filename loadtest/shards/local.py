"""Shards played by local worker processes: spawn, barrier, one common start, collect.

Each worker opens its own connection to the target, prepares the same sample library (same seed),
then waits at a barrier; the parent picks one start instant and every worker plays its shard from
there. CLOCK_MONOTONIC is shared by all processes of a host, so local workers start within
microseconds of each other. Ray actors (shards.ray_actors) reuse `play_shard`.

A worker never outlives its parent's interest: it asks the kernel for SIGKILL when the parent dies
(PR_SET_PDEATHSIG, set first thing in the child; SIGKILL of the parent included), and once playing
it watches its pipe: the parent's end closing, or "cancel", stops it at once with no drain (nobody
is left to read the answers). A stop of the parent (SIGINT, SIGTERM) is passed on as the same
signal, so each worker stops issuing, drains briefly and returns its partial shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as connection_wait
from typing import Any

from loadtest.core.records import Records
from loadtest.core.settings import resolve_loop
from loadtest.core.target import Target, retries_of
from loadtest.engine import stopping, timing
from loadtest.engine.runner import OnStart, Runner
from loadtest.engine.samples import open_with_samples
from loadtest.engine.selfmeasure import Progress, ProgressTracker
from loadtest.errors import LoadtestError, TargetError
from loadtest.rules.error_budget import window_for
from loadtest.shards.merge import ShardResult, shard_result
from loadtest.shards.plan import ShardPlan
from loadtest.targets import target_for
from loadtest.targets.shared_memory import with_shared_memory

READY_TIMEOUT_S = 120.0
START_DELAY_NS = 300_000_000  # between the barrier and t = 0: time to deliver "start" to all
_PR_SET_PDEATHSIG = 1
PARENT_GONE = "the parent process is gone"


def die_with_parent(parent_pid: int) -> None:
    """In a child: SIGKILL from the kernel when the parent dies (Linux; a no-op elsewhere), and
    exit now if it already has (the child was reparented before the request was made)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent_pid and os.getppid() != parent_pid:
        os._exit(1)


def make_target(plan: ShardPlan) -> Target:
    if plan.mix is not None:  # several models: each entry's target behind one router
        from loadtest.targets.mix import MixTarget

        return MixTarget.of_members(plan.mix.members, plan.client.shared_memory, f"w{plan.shard}")
    target = target_for(plan.target)  # TLS and headers travel in the plan's TargetSettings
    return with_shared_memory(target, plan.client.shared_memory, tag=f"w{plan.shard}")


async def play_shard(
    plan: ShardPlan,
    until_start: Callable[[], Awaitable[int]],
    on_tick: Callable[[Records, int], None] | None = None,
) -> ShardResult:
    """Open and prepare, await the start instant (unix ns) from `until_start`, play the shard."""
    target = make_target(plan)
    try:
        _, library = await open_with_samples(
            target,
            plan.library_size,
            plan.settings.sample_seed,
            plan.input_data,
            plan.shapes,
            prompts=plan.prompts,
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
            error_window=window_for(plan.settings.abort),
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
        waits = target.connection_waits if target.capabilities.counts_connection_waits else 0
        retries = retries_of(target)
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
        retries,
    )


def _watch_parent(conn: Connection, loop: asyncio.AbstractEventLoop) -> None:
    """On its own thread once playing: the parent's end closing (it died or gave up) or a
    "cancel" stops the run at once, with no drain."""
    try:
        while True:
            kind, _ = conn.recv()
            if kind == "cancel":
                break
    except (EOFError, OSError):
        pass
    with contextlib.suppress(RuntimeError):  # the loop already closed: the run is over
        loop.call_soon_threadsafe(stopping.request_stop, None, PARENT_GONE, True)


def worker_main(plan: ShardPlan, conn: Connection, parent_pid: int = 0) -> None:
    """Entry point of a local worker process: ready -> wait for "start" -> result, over `conn`."""
    die_with_parent(parent_pid)
    stopping.install_process_handlers()  # SIGTERM before the run unwinds like Ctrl-C

    async def until_start() -> int:
        conn.send(("ready", None))
        loop = asyncio.get_running_loop()
        kind, value = await loop.run_in_executor(None, conn.recv)
        if kind != "start":
            raise LoadtestError("cancelled by the parent")
        threading.Thread(
            target=_watch_parent, args=(conn, loop), name="loadtest-parent-watch", daemon=True
        ).start()
        return int(value)

    tracker = ProgressTracker()

    def tick(records: Records, now_ns: int) -> None:
        with contextlib.suppress(OSError):
            conn.send(("tick", (now_ns, tracker.update(records))))

    message: tuple[str, Any]
    try:
        loop = resolve_loop(plan.client.loop, plan.settings.qps / plan.shards)
        result = timing.run(play_shard(plan, until_start, tick), loop.value)
    except LoadtestError as exc:
        message = ("error", str(exc))
    except KeyboardInterrupt:
        message = ("error", f"{stopping.requested() or 'interrupted'} before the run started")
    except Exception as exc:  # reported by the parent as one line naming the worker
        message = ("error", f"{type(exc).__name__}: {exc}")
    else:
        message = ("result", result)
    with contextlib.suppress(OSError):  # the parent may be gone: nobody to tell
        conn.send(message)
    conn.close()


def _receive(conn: Connection, process: Any, shard: int, timeout_s: float) -> Any:
    if not conn.poll(timeout_s):
        raise TargetError(f"worker {shard} was not ready within {timeout_s:g} s")
    return _message(conn, process, shard)[1]


def _run_processes(
    plans: list[ShardPlan],
    on_started: Callable[[list[int]], None],
    on_progress: Callable[[Progress, int], None],
    before_start: Callable[[], None] = lambda: None,
) -> list[ShardResult]:
    """Blocking: spawn one process per plan, barrier, common start, collect results in order."""
    context = multiprocessing.get_context("spawn")  # fork would copy gRPC threads and the loop
    processes, pipes = [], []
    try:
        for plan in plans:
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=worker_main,
                args=(plan, child_end, os.getpid()),
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
        before_start()  # every worker is ready: whoever observes the server starts now
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
        if stopping.requested():  # stopped before it could play: nothing to report
            raise KeyboardInterrupt from None
        raise TargetError(f"worker {shard} died (exit code {process.exitcode})") from None
    if kind == "error":
        if stopping.requested():
            raise KeyboardInterrupt
        raise TargetError(f"worker {shard}: {value}")
    return str(kind), value


async def run_local_shards(
    plans: list[ShardPlan],
    on_progress: Callable[[Progress, int], None] | None = None,
    on_start: OnStart | None = None,
) -> list[ShardResult]:
    """Play the plans in worker processes; a stop (SIGINT, SIGTERM) is passed on as the same
    signal, and the partial shards return.

    `on_start` runs on this loop once every worker has passed the ready barrier, before the
    common start instant is chosen."""
    loop = asyncio.get_running_loop()
    pids: list[int] = []

    def before_start() -> None:  # on the executor thread; the hook itself runs on the loop
        if on_start is not None:
            asyncio.run_coroutine_threadsafe(on_start(), loop).result(READY_TIMEOUT_S)

    def progress(snapshot: Progress, now_ns: int) -> None:  # on the collector thread
        if on_progress is not None:
            loop.call_soon_threadsafe(on_progress, snapshot, now_ns)

    def forward(reason: str, urgent: bool) -> None:
        signum = stopping.received() or signal.SIGTERM
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def started(new: list[int]) -> None:  # on the collector thread, before the barrier
        pids.extend(new)
        if stopping.requested():
            loop.call_soon_threadsafe(forward, stopping.requested(), False)

    with stopping.catching(loop), stopping.listening(forward):
        return await loop.run_in_executor(
            None, _run_processes, plans, started, progress, before_start
        )
