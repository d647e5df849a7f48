"""Plays a Schedule against a Target, open loop (and closed loop for Offline and the streams).

The runners here are where the run's clock is read while queries are issued; the clock is a
parameter. (The shards and the self-measurement read clocks too: to start workers together, and
to measure the generator's own CPU and loop lag.)

Each query is issued at its scheduled time whatever is still outstanding (open loop), and its
latency is later taken from that *scheduled* time, so a slow server or a lagging client is charged
to the queries it delays (no coordinated omission). What actually happened is recorded per query:
the real issue time (send lag = issued − scheduled), completion, status and error kind; for a
target whose answers arrive in parts (`streams_parts`), also the first response, the part count,
the final count and the gaps between parts (engine/parts.py), by both runners.

Precise issuing: asyncio timers wake late (epoll rounds timeouts *up* to whole milliseconds, then
the kernel adds its own slack; timing.py's loop cuts that, and docs/reference.md gives the
measured figures with their machine), so the issuer sleeps
until a spin window before the due time and then yields to the loop (`sleep(0)`) until the clock
reaches it. Yielding, rather than busy-waiting, keeps completions flowing while it waits. The window
adapts: from the 16th sleep on, it is a high quantile (≈ p98.5) of the oversleeps seen in the last
TIMER_HISTORY sleeps plus a margin, so a quiet
machine spins for ~1 ms per query and a noisy one for longer; spinning costs CPU on a box the
server shares, so it is kept no longer than the timer's measured lateness requires.
On the callback path (targets declaring `callback_send`, driven by `start_infer`, and targets
streaming parts, driven by `start_parts`), each completion
also sends whatever fell due while it was being handled, so a burst of answers does not hold due
sends back until the issuer's next turn. Completion handlers only write three numbers into
preallocated arrays; all statistics happen after the run (or in the cheap periodic `on_tick`
snapshot), so result processing never blocks issuing.

The clock is a parameter so tests can substitute one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loadtest.core.records import NOT_SET_NS, Records, Status
from loadtest.core.schedule import Schedule, check_mask
from loadtest.core.target import Kept, Target
from loadtest.engine import stopping
from loadtest.engine.parts import PartsLog
from loadtest.engine.quiet_gc import frozen_heap
from loadtest.engine.selfmeasure import LoopLagProbe
from loadtest.rules.error_budget import ErrorRateWindow

INITIAL_SPIN_WINDOW_NS = 2_000_000
SPIN_MARGIN_NS = 150_000
MIN_SPIN_WINDOW_NS = 0
MAX_SPIN_WINDOW_NS = 5_000_000
# Sends may land this share of the mean gap late without spinning for it (capped below): a
# jitter of a tenth of the gap moves the send-gap CV by well under 1 %, while spinning for µs
# precision at low rates burns a core that a server or other workers on the host need.
GAP_TOLERANCE = 0.1
MAX_TOLERANCE_NS = 300_000
# The spin window never exceeds this share of the mean gap between sends. Without the cap, a
# window wider than the gap means the issuer never sleeps on a timer again, so it never observes
# an oversleep that could shrink the window: it yields (`sleep(0)`) the whole run, a core of CPU
# on a machine whose server needs it (measured: 2000 QPS over gRPC, ~450 µs of spinning per
# query, no timer sleep at all; docs/grpc-load-path.md).
SPIN_GAP_SHARE = 0.25
# ... except at high rates: below this mean gap (above 5000 QPS per worker) the timer's own
# lateness (60-200 µs measured on 2-vCPU VMs) is most of a gap, so a capped window cannot place
# sends: they leave in clumps (stub, one worker, 6000 QPS: send-gap CV 1.05-1.06 capped; 1.00
# uncapped; 10000 QPS: 1.14 vs 1.00). There the window is uncapped; spinning then costs at most
# the gap itself, under 200 µs per query (docs/grpc-load-path.md has the runs).
FULL_SPIN_GAP_NS = 200_000
TIMER_HISTORY = 256
LONG_WAIT_NS = 100_000_000
TICK_NS = 500_000_000
Clock = Callable[[], int]


# Awaited once at a run's t = 0, after all set-up (see scenarios.mlperf.play and
# observe.observer): the moment an observer of the server opens its window.
OnStart = Callable[[], Coroutine[Any, Any, None]]


def spin_window_cap(mean_gap_ns: float) -> int:
    """The widest spin window for a schedule with this mean gap between sends."""
    if mean_gap_ns < FULL_SPIN_GAP_NS:
        return MAX_SPIN_WINDOW_NS
    return int(min(MAX_SPIN_WINDOW_NS, SPIN_GAP_SHARE * mean_gap_ns))


async def nothing_to_do() -> None:
    """The default `on_start`: nobody is waiting for the run's t = 0."""


@dataclass
class IssuerCounters:
    """Where the open-loop issuer's time went, counted per phase (cheap integer adds): timer
    sleeps, spin turns (`sleep(0)` until the due time) and the time spent in them, and which
    path sent each query (the issuer, or a completion that found sends due). Benchmarks print
    them to tell a client that spins from one whose loop is busy with answers."""

    timer_sleeps: int = 0
    spin_turns: int = 0
    spin_ns: int = 0
    sent_by_issuer: int = 0
    sent_by_completions: int = 0


@dataclass(frozen=True)
class RunOutcome:
    """Raw result of playing a schedule: the records plus how the run ended."""

    records: Records
    started_unix_ns: int  # wall-clock time at the run's start, for reports only
    duration_ns: int  # run start -> last completion (or the moment the run was cut short)
    interrupted: bool  # stopped from outside (Ctrl-C, SIGTERM): a partial result
    stop_reason: str  # "" when every query was issued and answered as scheduled
    # --check-outputs: query index -> its raw answer, for the queries sampled at schedule time
    # and answered; decoded and compared after the run (engine/output_check.py).
    kept: dict[int, Kept] = field(default_factory=dict)
    # Encoded HDR histogram (rules/stats.py) of the gaps between consecutive parts of an answer,
    # for targets declaring streams_parts; "" for the others.
    part_gaps: str = ""

    @property
    def stopped_early(self) -> bool:
        """Cut short for any reason (interrupted, max duration, drain timeout): a partial result.

        Every way a runner stops early records a stop reason; the verdict also counts queries
        scheduled and never issued (rules.validity.run_stopped_early).
        """
        return self.interrupted or bool(self.stop_reason)


class Runner:
    """Plays one schedule once. Create a new Runner per run."""

    def __init__(
        self,
        schedule: Schedule,
        target: Target,
        *,
        clock: Clock = time.perf_counter_ns,
        max_duration_ns: int = 0,
        drain_timeout_ns: int = 30_000_000_000,
        interrupt_drain_ns: int = 2_000_000_000,
        on_tick: Callable[[Records, int], None] | None = None,
        samples_per_query: int = 1,
        error_window: ErrorRateWindow | None = None,
        keep: np.ndarray | None = None,
    ) -> None:
        self.schedule = schedule
        # Queries whose answers are kept (--check-outputs), chosen with the schedule; only they
        # take the slower path that keeps the answer, the others are sent as always.
        self._keep: set[int] = set(np.flatnonzero(keep).tolist()) if keep is not None else set()
        self.kept: dict[int, Kept] = {}
        self.error_window = error_window
        self.target = target
        self.clock = clock
        self.max_duration_ns = max_duration_ns
        self.drain_timeout_ns = drain_timeout_ns
        self.interrupt_drain_ns = interrupt_drain_ns
        self.on_tick = on_tick
        self.records = Records(
            scheduled_ns=schedule.scheduled_ns.copy(),
            sample_index=schedule.sample_index.copy(),
            samples_per_query=samples_per_query,
        )
        if schedule.rows is not None:  # a replayed trace: each query keeps its row
            self.records.trace_index[:] = schedule.rows.index
        self.stop_event = asyncio.Event()
        self._abandon = asyncio.Event()  # an urgent stop: no drain either
        self._stop_reason = ""
        self._interrupted = False
        self._in_flight: set[asyncio.Task[None]] = set()
        self._outstanding = 0  # queries issued and not yet answered (both issue paths)
        self._next = 0  # the next query to issue, shared by the issuer and completions
        self._issuing = False
        self._halted = False  # max duration reached or stopped: nothing more is issued
        self._due: list[int] = []
        self._samples: list[int] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._all_answered = asyncio.Event()
        self._finished = False  # after the run, late answers are ignored (rows stay PENDING)
        self._start_ns = 0
        # Targets declaring a callback send (`start_infer`, see core/target.py) are driven without
        # a task per query: the cheapest way to issue from Python.
        self._start_infer = target.start_infer if target.capabilities.callback_send else None
        # Targets answering in parts are sent by `start_parts` (also a callback send); their
        # events land in the records' part columns.
        streams = target.capabilities.streams_parts
        self._parts = PartsLog(self.records, clock) if streams else None
        self._start_parts = target.start_parts if streams else None
        self._sends_by_callback = self._start_infer is not None or self._start_parts is not None
        self.loop_lag = LoopLagProbe(clock)
        self.counters = IssuerCounters()

    def stop(self, reason: str, urgent: bool = False) -> None:
        """Stop issuing (Ctrl-C, SIGTERM); outstanding queries get a short drain, none when
        `urgent` (nobody is left to read the answers). A partial result."""
        if not self._stop_reason:
            self._stop_reason = reason
        self._interrupted = True
        self.stop_event.set()
        if urgent:
            self._abandon.set()

    def abort(self, reason: str) -> None:
        """Stop issuing because the run is already lost (the error-rate limit): a partial result
        with its own reason, not an interruption."""
        if not self._stop_reason:
            self._stop_reason = f"aborted: {reason}"
        self.stop_event.set()

    async def _query(self, i: int, sample: int) -> None:
        # Stamped here, when the task actually runs, not when the issuer created it: any delay
        # of the event loop before the send is the client's and shows up as send lag.
        self.records.issued_ns[i] = self.clock() - self._start_ns
        self._complete(i, await self.target.infer(sample))

    async def _query_kept(self, i: int, sample: int) -> None:
        self.records.issued_ns[i] = self.clock() - self._start_ns
        error, kept = await self.target.infer_kept(sample)
        if error is None and not self._finished:
            self.kept[i] = kept
        self._complete(i, error)

    def _complete(self, i: int, error: str | None) -> None:
        if self._finished:
            return
        records = self.records
        records.completed_ns[i] = self.clock() - self._start_ns
        if error is None:
            records.status[i] = Status.OK
        else:
            records.status[i] = Status.ERROR
            records.error_code[i] = records.error_code_for(error)
        window = self.error_window
        if window is not None and window.add(int(records.completed_ns[i]), error is None):
            self.abort(window.reason())
        self._outstanding -= 1
        if self._outstanding == 0:
            self._all_answered.set()
        if self._sends_by_callback and self._next < len(self._due):
            now = self.clock()
            if self._start_ns + self._due[self._next] <= now:
                before = self._next
                self._issue_due(now)
                self.counters.sent_by_completions += self._next - before

    def _written(self, i: int) -> None:
        """A callback send written later than asked (it waited for a connection): the send is
        stamped now, so the wait shows in send lag and latency from the actual send."""
        self.records.issued_ns[i] = self.clock() - self._start_ns

    def _launch(self, i: int, sample: int) -> None:
        if self._outstanding == 0:
            self._all_answered.clear()
        self._outstanding += 1
        keep = bool(self._keep) and i in self._keep
        # A kept query (--check-outputs) goes by infer_kept, whole: its part columns stay unset.
        if self._parts is not None and self._start_parts is not None and not keep:
            self.records.issued_ns[i] = self.clock() - self._start_ns
            self._start_parts(
                sample,
                self._parts.query(i, functools.partial(self._complete, i)),
                functools.partial(self._written, i),
            )
            return
        if self._start_infer is not None and not keep:
            self.records.issued_ns[i] = self.clock() - self._start_ns
            self._start_infer(
                sample, functools.partial(self._complete, i), functools.partial(self._written, i)
            )
            return
        assert self._loop is not None
        query = self._query_kept(i, sample) if keep else self._query(i, sample)
        task = self._loop.create_task(query)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    def _issue_due(self, now: int) -> None:
        """Issue every query due by `now` (a clock reading), in schedule order.

        Called by the issuer when it wakes, and by completions on the callback path: at high
        rates a burst of answers can keep the loop busy for a while, and sending what fell due
        in between right there keeps sends from clumping behind them.
        """
        if self._issuing:
            return
        self._issuing = True
        try:
            start, due, n = self._start_ns, self._due, len(self._due)
            while self._next < n and start + due[self._next] <= now:
                if self.stop_event.is_set():
                    self._halted = True
                    return
                if self.max_duration_ns and now - start > self.max_duration_ns:
                    self._stop_reason = f"max duration {self.max_duration_ns / 1e9:g} s reached"
                    self._halted = True
                    return
                i = self._next
                self._next += 1
                self._launch(i, self._samples[i])
        finally:
            self._issuing = False

    async def _issue_all(self) -> None:
        self._loop = asyncio.get_running_loop()
        clock, start = self.clock, self._start_ns
        self._due = self.schedule.scheduled_ns.tolist()  # Python ints: cheaper per element
        self._samples = self.schedule.sample_index.tolist()
        scheduled = self._due
        oversleeps: list[int] = []  # the last TIMER_HISTORY oversleeps (a ring once full)
        observed = 0
        span = self.schedule.span_ns
        mean_gap = span / max(1, len(scheduled) - 1) if len(scheduled) > 1 else LONG_WAIT_NS
        max_window = spin_window_cap(mean_gap)
        window = min(INITIAL_SPIN_WINDOW_NS, max_window)
        tolerance = int(min(GAP_TOLERANCE * mean_gap, MAX_TOLERANCE_NS))
        counters = self.counters
        while self._next < len(scheduled) and not self._halted:
            i = self._next
            due = start + scheduled[i]
            wake = due - window
            wait = wake - clock()
            if wait > LONG_WAIT_NS:
                # A long gap (low rates): wait on the stop event so Ctrl-C is not ignored.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stop_event.wait(), wait / 1e9)
                if self.stop_event.is_set():
                    return
            elif wait > 0:
                counters.timer_sleeps += 1
                await asyncio.sleep(wait / 1e9)
                late = clock() - wake
                if observed < TIMER_HISTORY:
                    oversleeps.append(late)
                else:
                    oversleeps[observed % TIMER_HISTORY] = late
                observed += 1
                if observed % 16 == 0:
                    # ≈ the 98.5th percentile (the 4th largest of 256) plus a margin
                    ranked = sorted(oversleeps)
                    quantile = ranked[-max(1, len(ranked) // 64)]
                    window = min(
                        max_window,
                        max(MIN_SPIN_WINDOW_NS, quantile + SPIN_MARGIN_NS - tolerance),
                    )
            now = clock()
            if now < due:
                spin_from = now
                while now < due and self._next == i:
                    counters.spin_turns += 1
                    await asyncio.sleep(0)
                    now = clock()
                counters.spin_ns += now - spin_from
            if self.stop_event.is_set():
                return
            before = self._next
            self._issue_due(now)
            counters.sent_by_issuer += self._next - before

    async def _ticker(self) -> None:
        assert self.on_tick is not None
        while True:
            await asyncio.sleep(TICK_NS / 1e9)
            self.on_tick(self.records, self.clock() - self._start_ns)

    async def _drain(self, timeout_ns: int) -> None:
        """Wait for outstanding queries; a stop request shortens the wait to the interrupt drain.

        One event, set by the last answer, is waited on: waiting on the set of tasks with
        FIRST_COMPLETED in a loop would re-register a callback per task per completion.
        """
        if self._outstanding == 0:
            return
        answered = asyncio.ensure_future(self._all_answered.wait())
        stop_wait = asyncio.ensure_future(self.stop_event.wait())
        abandon = asyncio.ensure_future(self._abandon.wait())
        try:
            done, _ = await asyncio.wait(
                {answered, stop_wait, abandon},
                timeout=timeout_ns / 1e9,
                return_when=FIRST_COMPLETED,
            )
            if stop_wait in done and answered not in done and abandon not in done:
                await asyncio.wait(
                    {answered, abandon},
                    timeout=self.interrupt_drain_ns / 1e9,
                    return_when=FIRST_COMPLETED,
                )
        finally:
            answered.cancel()
            stop_wait.cancel()
            abandon.cancel()
        unanswered = self._outstanding
        self._finished = True  # answers after this moment are not the run's (rows stay PENDING)
        if self._parts is not None:
            self._parts.closed = True
        for task in list(self._in_flight):
            task.cancel()
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        if unanswered and not self._stop_reason:
            self._stop_reason = f"{unanswered} queries unanswered after the drain timeout"

    async def run(self, handle_sigint: bool = True, start_at_ns: int = 0) -> RunOutcome:
        """Play the schedule; a stop request (SIGINT, SIGTERM: engine/stopping.py) stops issuing,
        drains briefly and returns what was measured. `handle_sigint=False` ignores them.

        `start_at_ns` (a future reading of `clock`) makes t = 0 a given instant, so several
        worker processes sharing CLOCK_MONOTONIC start their shards together; 0 = now.
        """
        loop = asyncio.get_running_loop()
        with contextlib.ExitStack() as stack:
            if handle_sigint:
                stack.enter_context(stopping.catching(loop))
                stack.enter_context(stopping.listening(self.stop))
            return await self._run(loop, start_at_ns)

    async def _run(self, loop: asyncio.AbstractEventLoop, start_at_ns: int) -> RunOutcome:
        with frozen_heap():
            return await self._play_schedule(loop, start_at_ns)

    async def _play_schedule(self, loop: asyncio.AbstractEventLoop, start_at_ns: int) -> RunOutcome:
        self._start_ns = start_at_ns or self.clock()
        if self._parts is not None:
            self._parts.start_ns = self._start_ns
        started_unix_ns = time.time_ns() + (self._start_ns - self.clock())
        ticker = loop.create_task(self._ticker()) if self.on_tick else None
        self.loop_lag.start(loop)
        try:
            await self._issue_all()
            drain = self.interrupt_drain_ns if self.stop_event.is_set() else self.drain_timeout_ns
            await self._drain(drain)
        finally:
            self.loop_lag.stop()
            if ticker:
                ticker.cancel()
        end_ns = self.clock() - self._start_ns
        completed = self.records.completed_ns
        last_completion = int(completed.max()) if len(completed) else 0
        duration_ns = last_completion if not self._stop_reason else max(end_ns, last_completion)
        if self.on_tick:
            self.on_tick(self.records, end_ns)
        return RunOutcome(
            records=self.records,
            started_unix_ns=started_unix_ns,
            duration_ns=max(duration_ns, 0),
            interrupted=self._interrupted,
            stop_reason=self._stop_reason,
            kept=self.kept,
            part_gaps=self._parts.encoded_gaps() if self._parts is not None else "",
        )


class ClosedLoopRunner:
    """Closed-loop play for Offline, SingleStream and MultiStream.

    `workers` coroutines each take the next query, send it and wait for the answer before taking
    another, so at most `workers` queries are in flight.
    - Streams (`all_due_at_start=False`, 1 worker): nothing is scheduled ahead, so each query's
      "scheduled" time is its issue time and latency is completion − issue (LoadGen's definition
      for SingleStream/MultiStream). The run ends once both the minimum duration and the minimum
      query count are met.
    - Offline (`all_due_at_start=True`): every query is due at t = 0 (LoadGen issues one query
      holding every sample at test start); the in-flight cap is the only brake, and latency from
      t = 0 makes the last completion the Offline duration. The run ends when all are answered.
    """

    def __init__(
        self,
        sample_index: np.ndarray,
        target: Target,
        *,
        workers: int,
        more_samples: Callable[[int], np.ndarray] | None = None,
        all_due_at_start: bool,
        min_duration_ns: int = 0,
        min_query_count: int = 0,
        max_duration_ns: int = 0,
        samples_per_query: int = 1,
        clock: Clock = time.perf_counter_ns,
        on_tick: Callable[[Records, int], None] | None = None,
        error_window: ErrorRateWindow | None = None,
        interrupt_drain_ns: int = 2_000_000_000,
        check_rate: float = 0.0,
        check_seed: int = 0,
        max_qps: float = 0.0,
    ) -> None:
        self.sample_index = sample_index
        # --max-qps: query i is sent no sooner than i / max_qps after the start, so a closed
        # loop (find-peak's calibration, sweep's warm-up) never exceeds the user's cap (#26).
        self.min_gap_ns = 1e9 / max_qps if max_qps > 0 else 0.0
        self._next_slot_ns = 0.0
        # --check-outputs: which queries keep their answers, drawn with the sample indices (the
        # mask grows with them, continuing the same seeded stream).
        self.check_rate = check_rate
        self.check_seed = check_seed
        self._keep = check_mask(len(sample_index), check_rate, check_seed)
        self.kept: dict[int, Kept] = {}
        self.error_window = error_window
        self.target = target
        self.workers = workers
        # Streams run until duration and count are met, so their query count is open-ended:
        # `more_samples(n)` supplies n further sample indices when the arrays fill up.
        self.more_samples = more_samples
        self.all_due_at_start = all_due_at_start
        self.min_duration_ns = min_duration_ns
        self.min_query_count = min_query_count
        self.max_duration_ns = max_duration_ns
        self.samples_per_query = samples_per_query
        self.clock = clock
        self.on_tick = on_tick
        self.interrupt_drain_ns = interrupt_drain_ns
        # Every query's row, scheduled at t = 0 until `records()` says otherwise; grown (with the
        # sample indices) by `_grow`, so always read through self._rows, never kept across awaits.
        self._rows = Records(
            np.zeros(len(sample_index), np.int64), sample_index, samples_per_query=samples_per_query
        )
        streams = target.capabilities.streams_parts
        self._parts = PartsLog(self._rows, clock) if streams else None
        self._next = 0
        self._stop_reason = ""
        self._interrupted = False
        self.stop_event = asyncio.Event()
        self._abandon = asyncio.Event()
        self._start_ns = 0

    def stop(self, reason: str, urgent: bool = False) -> None:
        """Stop taking new queries (Ctrl-C, SIGTERM); queries in flight get the interrupt drain
        (none when `urgent`), then are abandoned (their rows stay PENDING). Partial result."""
        if not self._stop_reason:
            self._stop_reason = reason
        self._interrupted = True
        self.stop_event.set()
        if urgent:
            self._abandon.set()

    def abort(self, reason: str) -> None:
        """Stop taking new queries because the run is already lost; not an interruption."""
        if not self._stop_reason:
            self._stop_reason = f"aborted: {reason}"
        self.stop_event.set()

    def _grow(self) -> None:
        assert self.more_samples is not None
        extra = self.more_samples(max(1024, len(self.sample_index)))
        n = len(extra)
        self.sample_index = np.concatenate([self.sample_index, extra])
        self._rows = self._rows.extended(extra)
        if self._parts is not None:
            self._parts.records = self._rows
        more_keep = check_mask(n, self.check_rate, self.check_seed, start=len(self._keep))
        self._keep = np.concatenate([self._keep, more_keep])

    def _done_issuing(self, now_rel: int) -> bool:
        if self._next >= len(self.sample_index) and self.more_samples is not None:
            self._grow()
        if self.stop_event.is_set() or self._next >= len(self.sample_index):
            return True
        if not self.all_due_at_start:
            # LoadGen's stream rule: stop once a query has been *issued* at or after the minimum
            # duration and the minimum count has been issued. Checked before the max duration,
            # so a stream that ends as it should is not reported as cut short.
            last_issued = int(self._rows.issued_ns[self._next - 1]) if self._next else NOT_SET_NS
            if last_issued >= self.min_duration_ns and self._next >= self.min_query_count:
                return True
        if self.max_duration_ns and now_rel >= self.max_duration_ns:
            self._stop_reason = self._stop_reason or (
                f"max duration {self.max_duration_ns / 1e9:g} s reached"
            )
            return True
        return False

    async def _infer_parts(self, i: int, sample: int) -> str | None:
        """Send by `start_parts` (its events go to query i's row) and await its end."""
        assert self._parts is not None
        answer: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

        def done(error: str | None) -> None:
            if not answer.done():  # the worker may have been cancelled by a stop
                answer.set_result(error)

        self.target.start_parts(sample, self._parts.query(i, done))
        return await answer

    async def _worker(self) -> None:
        clock, start = self.clock, self._start_ns
        while not self._done_issuing(clock() - start):
            if self.min_gap_ns:
                # reserve the next send slot, wait for it, and look again whether to stop
                slot_ns, self._next_slot_ns = (
                    self._next_slot_ns,
                    self._next_slot_ns + self.min_gap_ns,
                )
                wait_ns = slot_ns - (clock() - start)
                if wait_ns > 0:
                    await asyncio.sleep(wait_ns / 1e9)
                if self._done_issuing(clock() - start):
                    break
            i = self._next
            self._next += 1
            sample = int(self.sample_index[i])
            self._rows.issued_ns[i] = clock() - start
            if self._keep[i]:
                error, kept = await self.target.infer_kept(sample)
                if error is None:
                    self.kept[i] = kept
            elif self._parts is not None:
                error = await self._infer_parts(i, sample)
            else:
                error = await self.target.infer(sample)
            rows = self._rows  # after the await: another worker may have grown it
            rows.completed_ns[i] = clock() - start
            if error is None:
                rows.status[i] = Status.OK
            else:
                rows.status[i] = Status.ERROR
                rows.error_code[i] = rows.error_code_for(error)
            window = self.error_window
            if window is not None and window.add(int(rows.completed_ns[i]), error is None):
                self.abort(window.reason())

    def records(self) -> Records:
        """Rows for every query taken so far (never-taken ones are dropped for streams)."""
        count = len(self._rows) if self.all_due_at_start else self._next
        records = self._rows.take(slice(0, count))
        if not self.all_due_at_start:  # a stream's query is due when it is sent
            records.scheduled_ns[:] = np.where(records.issued, records.issued_ns, 0)
        return records

    async def _ticker(self) -> None:
        assert self.on_tick is not None
        while True:
            await asyncio.sleep(TICK_NS / 1e9)
            self.on_tick(self.records(), self.clock() - self._start_ns)

    async def run(self, handle_sigint: bool = True) -> RunOutcome:
        """Play until done; a stop request (SIGINT, SIGTERM) ends it with a partial result."""
        loop = asyncio.get_running_loop()
        with contextlib.ExitStack() as stack:
            if handle_sigint:
                stack.enter_context(stopping.catching(loop))
                stack.enter_context(stopping.listening(self.stop))
            return await self._run(loop)

    async def _play(self, loop: asyncio.AbstractEventLoop) -> None:
        """The workers until they finish; after a stop, at most the interrupt drain more."""
        tasks = [loop.create_task(self._worker()) for _ in range(self.workers)]
        workers: asyncio.Future[Any] = asyncio.gather(*tasks)
        stop_wait: asyncio.Future[Any] = loop.create_task(self.stop_event.wait())
        abandon: asyncio.Future[Any] = loop.create_task(self._abandon.wait())
        try:
            await asyncio.wait({workers, stop_wait}, return_when=FIRST_COMPLETED)
            if not workers.done():
                await asyncio.wait(
                    {workers, abandon},
                    timeout=self.interrupt_drain_ns / 1e9,
                    return_when=FIRST_COMPLETED,
                )
        finally:
            stop_wait.cancel()
            abandon.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if workers.done() and not workers.cancelled() and workers.exception() is not None:
            raise workers.exception()  # type: ignore[misc]

    async def _run(self, loop: asyncio.AbstractEventLoop) -> RunOutcome:
        started_unix_ns = time.time_ns()
        self._start_ns = self.clock()
        ticker = loop.create_task(self._ticker()) if self.on_tick else None
        if self._parts is not None:
            self._parts.start_ns = self._start_ns
        try:
            with frozen_heap():
                await self._play(loop)
        finally:
            if ticker:
                ticker.cancel()
            if self._parts is not None:
                self._parts.closed = True
        records = self.records()
        done = records.completed_ns[records.completed_ns != NOT_SET_NS]
        if self.on_tick:
            self.on_tick(records, self.clock() - self._start_ns)
        return RunOutcome(
            records=records,
            started_unix_ns=started_unix_ns,
            duration_ns=int(done.max()) if len(done) else 0,
            interrupted=self._interrupted,
            stop_reason=self._stop_reason,
            kept={i: k for i, k in self.kept.items() if i < len(records)},
            part_gaps=self._parts.encoded_gaps() if self._parts is not None else "",
        )
