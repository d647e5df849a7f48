"""A multi-turn run's figures as terminal tables and as JSON (`loadtest sessions`).

Every figure names what it is: the sessions' outcome counts (never-sent turns said as such),
session duration (from the scheduled start to the last answer's end), per turn index TTFT from
the turn's due time, the percentile method, and how earlier answers were carried.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from rich.markup import escape
from rich.table import Table

from loadtest.core.sessions import ANSWER_PLACEHOLDER, TURN_ORIGIN
from loadtest.core.units import ms_cell
from loadtest.rules.sessions import SessionFigures, Spread

PERCENTILES = "exact percentiles, LoadGen's sorted[floor(n·p)]"


def _ms(value: int | None) -> str:
    return "-" if value is None else ms_cell(value)


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def outcome_table(figures: SessionFigures) -> Table:
    """How the sessions and their turns ended."""
    table = Table(title="Sessions", title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    rows = (
        ("sessions", figures.sessions),
        ("completed (every turn ok)", figures.completed),
        ("failed (a turn failed; later turns never sent)", figures.failed),
        ("unfinished (stopped before their last turn)", figures.unfinished),
        ("turns planned", figures.turns_planned),
        ("turns sent", figures.turns_sent),
        ("turns ok", figures.turns_ok),
        ("turns failed", figures.turns_failed),
        ("turns never sent (their session had failed)", figures.never_sent),
        ("turns not sent (run stopped)", figures.not_sent_stopped),
    )
    for label, value in rows:
        table.add_row(label, f"{value:,}")
    return table


def _spread_row(table: Table, label: str, spread: Spread, cell: Any = _ms) -> None:
    table.add_row(label, f"{spread.count:,}", cell(spread.p50_ns), cell(spread.p99_ns))


def timing_table(figures: SessionFigures) -> Table:
    """Session duration, turns completed per session and TTFT by turn index."""
    table = Table(title=escape(f"Per session and per turn ({PERCENTILES})"), title_justify="left")
    table.add_column("figure")
    table.add_column("n", justify="right")
    table.add_column("p50", justify="right")
    table.add_column("p99", justify="right")
    _spread_row(
        table,
        "session duration ms (scheduled start -> last answer's end; completed)",
        figures.duration,
    )
    _spread_row(table, "turns completed per session (count)", figures.turns_completed, _count)
    _spread_row(table, "TTFT ms, every ok turn (from its due time)", figures.ttft)
    for turn in figures.by_turn:
        _spread_row(
            table,
            f"TTFT ms, turn {turn.turn} ({turn.ok:,} ok of {turn.sent:,} sent, "
            f"{turn.planned:,} planned)",
            turn.ttft,
        )
    return table


def notes(think: str, source: str, tokenizer: str) -> list[str]:
    """The lines that say where every figure comes from."""
    return [
        f"sessions: {source}",
        f"tokens counted by: {tokenizer}",
        f"think time: {think}, seeded; latency origin: {TURN_ORIGIN}",
        ANSWER_PLACEHOLDER,
    ]


def as_json(figures: SessionFigures, think: str, source: str, tokenizer: str) -> dict[str, Any]:
    """The figures with their definitions, for a file (times in ns)."""
    return {
        "sessions": asdict(figures),
        "definitions": {
            "latency_origin": TURN_ORIGIN,
            "answers_carried": ANSWER_PLACEHOLDER,
            "percentiles": PERCENTILES,
            "session_duration": "last turn's completion - scheduled session start",
            "think_time": think,
            "source": source,
            "tokenizer": tokenizer,
        },
    }
