"""rules/error_budget.py: the trailing-window error rate behind --abort-on-error-rate."""

from __future__ import annotations

import numpy as np
import pytest

from loadtest.core.records import NOT_SET_NS, Records, Status
from loadtest.rules.error_budget import (
    ErrorRateWindow,
    WindowState,
    first_exceeded,
    first_exceeded_ns,
)

MS = 1_000_000
S = 1_000_000_000


def answers(n: int, fail_from: int) -> Records:
    """n queries due 1 ms apart from 1 ms on, answered 2 ms later; rows from fail_from fail."""
    scheduled = np.arange(1, n + 1, dtype=np.int64) * MS
    records = Records(scheduled_ns=scheduled, sample_index=np.zeros(n, dtype=np.int32))
    records.issued_ns[:] = scheduled
    records.completed_ns[:] = scheduled + 2 * MS
    records.status[:] = Status.OK
    records.status[fail_from:] = Status.ERROR
    return records


def test_window_needs_min_queries_and_a_rate_over_the_limit() -> None:
    window = ErrorRateWindow(max_rate=0.5, window_ns=S, min_queries=4)
    assert not window.add(0, False)  # 1 of 1 failed, but fewer than 4 answers
    assert not window.add(10 * MS, True)
    assert not window.add(20 * MS, False)
    assert not window.add(30 * MS, True)  # 2 of 4 = 50 %: not over 50 %
    assert window.add(40 * MS, False)  # 3 of 5 = 60 %
    assert window.exceeded_at == WindowState(40 * MS, 5, 3)
    assert window.reason() == (
        "error rate 60 % over the last 1 s (3 of 5 answered queries failed) > 50 %"
    )


def test_window_forgets_old_failures() -> None:
    window = ErrorRateWindow(max_rate=0.1, window_ns=S, min_queries=5)
    for i in range(5):
        window.add(i * MS, False)
    assert window.exceeded
    first = window.exceeded_at
    # 2 s later, only successes are in the window; the first crossing is kept
    for i in range(20):
        assert not window.add(2 * S + i * MS, True)
    assert window.state() == WindowState(2 * S + 19 * MS, 20, 0)
    assert window.exceeded_at == first
    # an event at exactly t − window has left: (t − window, t]
    edge = ErrorRateWindow(max_rate=0.0, window_ns=S, min_queries=1)
    edge.add(0, False)
    edge.add(S, True)
    assert edge.state().failures == 0


def test_window_never_moves_backwards() -> None:
    window = ErrorRateWindow(max_rate=0.5, window_ns=S, min_queries=1)
    window.add(5 * S, True)
    window.add(1 * S, False)  # late report of an earlier answer: counts at 5 s
    assert window.state() == WindowState(5 * S, 2, 1)


def test_window_matches_replay_of_records() -> None:
    rng = np.random.default_rng(3)
    for trial in range(30):
        n = int(rng.integers(1, 400))
        records = Records(
            np.sort(rng.integers(0, 5 * S, n)).astype(np.int64), np.zeros(n, dtype=np.int32)
        )
        records.issued_ns[:] = records.scheduled_ns
        records.completed_ns[:] = records.scheduled_ns + rng.integers(0, 200 * MS, n)
        failing = rng.random(n) < rng.uniform(0, 0.6)
        records.status[:] = np.where(failing, Status.ERROR, Status.OK)
        pending = rng.random(n) < 0.05
        records.status[pending] = Status.PENDING
        records.completed_ns[pending] = NOT_SET_NS
        rate, width, least = float(rng.uniform(0, 0.5)), int(rng.integers(1, 3)) * S, 5
        window = ErrorRateWindow(rate, width, least)
        answered = np.flatnonzero(records.completed_ns != NOT_SET_NS)
        order = answered[np.argsort(records.completed_ns[answered], kind="stable")]
        for row in order:
            window.add(int(records.completed_ns[row]), bool(records.status[row] == Status.OK))
        assert window.exceeded_at == first_exceeded(records, rate, width, least), trial
    assert first_exceeded_ns(answers(10, 10), 0.0, S, 1) is None
    # answers 1 ms apart, failing from row 50: at row 54 the 20 ms window holds rows 35..54,
    # 5 of 20 failed = 25 % > 20 % (row 53: 4 of 20 = 20 %, not over)
    bad = answers(100, 50)
    assert first_exceeded_ns(bad, 0.2, 20 * MS, 10) == int(bad.completed_ns[54])


def test_window_arguments() -> None:
    with pytest.raises(ValueError):
        ErrorRateWindow(1.0, S)
    with pytest.raises(ValueError):
        ErrorRateWindow(0.1, 0)
    with pytest.raises(ValueError):
        ErrorRateWindow(0.1, S, min_queries=0)
