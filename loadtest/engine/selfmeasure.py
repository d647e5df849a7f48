"""The generator measuring itself: event-loop lag, CPU per request and the law of its send gaps.

A load generator that misses its schedule measures its own queue, not the server. Send lag (in
stats.py) says *that* it fell behind; these say *why* and *how much it cost*:
- event-loop lag: how long a callback that is ready to run waits for the loop. It is probed with
  `call_soon` from a periodic timer, so it measures the loop's busyness, not timer granularity
  (uvloop's timers tick in whole milliseconds; that would otherwise read as lag).
- client CPU per request: user + system CPU of the generator process over the run / queries issued.
- send-gap dispersion: the coefficient of variation (std / mean) of the gaps between actual sends,
  beside the same CV of the same queries' scheduled gaps (the schedule's own law: about 1 for
  Poisson, 0 for fixed gaps, whatever a recorded trace holds). A generator whose timer ticks clump
  sends reads above its schedule; one that paces a bursty schedule evenly reads below it.
  Comparing the same queries makes the schedule's own sampling error cancel, so the comparison
  holds at low rates and small counts as well as at high ones.

Pure apart from LoopLagProbe, which needs the running loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from loadtest.core.records import NOT_SET_NS, Records, Status
from loadtest.rules.stats import SendLagStats, encode_histogram, latency_histogram

LOOP_PROBE_INTERVAL_NS = 10_000_000
MAX_PROBES = 200_000


class LoopLagProbe:
    """Every LOOP_PROBE_INTERVAL_NS, queue a callback and record how long it waited to run."""

    def __init__(self, clock: Callable[[], int] = time.perf_counter_ns) -> None:
        self.clock = clock
        self._lags: list[int] = []
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._timer = loop.call_later(LOOP_PROBE_INTERVAL_NS / 1e9, self._probe)

    def _probe(self) -> None:
        assert self._loop is not None
        self._loop.call_soon(self._record, self.clock())
        self._timer = self._loop.call_later(LOOP_PROBE_INTERVAL_NS / 1e9, self._probe)

    def _record(self, queued_ns: int) -> None:
        if len(self._lags) < MAX_PROBES:
            self._lags.append(self.clock() - queued_ns)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def lags_ns(self) -> np.ndarray:
        return np.asarray(self._lags, dtype=np.int64)


@dataclass(frozen=True)
class LoopLagStats:
    """Event-loop lag of one worker, ns (exact percentiles over its probes)."""

    probes: int
    p50_ns: int
    p99_ns: int
    max_ns: int

    @classmethod
    def of(cls, lags_ns: np.ndarray) -> LoopLagStats:
        if len(lags_ns) == 0:
            return cls(0, 0, 0, 0)
        ordered = np.sort(lags_ns)
        n = len(ordered)
        return cls(
            probes=n,
            p50_ns=int(ordered[min(n - 1, int(n * 0.5))]),
            p99_ns=int(ordered[min(n - 1, int(n * 0.99))]),
            max_ns=int(ordered[-1]),
        )


def send_gap_cv(issued_ns: np.ndarray) -> float:
    """Coefficient of variation of the gaps between consecutive actual sends (all workers merged).

    NaN with fewer than three sends. Sends are sorted first: merged shards interleave.
    """
    times = np.sort(np.asarray(issued_ns, dtype=np.int64))
    if len(times) < 3:
        return float("nan")
    gaps = np.diff(times).astype(np.float64)
    mean = gaps.mean()
    return float(gaps.std() / mean) if mean > 0 else float("nan")


# Sends follow their schedule's law when the actual send-gap CV is within this share of the
# schedule's own (at least this much in absolute terms: a fixed-gap schedule's own CV is 0). The
# benchmarks' "clean" used the same 0.05 around Poisson's 1 (benchmarks/generator.py).
# The judgement is reported and warned about, and the benchmarks' "clean" requires it, but it is
# not part of the client-bound verdict (rules/stats.SendLagStats.kept_up). The lag rule already
# bounds how far each query moved from its due time, latency counts from the due time, and
# clumped sends can only add queueing to it: a VALID verdict stays true whatever the dispersion.
# Only an INVALID near the bound may owe something to clumping, which the report's warning says.
# As a verdict it would fail runs that the lag rule passes today (one worker at 6000 QPS sends
# with CV 1.05-1.06, engine/runner.py).
GAP_CV_TOLERANCE = 0.05


def gaps_follow_schedule(
    actual_cv: float, scheduled_cv: float, tolerance: float = GAP_CV_TOLERANCE
) -> bool:
    """Whether the actual sends' gap dispersion matches the schedule's own for the same queries:
    |actual − scheduled| ≤ tolerance × max(scheduled, 1). True when either is unknown (NaN: fewer
    than three sends, nothing to judge)."""
    if math.isnan(actual_cv) or math.isnan(scheduled_cv):
        return True
    return abs(actual_cv - scheduled_cv) <= tolerance * max(scheduled_cv, 1.0)


def cpu_seconds() -> float:
    """User + system CPU of this process so far."""
    return time.process_time()


@dataclass(frozen=True)
class WorkerReport:
    """One generator process: what it issued, what that cost, and how late it was."""

    shard: int
    host: str
    pid: int
    issued: int
    cpu_s: float
    loop_lag: LoopLagStats
    send_lag_p99_ns: int
    late_share: float
    kept_up: bool
    connection_waits: int  # queries that waited for a free connection or gRPC stream slot
    node: str = ""  # the Ray node it ran on ("" outside Ray): one host may hold several nodes
    # queries sent again because the server or a proxy never processed them (gRPC wire client)
    transparent_retries: int = 0

    @classmethod
    def of(
        cls,
        *,
        shard: int,
        host: str,
        pid: int,
        issued: int,
        cpu_s: float,
        loop_lag_ns: np.ndarray,
        send_lag: SendLagStats,
        connection_waits: int,
        node: str = "",
        transparent_retries: int = 0,
    ) -> WorkerReport:
        return cls(
            shard=shard,
            host=host,
            pid=pid,
            issued=issued,
            cpu_s=cpu_s,
            loop_lag=LoopLagStats.of(loop_lag_ns),
            send_lag_p99_ns=send_lag.p99_ns,
            late_share=send_lag.late_share,
            kept_up=send_lag.kept_up,
            connection_waits=connection_waits,
            node=node,
            transparent_retries=transparent_retries,
        )

    @property
    def cpu_us_per_query(self) -> float:
        return self.cpu_s * 1e6 / self.issued if self.issued else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "host": self.host,
            "pid": self.pid,
            "issued": self.issued,
            "cpu_s": round(self.cpu_s, 6),
            "cpu_us_per_query": round(self.cpu_us_per_query, 3),
            "loop_lag_ns": dataclasses.asdict(self.loop_lag),
            "send_lag_p99_ns": self.send_lag_p99_ns,
            "late_share": self.late_share,
            "kept_up": self.kept_up,
            "connection_waits": self.connection_waits,
            "transparent_retries": self.transparent_retries,
            **({"ray_node": self.node} if self.node else {}),
        }


# What "client CPU" counts, said once for result.json and the tables.
CLIENT_CPU_COVERS = (
    "user + system CPU of every generator process (each worker from the common start to its "
    "last answer, plus the coordinating parent while the workers ran), spin-waiting included; "
    "process start-up, imports, connecting and building the sample library are excluded; per "
    "issued query"
)


@dataclass(frozen=True)
class ClientReport:
    """The whole generator: its workers, where they ran, and the merged law of its sends beside
    the law its schedule asked for (`scheduled_gap_cv`: the same issued queries' due times)."""

    placement: str  # "in-process", "processes", or "ray ADDRESS"
    loop: str
    workers: tuple[WorkerReport, ...]
    send_gap_cv: float
    histograms: dict[str, str]  # merged HDR (V2 base64) of the latencies and the send lag
    # The coordinating parent's CPU while sharded workers ran (0 when this process played alone).
    parent_cpu_s: float = 0.0
    # How the worker count was chosen ("--workers", the automatic rule and its figures; "" when
    # nothing chose: a library caller playing in its own process).
    worker_choice: str = ""
    # The send-gap CV of the issued queries' due times: the schedule's own law (NaN: unknown)
    scheduled_gap_cv: float = math.nan

    @property
    def sends_follow_schedule(self) -> bool:
        """The sends' gap dispersion is the schedule's own (gaps_follow_schedule)."""
        return gaps_follow_schedule(self.send_gap_cv, self.scheduled_gap_cv)

    @property
    def cpu_s(self) -> float:
        """Every generator process's CPU over the run: the workers' plus the parent's."""
        return sum(w.cpu_s for w in self.workers) + self.parent_cpu_s

    @property
    def issued(self) -> int:
        return sum(w.issued for w in self.workers)

    @property
    def cpu_us_per_query(self) -> float:
        return self.cpu_s * 1e6 / self.issued if self.issued else 0.0

    @property
    def connection_waits(self) -> int:
        """Queries that waited for a free connection or stream, all workers."""
        return sum(w.connection_waits for w in self.workers)

    @property
    def transparent_retries(self) -> int:
        """Queries sent again because they were never processed (GOAWAY, REFUSED_STREAM), all
        workers: what grpc-core does silently, counted so a proxy's rotations show."""
        return sum(w.transparent_retries for w in self.workers)

    @property
    def worst_loop_lag(self) -> LoopLagStats:
        return max((w.loop_lag for w in self.workers), key=lambda s: s.p99_ns)

    def to_dict(self) -> dict[str, Any]:
        return {
            "placement": self.placement,
            "loop": self.loop,
            "worker_count": len(self.workers),
            "worker_choice": self.worker_choice,
            "cpu_s": round(self.cpu_s, 6),
            "parent_cpu_s": round(self.parent_cpu_s, 6),
            "cpu_us_per_query": round(self.cpu_us_per_query, 3),
            "cpu_covers": CLIENT_CPU_COVERS,
            "send_gap_cv": _cv(self.send_gap_cv),
            "scheduled_gap_cv": _cv(self.scheduled_gap_cv),
            "send_gaps_follow_schedule": self.sends_follow_schedule,
            "loop_lag_method": "delay of a call_soon callback queued every 10 ms",
            "connection_waits": self.connection_waits,
            "transparent_retries": self.transparent_retries,
            "workers": [w.to_dict() for w in self.workers],
            "hdr": self.histograms,
        }


def _cv(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


# The HDR histograms a generator sends back, each drawn from its records: the one list that
# shard merging (shards/merge.py, exact: decode and add) and result.json's client "hdr" follow.
RECORD_HISTOGRAMS: dict[str, Callable[[Records], np.ndarray]] = {
    "latency_from_scheduled": Records.latency_from_scheduled_ns,
    "latency_from_issue": Records.latency_from_issue_ns,
    "send_lag": Records.send_lag_ns,
}
# Only for runs whose answers came in parts (targets declaring streams_parts).
FIRST_PART = "first_part_from_scheduled"  # time to first token, from the scheduled time
PART_GAP = "part_gap"  # gaps between consecutive parts of one answer (the runner's histogram)


def record_histograms(records: Records, part_gaps: str = "") -> dict[str, str]:
    """Encoded HDR histograms of one generator's latencies and send lag, what shards merge; with
    `part_gaps` (RunOutcome.part_gaps, a target answering in parts), the time to the first part
    and the gaps between parts too."""
    histograms = {
        name: encode_histogram(latency_histogram(values(records)))
        for name, values in RECORD_HISTOGRAMS.items()
    }
    if part_gaps:
        first = latency_histogram(records.first_part_from_scheduled_ns())
        histograms[FIRST_PART] = encode_histogram(first)
        histograms[PART_GAP] = part_gaps
    return histograms


@dataclass(frozen=True)
class Progress:
    """A live snapshot of a sharded run, summed over workers (for the live view only)."""

    issued: int
    completed: int
    errors: int
    recent_ns: np.ndarray  # latencies from scheduled time of recent completions, all workers

    @classmethod
    def of(cls, records: Records, window: int = 2000) -> Progress:
        done = int(np.count_nonzero(records.completed_ns >= 0))
        return cls(
            issued=int(records.issued.sum()),
            completed=done,
            errors=int(records.errored.sum()),
            recent_ns=records.latency_from_scheduled_ns()[-window:],
        )

    @classmethod
    def total(cls, parts: list[Progress]) -> Progress:
        return cls(
            issued=sum(p.issued for p in parts),
            completed=sum(p.completed for p in parts),
            errors=sum(p.errors for p in parts),
            recent_ns=np.concatenate([p.recent_ns for p in parts])
            if parts
            else np.zeros(0, np.int64),
        )


RECENT_COMPLETIONS = 20_000  # the running p99's window: enough rows for a stable 99th percentile


class ProgressTracker:
    """Progress of one growing Records table, read a little at a time.

    The table is preallocated for the whole schedule (a 10-minute run at 5000 QPS holds 3 M rows)
    and the live view reads it from the event loop twice a second: full passes over it would stall
    the issuer for tens of ms each. Queries are issued in row order, so rows below `settled` (all
    answered or failed) are counted once and never read again; each update reads only the rows
    issued since the last one and those still in flight.
    """

    def __init__(self, window: int = RECENT_COMPLETIONS) -> None:
        self.window = window
        self._settled = 0  # rows below are issued and finished; their counts are folded in
        self._settled_completed = 0
        self._settled_errors = 0
        self._frontier = 0  # first row not yet seen issued

    def update(self, records: Records) -> Progress:
        self._frontier = _issued_frontier(records.issued_ns, self._frontier)
        lo, hi = self._settled, self._frontier
        status = records.status[lo:hi]
        finished = status != Status.PENDING
        # Advance `settled` over the finished prefix of the open rows.
        unfinished = np.flatnonzero(~finished)
        step = int(unfinished[0]) if len(unfinished) else hi - lo
        self._settled_completed += int(np.count_nonzero(status[:step] == Status.OK))
        self._settled_errors += int(np.count_nonzero(status[:step] == Status.ERROR))
        self._settled = lo + step
        open_status = status[step:]
        recent = slice(max(0, hi - self.window), hi)
        ok = records.status[recent] == Status.OK
        return Progress(
            issued=hi,
            completed=self._settled_completed
            + self._settled_errors
            + int(np.count_nonzero(open_status != Status.PENDING)),
            errors=self._settled_errors + int(np.count_nonzero(open_status == Status.ERROR)),
            recent_ns=records.completed_ns[recent][ok] - records.scheduled_ns[recent][ok],
        )


def _issued_frontier(issued_ns: np.ndarray, start: int) -> int:
    """The first row at or after `start` that is not issued, looking at growing blocks (cost in
    proportion to the rows issued since `start`, not to the table)."""
    n, step = len(issued_ns), 1024
    while start < n:
        block = issued_ns[start : start + step]
        unset = np.flatnonzero(block == NOT_SET_NS)
        if len(unset):
            return start + int(unset[0])
        start += len(block)
        step *= 2
    return n
