"""The per-session figures of a multi-turn run (`loadtest sessions`).

From the turn rows (engine/sessions.py): a session **completed** when every turn succeeded,
**failed** when a turn failed (its later turns were never sent, counted as `never_sent`),
**unfinished** when a stop request ended the run first (its unsent turns `not_sent_stopped`).
Session duration = its last turn's completion − its scheduled start, completed sessions only.
Per turn index (1 = the first turn): TTFT = first response − the turn's due time (turn 1: the
scheduled session start; turn k+1: turn k's completion + think time), successful turns only.
Percentiles are LoadGen's exact `sorted[floor(n·p)]` (rules/stats.py). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loadtest.core.records import NOT_SET_NS, Records, Status
from loadtest.rules.stats import exact_percentile


@dataclass(frozen=True)
class Spread:
    """p50 and p99 (exact, ns) of `count` values; None when there are none."""

    count: int
    p50_ns: int | None
    p99_ns: int | None


def spread(values_ns: np.ndarray) -> Spread:
    if len(values_ns) == 0:
        return Spread(0, None, None)
    ordered = np.sort(values_ns)
    return Spread(len(ordered), exact_percentile(ordered, 0.5), exact_percentile(ordered, 0.99))


@dataclass(frozen=True)
class TurnFigures:
    """One turn index (1-based) over every session that has it."""

    turn: int
    planned: int
    sent: int
    ok: int
    ttft: Spread


@dataclass(frozen=True)
class SessionFigures:
    sessions: int
    completed: int
    failed: int
    unfinished: int
    turns_planned: int
    turns_sent: int
    turns_ok: int
    turns_failed: int
    never_sent: int  # after their session's failed turn
    not_sent_stopped: int  # a stop request came first
    duration: Spread  # completed sessions
    turns_completed: Spread  # successful turns per session, every session (counts, not ns)
    ttft: Spread  # every successful turn
    by_turn: tuple[TurnFigures, ...]


def session_figures(records: Records, session: np.ndarray, turn: np.ndarray) -> SessionFigures:
    """The figures of one run's turn rows (`session`/`turn`: each row's, 0-based)."""
    sessions = int(session.max()) + 1 if len(session) else 0
    ok = records.status == Status.OK
    error = records.status == Status.ERROR
    sent = records.issued_ns != NOT_SET_NS
    failed_session = np.zeros(sessions, dtype=bool)
    failed_session[session[error]] = True
    unsent_session = np.zeros(sessions, dtype=bool)
    unsent_session[session[~sent]] = True
    completed = ~failed_session & ~unsent_session
    unsent = ~sent
    never = unsent & failed_session[session]
    last_done = np.full(sessions, -1, dtype=np.int64)
    np.maximum.at(last_done, session[ok], records.completed_ns[ok])
    first_due = np.full(sessions, -1, dtype=np.int64)
    first = turn == 0
    first_due[session[first]] = records.scheduled_ns[first]
    durations = (last_done - first_due)[completed & (first_due != NOT_SET_NS)]
    ttft_all = records.first_part_ns - records.scheduled_ns
    has_first = ok & (records.first_part_ns != NOT_SET_NS)
    ok_per_session = np.bincount(session[ok], minlength=sessions).astype(np.int64)
    by_turn = []
    for k in range(int(turn.max()) + 1 if len(turn) else 0):
        at = turn == k
        by_turn.append(
            TurnFigures(
                k + 1,
                int(at.sum()),
                int((at & sent).sum()),
                int((at & ok).sum()),
                spread(ttft_all[at & has_first]),
            )
        )
    return SessionFigures(
        sessions=sessions,
        completed=int(completed.sum()),
        failed=int(failed_session.sum()),
        unfinished=int((unsent_session & ~failed_session).sum()),
        turns_planned=len(records),
        turns_sent=int(sent.sum()),
        turns_ok=int(ok.sum()),
        turns_failed=int(error.sum()),
        never_sent=int(never.sum()),
        not_sent_stopped=int((unsent & ~failed_session[session]).sum()),
        duration=spread(durations),
        turns_completed=spread(ok_per_session),
        ttft=spread(ttft_all[has_first]),
        by_turn=tuple(by_turn),
    )
