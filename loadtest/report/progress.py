"""Progress of a search that runs for minutes (find-peak, sweep): the budget used and left, the
stage running now (calibration, which probe at which rate), probes done, the best so far, and the
current probe's own bar and counts; and of a series of plays (mix, compare: PlaysProgress): the
play running now and its time.

It refreshes once a second from rich's refresh thread, because between probes (calibration,
reconnects) nothing else ticks; one small render a second does not compete with the issuer.
When the console is not a terminal it shows nothing, and the caller's plain lines (one per probe)
are the whole record, as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from loadtest.core.records import Records
from loadtest.core.units import s_to_ns
from loadtest.engine.selfmeasure import Progress
from loadtest.report.live import RunWatcher, bar

REFRESHES_PER_SECOND = 1


class _LiveDisplay:
    """What both progress displays share: their title, clock and stage, and a Live display of
    `render()` from `__enter__` to `__exit__`, shown only when enabled on a terminal."""

    def __init__(
        self, console: Console, title: str, enabled: bool, clock: Callable[[], float]
    ) -> None:
        self.console = console
        self.title = title
        self.enabled = enabled and console.is_terminal
        self.clock = clock
        self._started = clock()
        self._stage = "starting"
        self._live: Live | None = None

    def render(self) -> RenderableType:
        raise NotImplementedError

    def _show(self) -> None:
        """Starts the Live display (when enabled), redrawn REFRESHES_PER_SECOND times a second."""
        if self.enabled:
            self._live = Live(
                console=self.console,
                get_renderable=self.render,
                refresh_per_second=REFRESHES_PER_SECOND,
                transient=False,
            )
            self._live.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None


class BudgetProgress(_LiveDisplay):
    """The whole search's progress; `stage` and `probe_done` are called by the search's
    callbacks, `tick` by the probe's runner."""

    def __init__(
        self,
        console: Console,
        budget_s: float,
        title: str,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(console, title, enabled, clock)
        self.budget_s = budget_s
        self._probes = 0
        self._best = "none yet"
        self._best_qps = -1.0
        self._watcher: RunWatcher | None = None
        self._run: RenderableType | None = None
        self._point = ""  # a sweep's point being measured ("" for find-peak)

    def __enter__(self) -> BudgetProgress:
        self._started = self.clock()
        self._show()
        return self

    def stage(self, text: str, span_s: float | None = None) -> None:
        """A new stage starts: its label, and how long it is expected to run (for its own bar)."""
        self._stage = text
        self._watcher = RunWatcher(s_to_ns(span_s or 0))
        self._run = None

    def probe_done(self, valid_qps: float | None = None, label: str = "") -> None:
        """One probe finished; `valid_qps` (with its label) when it counts towards the best, which
        is the highest such rate so far."""
        self._probes += 1
        if valid_qps is not None and valid_qps > self._best_qps:
            self._best_qps, self._best = valid_qps, label

    def point(self, text: str) -> None:
        """A sweep's new point (e.g. 'point 3 (≤ 40 of a 720 grid): instances=2 ...')."""
        self._point = text

    def best(self, label: str) -> None:
        """Set the best-so-far line directly (a sweep's best point, ranked by its own rule)."""
        self._best = label

    def tick(self, data: Records | Progress, now_ns: int) -> None:
        """The current probe's runner tick: its own bar and counts under the budget's."""
        if self._live is None or self._watcher is None:
            return
        self._run = self._watcher.lines(data, now_ns)

    def render(self) -> RenderableType:
        used = min(self.clock() - self._started, self.budget_s)
        budget = bar(used, self.budget_s) + Text(
            f"  budget {used:5.0f} / {self.budget_s:g} s used  {self.budget_s - used:5.0f} s left"
            f"  probes done {self._probes}"
        )
        parts: list[RenderableType] = [
            Text(self.title, style="bold"),
            budget,
        ]
        if self._point:
            parts.append(Text(self._point))
        parts.append(Text(f"now: {self._stage}"))
        if self._run is not None:
            parts.append(self._run)
        parts.append(Text(f"best so far: {self._best}"))
        return Group(*parts)


class PlaysProgress(_LiveDisplay):
    """A series of plays that runs for minutes (mix: each entry alone, then together; compare:
    each target at each rate): the time used, the play running now (the caller's own line for
    it, given to `stage`) and its time against its minimum duration. Refreshed once a second
    like BudgetProgress; shows nothing unless enabled and the console is a terminal."""

    def __init__(
        self,
        console: Console,
        span_s: float,
        title: str,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(console, title, enabled, clock)
        self.span_s = span_s
        self._stage_started = self._started

    def __enter__(self) -> PlaysProgress:
        self._started = self._stage_started = self.clock()
        self._show()
        return self

    def stage(self, text: str) -> None:
        """A new play (or a calibration before one) starts."""
        self._stage, self._stage_started = text, self.clock()

    def render(self) -> RenderableType:
        now = self.clock()
        played = now - self._stage_started
        return Group(
            Text(self.title, style="bold"),
            Text(f"{now - self._started:5.0f} s so far"),
            Text(f"now: {self._stage}"),
            bar(min(played, self.span_s), self.span_s)
            + Text(f"  {played:5.0f} s of ≥ {self.span_s:g} s"),
        )
