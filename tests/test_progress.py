"""The live progress displays: what they show on a terminal, that they stay silent elsewhere, and
that drawing them does not make the issuer fall behind."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from loadtest.core.records import Records, Status
from loadtest.core.settings import NS_PER_S, ServerSettings
from loadtest.engine import timing
from loadtest.engine.selfmeasure import Progress, ProgressTracker
from loadtest.report.live import LiveView
from loadtest.report.progress import BudgetProgress
from loadtest.scenarios.mlperf.interpret import interpret_server
from loadtest.scenarios.mlperf.play import run_server
from loadtest.targets.fake import FAKE_MODEL, FakeTarget, ServiceLaw

MS = 1_000_000


def terminal() -> tuple[Console, io.StringIO]:
    screen = io.StringIO()
    return Console(file=screen, force_terminal=True, width=200), screen


def progress(issued: int, completed: int, errors: int = 0) -> Progress:
    recent = np.arange(1, completed + 1, dtype=np.int64) * 10_000  # 0.01 ms steps
    return Progress(issued=issued, completed=completed, errors=errors, recent_ns=recent)


def test_run_view_shows_time_left_counts_and_running_p99():
    console, screen = terminal()
    with LiveView(console, 10 * NS_PER_S, "server scenario against fake") as view:
        view.tick(progress(1000, 990, errors=3), 4 * NS_PER_S)
    shown = screen.getvalue()
    assert "server scenario against fake" in shown
    assert "elapsed    4.0 s" in shown and "left   6.0 s" in shown
    assert "issued 1000" in shown and "completed 990" in shown
    assert "in flight 10" in shown and "errors 3" in shown
    assert "running p99 9.81 ms" in shown  # element 980 (0-based) of 0.01..9.90 ms
    assert "latency from scheduled time" in shown


def test_run_view_says_draining_after_its_span():
    console, screen = terminal()
    with LiveView(console, 2 * NS_PER_S, "t") as view:
        view.tick(progress(10, 8), 3 * NS_PER_S)
    assert "draining" in screen.getvalue()


def test_views_are_silent_when_not_a_terminal():
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=False)
    with LiveView(console, NS_PER_S, "run") as view:
        view.tick(progress(5, 5), NS_PER_S // 2)
    with BudgetProgress(console, 60, "find-peak") as budget:
        budget.stage("probe 1 at 10.0 QPS (Poisson)", 5)
        budget.tick(progress(5, 5), NS_PER_S)
        budget.probe_done(10.0, "VALID at 10.0 QPS")
    assert screen.getvalue() == ""


def test_budget_view_counts_probes_and_keeps_the_highest_valid_rate():
    console, _ = terminal()
    now = [100.0]
    budget = BudgetProgress(console, 180, "find-peak against fake", clock=lambda: now[0])
    with budget:
        budget.stage("calibration: closed-loop throughput", 3)
        now[0] += 45
        budget.probe_done(800.0, "VALID at 800.0 QPS")
        budget.probe_done(None)  # an INVALID probe leaves the best alone
        budget.probe_done(600.0, "VALID at 600.0 QPS")  # lower: not the best
        budget.stage("probe 4 at 900.0 QPS (Poisson)", 10)
        budget.tick(progress(200, 190), 2 * NS_PER_S)
        capture = Console(file=io.StringIO(), width=200)
        capture.print(budget.render())
        shown = capture.file.getvalue()  # type: ignore[attr-defined]
    assert "budget    45 / 180 s used" in shown and "135 s left" in shown
    assert "probes done 3" in shown
    assert "now: probe 4 at 900.0 QPS (Poisson)" in shown
    assert "issued 200" in shown and "left   8.0 s" in shown
    assert "best so far: VALID at 800.0 QPS" in shown


def _kept_up(on_tick_view: LiveView | None) -> tuple[bool, float]:
    """A 2 s Poisson run at 400 QPS on a fast fake; (client kept up, send-lag p99 ms)."""
    settings = ServerSettings(qps=400, target_latency_ns=50 * MS, min_duration_ns=2 * NS_PER_S)

    async def go():
        target = FakeTarget(ServiceLaw("constant", 1 * MS), servers=16)
        await target.open()
        tick = on_tick_view.tick if on_tick_view is not None else None
        return await run_server(target, FAKE_MODEL, 8, settings, NS_PER_S, on_tick=tick)

    measurement = timing.run(go(), "precise")  # the loop `loadtest server` plays on
    summary, _ = interpret_server(settings, measurement.outcome)
    return summary.client_kept_up, summary.send_lag.p99_ns / 1e6


@pytest.mark.solo
def test_drawing_the_run_view_does_not_make_the_issuer_fall_behind():
    """The same schedule without and then with the view drawing on a terminal. A pair where the
    issuer fell behind even without the view says nothing about the view (a busy machine), so up
    to three pairs are tried; the view must keep up in a pair where the bare run did."""
    pairs: list[tuple[tuple[bool, float], tuple[bool, float]]] = []
    for _ in range(3):
        without = _kept_up(None)
        console, screen = terminal()
        with LiveView(console, 2 * NS_PER_S, "server against fake") as view:
            with_view = _kept_up(view)
        assert screen.getvalue().count("running p99") >= 3, "the view did not draw during the run"
        pairs.append((without, with_view))
        if without[0] and with_view[0]:
            return
    comparable = [pair for pair in pairs if pair[0][0]]
    lags = [(f"{a[1]:.3f}", f"{b[1]:.3f}") for a, b in pairs]
    assert comparable, f"the issuer fell behind even without the view: send-lag p99 ms {lags}"
    raise AssertionError(
        f"with the view drawing the issuer fell behind; p99 ms (without, with) {lags}"
    )


def test_tracker_counts_what_a_full_pass_counts_while_reading_only_new_rows():
    """Rows are issued in order and finish out of order; after every step the tracker agrees
    with a full pass over the table, and rows it has settled are never read again."""
    rng = np.random.default_rng(7)
    n = 5000
    records = Records(scheduled_ns=np.arange(n, dtype=np.int64) * 1000, sample_index=np.zeros(n))
    tracker = ProgressTracker(window=300)
    issued = 0
    for _ in range(40):
        new = int(rng.integers(0, 200))
        records.issued_ns[issued : issued + new] = records.scheduled_ns[issued : issued + new] + 5
        issued = min(n, issued + new)
        open_rows = np.flatnonzero((records.status == Status.PENDING) & records.issued)
        for i in rng.choice(open_rows, size=min(len(open_rows), 150), replace=False):
            records.completed_ns[i] = records.issued_ns[i] + int(rng.integers(1, 10**6))
            records.status[i] = Status.OK if rng.random() > 0.05 else Status.ERROR
        got, full = tracker.update(records), Progress.of(records, window=n)
        assert (got.issued, got.completed, got.errors) == (full.issued, full.completed, full.errors)
        # The recent window: rows issued last, successful ones only.
        window = slice(max(0, issued - 300), issued)
        ok = records.status[window] == Status.OK
        expected = records.completed_ns[window][ok] - records.scheduled_ns[window][ok]
        assert np.array_equal(got.recent_ns, expected)
    # Everything settled so far lies below the first still-pending issued row.
    pending = np.flatnonzero((records.status == Status.PENDING) & records.issued)
    assert tracker._settled == (pending[0] if len(pending) else issued)
