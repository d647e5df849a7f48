"""MLPerf LoadGen's Server scenario, with a Python SUT that sends each query on loadtest's client.

LoadGen (PyPI `mlcommons-loadgen`, `pip install 'loadtest[loadgen]'`) draws its Poisson schedule
from its seeds, calls the SUT's issue callback on its own thread at each scheduled time, and times
every sample from its scheduled time to `QuerySamplesComplete`. The SUT here hands each query to
one event-loop thread (`call_soon_threadsafe`), where loadtest's own target (`targets.target_for`:
the wire HTTP/1.1 or gRPC client, and the 64 samples of seed 1 that `loadtest server` builds)
sends it; the answer's callback completes it in LoadGen. So both tools send the same requests
with the same client library, and what differs is the scheduler, the sending thread and the clock.

The SUT measures, per query, IssueQuery called -> request written: its hand-off to the loop
thread, plus any wait for a free connection (the client's pool opens connections as the load
needs them, and `loadtest server` waits the same way; `connection_waits` counts the queries that
did). Part of LoadGen's latency here, but the SUT's and the client's cost, not LoadGen's.

LoadGen writes mlperf_log_summary.txt, mlperf_log_detail.txt and (trace on) mlperf_log_trace.json
to the directory given. Each "Sample" begin event of the trace carries the sample's scheduled
time (`ts`, µs from LoadGen's start) and its `issue_start_ns` and `complete_ns`, both from that
scheduled time (mlcommons/inference loadgen/loadgen.cc `SampleComplete`; docs/TRACES.md).
"""

from __future__ import annotations

import asyncio
import functools
import re
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.core.settings import Protocol, TargetSettings
from loadtest.engine import timing
from loadtest.engine.samples import open_with_samples
from loadtest.targets import target_for

SAMPLE_SEED = 1  # loadtest server's default --sample-seed: the same request bodies
# A Sample begin event as LoadGen writes it (one per line; engine/traces/loadgen.py reads the same)
BEGIN = re.compile(
    r'\{"name":"Sample","cat":"default","ph":"b","pid":\d+,"id":\d+,"ts":(\d+(?:\.\d*)?),'
    r'"args":\{"sample_seq":(\d+),"query_seq":\d+,"sample_idx":\d+,'
    r'"issue_start_ns":(-?\d+),"complete_ns":(-?\d+)\}'
)
PERCENTILE_LINE = re.compile(r"^(\d+\.\d+) percentile latency \(ns\)\s*:\s*(\d+)")


def loadgen_version() -> str | None:
    """The installed mlcommons-loadgen's version; None when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version("mlcommons-loadgen")
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class LoadGenPlay:
    """What the SUT saw of one LoadGen run (LoadGen's own figures are in its files)."""

    directory: Path
    to_write_ns: np.ndarray  # per query: IssueQuery called -> request written
    connection_waits: int  # queries that waited for a free connection
    cpu_s: float  # this process's user + system CPU over StartTest (LoadGen's threads and the SUT)
    failed: int  # queries the client answered with an error (completed in LoadGen all the same)

    @property
    def trace(self) -> Path:
        return self.directory / "mlperf_log_trace.json"


class LoopThread:
    """One event loop on its own thread (the precise loop and short time slice loadtest's runner
    uses), for the SUT's client."""

    def __init__(self) -> None:
        self.loop = timing.new_event_loop("precise")
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            timing.request_short_slice()
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="sut-loop", daemon=True)
        self.thread.start()
        started.wait()

    def call(self, coroutine: Any) -> Any:
        """Run a coroutine on the loop; its result (blocks this thread)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def play_loadgen(
    url: str,
    protocol: str,
    qps: float,
    seconds: float,
    samples: int,
    bound_ns: int,
    directory: Path,
    model: str = "tiny",
) -> LoadGenPlay:
    """LoadGen's Server scenario at `qps` for at least `seconds` against `url` (`model`), trace
    on."""
    import mlperf_loadgen as lg

    thread = LoopThread()
    target = target_for(TargetSettings(url=url, protocol=Protocol(protocol), model=model))
    thread.call(open_with_samples(target, samples, SAMPLE_SEED))
    to_write: list[int] = []  # per query, in issue order: IssueQuery called -> written
    failed = [0]

    def done(query_id: int, error: str | None) -> None:
        if error is not None:
            failed[0] += 1
        lg.QuerySamplesComplete([lg.QuerySampleResponse(query_id, 0, 0)])

    def written(slot: int, called_ns: int) -> None:  # a request that waited for a connection
        to_write[slot] = time.monotonic_ns() - called_ns

    def send(queries: list[tuple[int, int]], called_ns: int) -> None:  # on the loop thread
        for query_id, index in queries:
            slot, waits = len(to_write), target.connection_waits
            to_write.append(-1)
            later = functools.partial(written, slot, called_ns)
            target.start_infer(index, functools.partial(done, query_id), later)
            if target.connection_waits == waits:  # written at once
                to_write[slot] = time.monotonic_ns() - called_ns

    def issue(query_samples: list[Any]) -> None:  # on LoadGen's issue thread
        queries = [(sample.id, sample.index) for sample in query_samples]
        thread.loop.call_soon_threadsafe(send, queries, time.monotonic_ns())

    settings = lg.TestSettings()
    settings.scenario = lg.TestScenario.Server
    settings.mode = lg.TestMode.PerformanceOnly
    settings.server_target_qps = qps
    settings.server_target_latency_ns = bound_ns
    settings.min_duration_ms = int(seconds * 1000)
    settings.min_query_count = 1
    log = lg.LogSettings()
    log.log_output.outdir = str(directory)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = True
    nothing: Callable[[Any], None] = lambda _: None  # noqa: E731  (samples live in the target)
    sut = lg.ConstructSUT(issue, lambda: None)
    qsl = lg.ConstructQSL(samples, samples, nothing, nothing)
    before = resource.getrusage(resource.RUSAGE_SELF)
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings, log)
    finally:
        after = resource.getrusage(resource.RUSAGE_SELF)
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
        waits = target.connection_waits
        thread.call(target.close())
        thread.stop()
    sent = np.asarray(to_write, dtype=np.int64)
    cpu_s = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return LoadGenPlay(directory, sent[sent >= 0], waits, cpu_s, failed[0])


@dataclass(frozen=True)
class LoadGenSamples:
    """Every sample of a LoadGen trace, in LoadGen's issue order (sample_seq)."""

    scheduled_ns: np.ndarray  # from the first sample's scheduled time
    issue_delay_ns: np.ndarray  # scheduled -> IssueQuery called (LoadGen's issue_start_ns)
    latency_ns: np.ndarray  # scheduled -> QuerySamplesComplete (LoadGen's complete_ns)


def read_samples(trace: Path) -> LoadGenSamples:
    """The Sample begin events of LoadGen's trace (ValueError when there are none)."""
    rows: list[tuple[int, float, int, int]] = []
    with trace.open() as lines:
        for line in lines:
            found = BEGIN.match(line)
            if found:
                ts, seq, issue, complete = found.groups()
                rows.append((int(seq), float(ts), int(issue), int(complete)))
    if not rows:
        raise ValueError(f"{trace}: no Sample events")
    rows.sort()
    ts_us = np.array([row[1] for row in rows])
    scheduled = np.round((ts_us - ts_us[0]) * 1000).astype(np.int64)
    issue = np.array([row[2] for row in rows], dtype=np.int64)
    complete = np.array([row[3] for row in rows], dtype=np.int64)
    return LoadGenSamples(scheduled, issue, complete)


def read_summary(path: Path) -> dict[float, int]:
    """LoadGen's own percentiles (mlperf_log_summary.txt): {0.99: ns, ...}."""
    found: dict[float, int] = {}
    for line in path.read_text().splitlines():
        match = PERCENTILE_LINE.match(line.strip())
        if match:
            found[round(float(match[1]) / 100, 6)] = int(match[2])
    return found
