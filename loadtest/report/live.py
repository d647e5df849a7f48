"""The live view during a run: elapsed, issued, completed, in flight, current QPS, running p99.

Called from the runner's periodic tick (every 0.5 s) on the event loop, so it must stay cheap: it
looks only at rows completed since the last tick for the QPS, and at most the last WINDOW
completions for the running p99 (numpy partition, not a sort).
"""

from __future__ import annotations

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from loadtest.core.records import Records
from loadtest.engine.selfmeasure import Progress

WINDOW = 200_000
QPS_WINDOW_NS = 400_000_000


class LiveView:
    def __init__(self, console: Console, span_ns: int, title: str, enabled: bool = True) -> None:
        self.console = console
        self.span_ns = span_ns
        self.title = title
        self.enabled = enabled and console.is_terminal
        self._live: Live | None = None
        self._last_completed = 0
        self._last_ns = 0
        self._qps = 0.0

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
        issued, completed, errors = progress.issued, progress.completed, progress.errors
        recent_ns = progress.recent_ns
        if now_ns - self._last_ns >= QPS_WINDOW_NS:  # shards' ticks interleave: not per tick
            self._qps = (completed - self._last_completed) / ((now_ns - self._last_ns) / 1e9)
            self._last_completed, self._last_ns = completed, now_ns
        p99 = "—"
        if len(recent_ns):
            k = min(len(recent_ns) - 1, int(len(recent_ns) * 0.99))
            p99 = f"{np.partition(recent_ns, k)[k] / 1e6:.2f} ms"
        table = Table.grid(padding=(0, 2))
        table.add_row(
            f"elapsed {now_ns / 1e9:6.1f} / {self.span_ns / 1e9:.0f} s",
            f"issued {issued}",
            f"completed {completed}",
            f"in flight {issued - completed}",
            f"errors {errors}",
        )
        table.add_row(
            f"current {self._qps:8.1f} QPS",
            f"running p99 {p99}",
            Text("(latency from scheduled time)", style="dim"),
        )
        self._live.update(Group(Text(self.title, style="bold"), table), refresh=True)
