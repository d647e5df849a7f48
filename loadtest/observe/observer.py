"""Observes the server side of one run: statistics snapshots, CPU of both processes, metrics.

`start()` just before the runner plays the schedule and `finish(measurement)` just after it, so
every counter delta covers the run and nothing else (the warm-up query of `prepare` is outside).
Each source is optional and independent: no statistics API (a fake or native target), no local
PID (a remote server), or no metrics URL each leave their part None and say why, without failing
the run. The arithmetic lives in split.py and metrics.py; this module only wires it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np

from loadtest.core.target import Target
from loadtest.core.units import ns_to_s, s_to_us
from loadtest.engine.measurement import Measurement
from loadtest.engine.runner import OnStart, nothing_to_do
from loadtest.engine.selfmeasure import CLIENT_CPU_COVERS
from loadtest.errors import TargetError
from loadtest.observe.metrics import MetricsSampler, MetricsSummary, fetch
from loadtest.observe.process_cpu import CpuUse, TreeCpuMeter
from loadtest.observe.split import ModelStats, ServerSplit, split
from loadtest.observe.triton_statistics import StatisticsSource


@dataclass(frozen=True)
class ServerSide:
    """What the server side did during one run; None = not available (see `notes`)."""

    split: ServerSplit | None
    server_cpu: CpuUse | None
    client_cpu_s: float
    client_wall_s: float
    queries: int  # issued queries of the run: the one denominator of every "per query" figure
    metrics: MetricsSummary | None
    notes: tuple[str, ...]

    @property
    def client_cores(self) -> float:
        return self.client_cpu_s / self.client_wall_s if self.client_wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        server_cpu = None
        if self.server_cpu is not None:
            server_cpu = {
                "cpu_s": round(self.server_cpu.cpu_s, 4),
                "wall_s": round(self.server_cpu.wall_s, 4),
                "cores": round(self.server_cpu.cores, 4),
                "cpu_us_per_query": (
                    round(s_to_us(self.server_cpu.cpu_s) / self.queries, 2)
                    if self.queries
                    else None
                ),
            }
        return {
            "split": self.split.to_dict() if self.split else None,
            "server_cpu": server_cpu,
            "client_cpu": {
                "cpu_s": round(self.client_cpu_s, 4),
                "cores": round(self.client_cores, 4),
                "cpu_us_per_query": (
                    round(s_to_us(self.client_cpu_s) / self.queries, 2) if self.queries else None
                ),
                "covers": CLIENT_CPU_COVERS,
            },
            "metrics": self.metrics.to_dict() if self.metrics else None,
            "notes": list(self.notes),
        }


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else 0.0


class ServerObserver:
    """One observer per run: start() -> run -> finish(). Reusable after finish()."""

    def __init__(
        self,
        statistics: StatisticsSource | None,
        model: str,
        server_pid: int | None = None,
        metrics_url: str | None = None,
        metrics_fetch: Callable[[str], str] = fetch,
    ) -> None:
        self.statistics = statistics
        self.model = model
        self.server_pid = server_pid
        self.metrics_url = metrics_url
        self.metrics_fetch = metrics_fetch
        self._before: ModelStats | None = None
        self._notes: list[str] = []
        self._cpu: TreeCpuMeter | None = None
        self._sampler: MetricsSampler | None = None

    async def start(self) -> None:
        self._notes = []
        self._before = None
        if self.statistics is not None:
            try:
                self._before = await self.statistics.read()
            except TargetError as exc:
                self._notes.append(f"server-side split unavailable: {exc}")
        self._cpu = TreeCpuMeter(self.server_pid) if self.server_pid else None
        if self._cpu:
            self._cpu.start()
        self._sampler = (
            MetricsSampler(self.metrics_url, self.model, fetcher=self.metrics_fetch)
            if self.metrics_url
            else None
        )
        if self._sampler:
            self._sampler.start()

    async def finish(self, measurement: Measurement) -> ServerSide:
        server_cpu = self._cpu.stop() if self._cpu else None
        metrics = self._sampler.stop() if self._sampler else None
        records = measurement.outcome.records
        queries = int(records.issued.sum())
        answered = int(records.ok.sum())
        result_split = None
        if self.statistics is not None and self._before is not None:
            try:
                after = await self.statistics.read()
            except TargetError as exc:
                self._notes.append(f"server-side split unavailable: {exc}")
            else:
                result_split = split(
                    self._before,
                    after,
                    client_requests=answered,
                    client_mean_ns=_mean(records.latency_from_issue_ns()),
                    client_mean_from_scheduled_ns=_mean(records.latency_from_scheduled_ns()),
                )
                if result_split is None:
                    self._notes.append("Triton counted no successful request during the run")
                elif not result_split.counts_match:
                    self._notes.append(
                        f"Triton counted {result_split.requests} successful requests, the client "
                        f"{answered}: another client shares the server, so per-request figures "
                        "are not this run's alone"
                    )
        if self.server_pid is None:
            self._notes.append("server CPU: not measured (server not local)")
        elif server_cpu is None:
            self._notes.append(f"server CPU: process {self.server_pid} not readable")
        if metrics is not None and metrics.error:
            self._notes.append(metrics.error)
        if metrics is not None and metrics.batch_fallbacks:
            self._notes.append(
                f"{metrics.batch_fallbacks:.0f} batches failed as a whole in the server's "
                "onnxruntime backend and ran request by request: Triton's average batch "
                "over-states the batching"
            )
        return ServerSide(
            split=result_split,
            server_cpu=server_cpu,
            client_cpu_s=measurement.client_cpu_s,
            client_wall_s=ns_to_s(measurement.outcome.duration_ns),
            queries=queries,
            metrics=metrics,
            notes=tuple(self._notes),
        )

    async def close(self) -> None:
        if self.statistics is not None:
            await self.statistics.close()


# -- the hook `loadtest server` uses --------------------------------------------------------------


def _flag_value(cmdline: list[str], flag: str) -> str | None:
    prefix = f"{flag}="
    return next((arg[len(prefix) :] for arg in cmdline if arg.startswith(prefix)), None)


def local_triton(port: int) -> tuple[int, str | None] | None:
    """(pid, metrics URL) of a tritonserver *child of this process* serving `port`, if any.

    That is the embedded server loadtest started; a server it did not start is treated as remote
    (its CPU is not ours to attribute, and its metrics need an explicit URL).
    """
    import psutil

    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return None
    for child in children:
        try:
            if child.name() != "tritonserver":
                continue
            cmdline = child.cmdline()
        except psutil.Error:
            continue
        ports = {_flag_value(cmdline, "--grpc-port"), _flag_value(cmdline, "--http-port")}
        if str(port) in ports:
            metrics_port = _flag_value(cmdline, "--metrics-port")
            metrics = f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port else None
            return child.pid, metrics
    return None


def triton_protocol(target: Target) -> str | None:
    """'grpc' or 'http' for a target with Triton behind it; None for anything else."""
    triton = target.capabilities.triton
    return triton.protocol if triton is not None else None


def observer_for_target(target: Target) -> ServerObserver | None:
    """An observer for a target with Triton behind it (statistics over the target's own protocol and
    address, as declared in its capabilities, so a wrapped target keeps it); None otherwise."""
    from loadtest.observe.triton_statistics import TritonStatistics

    triton = target.capabilities.triton
    if triton is None:
        return None
    statistics = TritonStatistics(
        triton.url,
        triton.protocol,
        triton.model,
        triton.version,
        tls=triton.tls,
        headers=triton.headers,
    )
    local = local_triton(triton.port)
    pid, metrics = local if local else (None, None)
    return ServerObserver(statistics, triton.model, pid, metrics)


class RunObserver:
    """Observes one run's server side: `await observer.around(target, play)`; then `.result`.

    `play` receives an `on_start` hook and awaits it at the run's t = 0: after the sample library
    is built and, with several workers, after every worker has opened its connection, warmed up
    and passed the ready barrier, so neither the warm-up requests nor the spawn fall inside the
    window whose deltas become the server-side split and the server's CPU.
    """

    def __init__(self) -> None:
        self.result: ServerSide | None = None

    async def around(
        self, target: Target, play: Callable[[OnStart], Coroutine[Any, Any, Measurement]]
    ) -> Measurement:
        observer = observer_for_target(target)
        if observer is None:
            return await play(nothing_to_do)
        opened = False

        async def on_start() -> None:
            nonlocal opened
            if not opened:
                opened = True
                await observer.start()

        try:
            measurement = await play(on_start)
            if opened:  # a run stopped before its start has no server side to report
                self.result = await observer.finish(measurement)
            return measurement
        finally:
            await observer.close()
