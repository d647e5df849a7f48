"""The error rate over a trailing time window: the decision behind `--abort-on-error-rate RATE
--window SECONDS` (stop a run the server is failing instead of measuring it to the end).

Each answered query is an event (completion time, ok or not). At an event at time t the window is
(t − window, t]: the events completed in it, and how many of them failed. The rate is exceeded when
the window holds at least `min_queries` events and failures > max_rate × events; the first event
at which that happens is where a runner would stop. `min_queries` keeps one early failure from
reading as a 100 % rate.

Two forms that agree event for event (tests check it): ErrorRateWindow is fed events one at a time
as answers arrive (a runner's completion hook), and first_exceeded_ns replays a run's records.
Unanswered queries are not events until they are answered (a request timeout turns them into
errors); the verdict counts them separately.

Pure: no clock, no I/O; times are integer ns like the records'.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from loadtest.core.records import NOT_SET_NS, Records, Status
from loadtest.core.settings import ErrorAbort
from loadtest.core.units import ns_to_s

DEFAULT_MIN_QUERIES = 10  # below this many answers in the window, a rate is noise


def _check(max_rate: float, window_ns: int, min_queries: int) -> None:
    if not 0.0 <= max_rate < 1.0:
        raise ValueError(f"the error rate must be in [0, 1), got {max_rate}")
    if window_ns <= 0:
        raise ValueError(f"the window must be > 0 ns, got {window_ns}")
    if min_queries < 1:
        raise ValueError(f"min_queries must be ≥ 1, got {min_queries}")


@dataclass(frozen=True)
class WindowState:
    """The window at one event: `queries` answered in (t − window, t], `failures` of them."""

    at_ns: int
    queries: int
    failures: int

    @property
    def rate(self) -> float:
        return self.failures / self.queries if self.queries else 0.0


class ErrorRateWindow:
    """Fed (completed_ns, ok) events in completion order; says when the trailing-window error rate
    first went over `max_rate`.

    An event earlier than the latest one seen (possible only across clocks) counts at the latest
    time: the window never moves backwards. Once exceeded, `exceeded_at` keeps the first moment;
    later events still update the window.
    """

    def __init__(
        self, max_rate: float, window_ns: int, min_queries: int = DEFAULT_MIN_QUERIES
    ) -> None:
        _check(max_rate, window_ns, min_queries)
        self.max_rate = max_rate
        self.window_ns = int(window_ns)
        self.min_queries = min_queries
        self._times: deque[int] = deque()
        self._failure_times: deque[int] = deque()
        self._latest = NOT_SET_NS
        self.exceeded_at: WindowState | None = None

    @property
    def exceeded(self) -> bool:
        return self.exceeded_at is not None

    def state(self) -> WindowState:
        """The window as of the latest event."""
        return WindowState(self._latest, len(self._times), len(self._failure_times))

    def add(self, completed_ns: int, ok: bool) -> bool:
        """Record one answer; True iff the rate is over the limit at this event."""
        now = max(int(completed_ns), self._latest)
        self._latest = now
        self._times.append(now)
        if not ok:
            self._failure_times.append(now)
        start = now - self.window_ns  # events at or before start have left the window
        while self._times and self._times[0] <= start:
            self._times.popleft()
        while self._failure_times and self._failure_times[0] <= start:
            self._failure_times.popleft()
        over = self._over(len(self._times), len(self._failure_times))
        if over and self.exceeded_at is None:
            self.exceeded_at = self.state()
        return over

    def _over(self, queries: int, failures: int) -> bool:
        return queries >= self.min_queries and failures > self.max_rate * queries

    def reason(self) -> str:
        """A stop reason for the runner: 'error rate 40 % over the last 5 s (8 of 20 answered
        queries failed) > 10 %' ('' while not exceeded)."""
        state = self.exceeded_at
        if state is None:
            return ""
        return (
            f"error rate {state.rate * 100:.3g} % over the last {ns_to_s(self.window_ns):g} s "
            f"({state.failures} of {state.queries} answered queries failed) > "
            f"{self.max_rate * 100:g} %"
        )


def first_exceeded(
    records: Records, max_rate: float, window_ns: int, min_queries: int = DEFAULT_MIN_QUERIES
) -> WindowState | None:
    """Replay a run's answers in completion order (ties in record order): the window at the first
    answer where the error rate exceeded `max_rate`, or None if it never did. The same decision
    as feeding ErrorRateWindow every answer."""
    _check(max_rate, window_ns, min_queries)
    answered = (records.completed_ns != NOT_SET_NS) & (records.status != Status.PENDING)
    times = records.completed_ns[answered]
    order = np.argsort(times, kind="stable")
    times = times[order]
    failed = (records.status[answered] == Status.ERROR)[order]
    if not len(times):
        return None
    cumulative = np.concatenate(([0], np.cumsum(failed, dtype=np.int64)))
    first_in = np.searchsorted(times, times - int(window_ns), side="right")
    index = np.arange(len(times))
    queries = index + 1 - first_in
    failures = cumulative[index + 1] - cumulative[first_in]
    over = (queries >= min_queries) & (failures > max_rate * queries)
    hits = np.flatnonzero(over)
    if not len(hits):
        return None
    i = int(hits[0])
    return WindowState(int(times[i]), int(queries[i]), int(failures[i]))


def first_exceeded_ns(
    records: Records, max_rate: float, window_ns: int, min_queries: int = DEFAULT_MIN_QUERIES
) -> int | None:
    """When the trailing-window error rate first exceeded `max_rate`; None if never."""
    state = first_exceeded(records, max_rate, window_ns, min_queries)
    return None if state is None else state.at_ns


def window_for(abort: ErrorAbort | None) -> ErrorRateWindow | None:
    """The runner's window for `--abort-on-error-rate`, or None when the run must not abort."""
    return None if abort is None else ErrorRateWindow(abort.max_rate, abort.window_ns)
