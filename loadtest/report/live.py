"""The live view during a run: a progress bar with elapsed and remaining time, issued, completed,
in flight, errors, current QPS and running p99.

Called from the runner's periodic tick (every 0.5 s) on the event loop, so it must stay cheap: it
looks only at rows completed since the last tick for the QPS, and at most the last WINDOW
completions for the running p99 (numpy partition, not a sort). It renders only on those ticks
(no refresh thread), so it never competes with the issuer between them. When the console is not
a terminal (a CI log, a pipe) it shows nothing: the final tables are printed in full instead.
"""

from __future__ import annotations

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from loadtest.core.records import Records
from loadtest.engine.selfmeasure import Progress

WINDOW = 200_000
QPS_WINDOW_NS = 400_000_000
BAR_WIDTH = 40


def running_p99(recent_ns: np.ndarray) -> str:
    """p99 of the recent completions (exact order statistic over the window), for display."""
    if not len(recent_ns):
        return "—"
    k = min(len(recent_ns) - 1, int(len(recent_ns) * 0.99))
    return f"{np.partition(recent_ns, k)[k] / 1e6:.2f} ms"


class RateMeter:
    """Completed queries per second over the last ≥ QPS_WINDOW_NS (shards' ticks interleave, so
    a per-tick difference would jitter)."""

    def __init__(self) -> None:
        self._last_completed = 0
        self._last_ns = 0
        self.qps = 0.0

    def update(self, completed: int, now_ns: int) -> float:
        if now_ns - self._last_ns >= QPS_WINDOW_NS:
            self.qps = (completed - self._last_completed) / ((now_ns - self._last_ns) / 1e9)
            self._last_completed, self._last_ns = completed, now_ns
        return self.qps


def run_lines(progress: Progress, qps: float, now_ns: int, span_ns: int) -> Table:
    """Two lines describing a run in progress: where it is in its span, and its counts."""
    remaining_s = max(0.0, (span_ns - now_ns) / 1e9)
    table = Table.grid(padding=(0, 2))
    table.add_row(
        ProgressBar(total=max(span_ns, 1), completed=min(now_ns, span_ns), width=BAR_WIDTH),
        f"elapsed {now_ns / 1e9:6.1f} s",
        f"left {remaining_s:5.1f} s" if now_ns <= span_ns else "draining",
    )
    counts = Table.grid(padding=(0, 2))
    counts.add_row(
        f"issued {progress.issued}",
        f"completed {progress.completed}",
        f"in flight {progress.issued - progress.completed}",
        f"errors {progress.errors}",
        f"current {qps:8.1f} QPS",
        f"running p99 {running_p99(progress.recent_ns)}",
        Text("(latency from scheduled time)", style="dim"),
    )
    return _stack(table, counts)


def _stack(*rows: Table) -> Table:
    grid = Table.grid()
    for row in rows:
        grid.add_row(row)
    return grid


class LiveView:
    def __init__(self, console: Console, span_ns: int, title: str, enabled: bool = True) -> None:
        self.console = console
        self.span_ns = span_ns
        self.title = title
        self.enabled = enabled and console.is_terminal
        self._live: Live | None = None
        self._rate = RateMeter()

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
        progress = Progress.of(data, WINDOW) if isinstance(data, Records) else data
        qps = self._rate.update(progress.completed, now_ns)
        lines = run_lines(progress, qps, now_ns, self.span_ns)
        self._live.update(Group(Text(self.title, style="bold"), lines), refresh=True)
