"""The live view during a run: a progress bar with elapsed and remaining time, issued, completed,
in flight, errors, current QPS and running p99.

Called from the runner's periodic tick (every 0.5 s) on the event loop, so it must stay cheap:
the counts come from a ProgressTracker (it reads only rows that changed since the last tick), the
running p99 from the last RECENT_COMPLETIONS rows (numpy partition, not a sort), and the lines are
plain Text (a table layout costs ten times more to render). It renders only on those ticks (no
refresh thread). When the console is not a terminal (a CI log, a pipe) it shows nothing: the
final tables are printed in full instead.
"""

from __future__ import annotations

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from loadtest.core.records import Records
from loadtest.core.units import ns_to_ms, ns_to_s
from loadtest.engine.selfmeasure import Progress, ProgressTracker

QPS_WINDOW_NS = 400_000_000
BAR_WIDTH = 40


def running_p99(recent_ns: np.ndarray) -> str:
    """p99 of the recent completions (exact order statistic over the window), for display."""
    if not len(recent_ns):
        return "—"
    k = min(len(recent_ns) - 1, int(len(recent_ns) * 0.99))
    return f"{ns_to_ms(np.partition(recent_ns, k)[k]):.2f} ms"


def bar(done: float, total: float) -> Text:
    """A BAR_WIDTH-wide bar in rich's progress-bar styles (drawn by hand: cheap to render)."""
    filled = round(BAR_WIDTH * min(1.0, max(0.0, done / total))) if total > 0 else 0
    return Text.assemble(("━" * filled, "bar.complete"), ("━" * (BAR_WIDTH - filled), "bar.back"))


class RateMeter:
    """Completed queries per second over the last ≥ QPS_WINDOW_NS (shards' ticks interleave, so
    a per-tick difference would jitter)."""

    def __init__(self) -> None:
        self._last_completed = 0
        self._last_ns = 0
        self.qps = 0.0

    def update(self, completed: int, now_ns: int) -> float:
        if now_ns - self._last_ns >= QPS_WINDOW_NS:
            self.qps = (completed - self._last_completed) / ns_to_s(now_ns - self._last_ns)
            self._last_completed, self._last_ns = completed, now_ns
        return self.qps


def run_lines(progress: Progress, qps: float, now_ns: int, span_ns: int) -> Group:
    """Two lines describing a run in progress: where it is in its span, and its counts."""
    remaining_s = max(0.0, ns_to_s(span_ns - now_ns))
    left = f"left {remaining_s:5.1f} s" if now_ns <= span_ns else "draining"
    where = bar(now_ns, span_ns) + Text(f"  elapsed {ns_to_s(now_ns):6.1f} s  {left}")
    counts = Text.assemble(
        f"issued {progress.issued}  completed {progress.completed}  "
        f"in flight {progress.issued - progress.completed}  errors {progress.errors}  "
        f"current {qps:8.1f} QPS  running p99 {running_p99(progress.recent_ns)}  ",
        ("(latency from scheduled time)", "dim"),
    )
    return Group(where, counts)


class RunWatcher:
    """Turns the runner's ticks (this process's Records, or a sharded run's summed Progress) into
    the lines above; one per run, because its tracker remembers where it read up to."""

    def __init__(self, span_ns: int) -> None:
        self.span_ns = span_ns
        self._tracker = ProgressTracker()
        self._rate = RateMeter()

    def lines(self, data: Records | Progress, now_ns: int) -> Group:
        progress = self._tracker.update(data) if isinstance(data, Records) else data
        return run_lines(
            progress, self._rate.update(progress.completed, now_ns), now_ns, self.span_ns
        )


class LiveView:
    def __init__(self, console: Console, span_ns: int, title: str, enabled: bool = True) -> None:
        self.console = console
        self.title = title
        self.enabled = enabled and console.is_terminal
        self._live: Live | None = None
        self._watcher = RunWatcher(span_ns)

    def __enter__(self) -> LiveView:
        if self.enabled:
            self._live = Live(console=self.console, auto_refresh=False, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def tick(self, data: Records | Progress, now_ns: int) -> None:
        """The runner's tick (this process's records) or a sharded run's summed Progress."""
        if self._live is None:
            return
        lines = self._watcher.lines(data, now_ns)
        self._live.update(Group(Text(self.title, style="bold"), lines), refresh=True)
