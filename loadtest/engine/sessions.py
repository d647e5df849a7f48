"""Plays multi-turn sessions against a target that declares `plays_turns`.

Each session starts at its schedule entry (the run's arrival law: one entry per session start)
and sends its turns one after another: turn k+1 is due at turn k's completion + its think time,
and carries the conversation so far (the earlier prompts, and each earlier answer as
`AnswerFiller` text of the answer's token count: core/sessions.ANSWER_PLACEHOLDER). A turn is
never sent before the previous answer has ended. A failed turn ends its session: its later
turns are never sent (left PENDING with no due time, and counted as such by rules/sessions.py).

Records: one row per planned turn, session-major; `scheduled_ns` is the turn's due time (its
latency origin), `issued_ns` the send, `first_part_ns` / `parts` / `final_count` as
engine/parts.py stamps them for any answer in parts. One coroutine per session: sessions are
many fewer than queries, and their turns are closed-loop anyway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from loadtest.core.records import NO_COUNT, NOT_SET_NS, Records, Status
from loadtest.core.sessions import ASSISTANT, USER, Message, SessionPlan
from loadtest.core.target import Target
from loadtest.engine import stopping
from loadtest.engine.parts import PartsLog
from loadtest.errors import SettingsError

AnswerText = Callable[[int, int, int], str]  # (session, turn, tokens) -> the carried text


@dataclass
class SessionRun:
    """A sessions run as measured: the turn rows, which session and turn each row is (0-based),
    each session's scheduled start (ns from the run's start), and why it stopped early ("")."""

    records: Records
    session: np.ndarray
    turn: np.ndarray
    start_ns: np.ndarray
    stopped: str = ""


def _answer_tokens(records: Records, row: int) -> int:
    """The answer's length as carried: the server's final count, else the parts it sent."""
    count = int(records.final_count[row])
    return count if count != NO_COUNT else int(records.parts[row])


class SessionPlayer:
    """One run of `plan` against `target` (opened and prepared with the base samples)."""

    def __init__(
        self,
        target: Target,
        plan: SessionPlan,
        start_ns: np.ndarray,
        sample_index: np.ndarray,
        think_ns: np.ndarray,
        answer_text: AnswerText,
        clock: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        if not target.capabilities.plays_turns:
            raise SettingsError(
                f"{target.description}: plays no sessions (use --protocol openai, openai-chat "
                "or http-stream)"
            )
        counts = [len(s) for s in plan.sessions]
        self.first_row = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        rows = int(sum(counts))
        if len(think_ns) != rows or len(start_ns) != len(counts):
            raise ValueError("one think time per turn and one start per session")
        self.target = target
        self.plan = plan
        self.start_ns = np.asarray(start_ns, dtype=np.int64)
        self.sample_index = np.asarray(sample_index, dtype=np.int32)
        self.think_ns = np.asarray(think_ns, dtype=np.int64)
        self.answer_text = answer_text
        self.clock = clock
        self.records = Records(
            scheduled_ns=np.full(rows, NOT_SET_NS, dtype=np.int64),
            sample_index=np.repeat(self.sample_index, counts),
        )
        self.session = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
        self.turn = np.concatenate([np.arange(n, dtype=np.int32) for n in counts])
        self.log = PartsLog(self.records, clock)
        self._origin = 0

    def _now(self) -> int:
        return self.clock() - self._origin

    async def _until(self, due_ns: int) -> None:
        # asyncio may wake a timer up to its clock's resolution early: never send before due
        while (wait := due_ns - self._now()) > 0:
            await asyncio.sleep(wait / 1e9)

    async def _turn(
        self, row: int, sample: int, conversation: Sequence[Message], out: int
    ) -> str | None:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str | None] = loop.create_future()

        def done(error: str | None) -> None:
            if not answer.done():
                answer.set_result(error)

        records = self.records
        records.issued_ns[row] = self._now()
        self.target.start_turn(sample, tuple(conversation), out, self.log.query(row, done))
        error = await answer
        records.completed_ns[row] = self._now()
        if error is None:
            records.status[row] = Status.OK
        else:
            records.status[row] = Status.ERROR
            records.error_code[row] = records.error_code_for(error)
        return error

    async def _session(self, s: int) -> None:
        due = int(self.start_ns[s])
        conversation: list[Message] = []
        for k, turn in enumerate(self.plan.sessions[s]):
            await self._until(due)
            if stopping.requested():
                return
            row = int(self.first_row[s]) + k
            self.records.scheduled_ns[row] = due
            conversation.append(Message(USER, turn.prompt))
            error = await self._turn(row, int(self.sample_index[s]), conversation, turn.max_tokens)
            if error is not None:
                return  # the session failed: its later turns are never sent
            tokens = _answer_tokens(self.records, row)
            conversation.append(Message(ASSISTANT, self.answer_text(s, k, tokens)))
            due = int(self.records.completed_ns[row]) + int(self.think_ns[row])

    async def run(self) -> SessionRun:
        """Every session played to its end (or until a stop request); then the run's rows."""
        loop = asyncio.get_running_loop()
        self._origin = self.clock()
        self.log.start_ns = self._origin
        with stopping.catching(loop):
            await asyncio.gather(*(self._session(s) for s in range(len(self.plan.sessions))))
        self.log.closed = True
        return SessionRun(
            self.records, self.session, self.turn, self.start_ns, stopping.requested()
        )
