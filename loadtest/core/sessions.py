"""Multi-turn sessions: a conversation of N turns, each turn's request carrying the conversation
so far (`loadtest sessions`, docs/STREAMING.md "Multi-turn sessions").

The vocabulary only: the think-time law (`--think-time`, in ms, seeded), one planned session
(its turns' prompts and output lengths), and the conversation as a target renders it. Sessions
start on the run's arrival law (one schedule entry per session start); turn k+1 is due at turn
k's completion + a think time, so within a session the turns are closed-loop and each turn's
latency origin is its due time. Pure: the caller hands in the seeded generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from loadtest.errors import SettingsError

NS_PER_MS = 1_000_000
MAX_THINK_MS = 3_600_000.0  # one hour between two turns: beyond any benchmark's run
THINK_KINDS = {
    "fixed": "fixed:MS",
    "uniform": "uniform:LO:HI",
    "exponential": "exponential:MEAN",
    "lognormal": "lognormal:MEAN:SD",
}
THINK_CHOICES = ", ".join(THINK_KINDS.values())
USER = "user"
ASSISTANT = "assistant"
# What an earlier answer is carried as, in words for every output: the targets do not keep
# streamed text, so turn k+1 carries a seeded filler of the answer's token count instead.
ANSWER_PLACEHOLDER = (
    "earlier answers carried as placeholders: seeded filler text of each answer's token count "
    "(the server's final count, else its parts), not the text the server streamed"
)
TURN_ORIGIN = (
    "turn 1 from its scheduled session start; turn k+1 from its due time = turn k's completion "
    "+ think time (closed loop within a session)"
)


@dataclass(frozen=True)
class Message:
    """One message of a conversation: its role ("user" or "assistant") and its text."""

    role: str
    text: str


Conversation = tuple[Message, ...]


def conversation_text(conversation: Sequence[Message]) -> str:
    """A conversation as one prompt, for an API without roles (completions, generate_stream):
    the messages' texts in order, a blank line between them (every word kept, none added)."""
    return "\n\n".join(m.text for m in conversation)


@dataclass(frozen=True)
class ThinkTime:
    """The pause between an answer's end and the next turn's due time: `kind` (a THINK_KINDS
    key) and its two numbers in ms (`b` unused by fixed and exponential)."""

    kind: str
    a: float
    b: float = 0.0

    def draw_ns(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """`count` think times (int64 ns, each in [0, MAX_THINK_MS])."""
        if self.kind == "fixed":
            values = np.full(count, self.a)
        elif self.kind == "uniform":
            values = rng.uniform(self.a, self.b, size=count)
        elif self.kind == "exponential":
            values = rng.exponential(self.a, size=count) if self.a > 0 else np.zeros(count)
        else:
            sigma2 = math.log1p((self.b / self.a) ** 2)
            values = rng.lognormal(math.log(self.a) - sigma2 / 2, math.sqrt(sigma2), size=count)
        return np.rint(np.clip(values, 0.0, MAX_THINK_MS) * NS_PER_MS).astype(np.int64)

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"fixed {self.a:g} ms"
        if self.kind == "uniform":
            return f"uniform on [{self.a:g}, {self.b:g}] ms"
        if self.kind == "exponential":
            return f"exponential, mean {self.a:g} ms"
        return f"lognormal, mean {self.a:g} ms SD {self.b:g} ms (of the times themselves)"


def _ms(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"--think-time {spec!r}: {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise SettingsError(f"--think-time {spec!r}: {text!r} is not a finite number ≥ 0")
    if value > MAX_THINK_MS:
        raise SettingsError(f"--think-time {spec!r}: {text!r} ms is over one hour")
    return value


def think_time_named(text: str) -> ThinkTime:
    """The law `text` names ("fixed:500", "uniform:0:2000", "exponential:1000",
    "lognormal:1000:500"), in ms, or one clear SettingsError."""
    spec = text.strip().lower()
    kind, _, rest = spec.partition(":")
    if kind not in THINK_KINDS:
        raise SettingsError(f"unknown --think-time law {text!r}: choose one of {THINK_CHOICES}")
    parts = rest.split(":") if rest else []
    wanted = 2 if kind in ("uniform", "lognormal") else 1
    if len(parts) != wanted:
        raise SettingsError(f"--think-time {text!r}: write it {THINK_KINDS[kind]} (ms)")
    numbers = [_ms(p.strip(), text) for p in parts]
    if kind == "uniform" and numbers[0] > numbers[1]:
        raise SettingsError(f"--think-time {text!r}: LO {parts[0]} is above HI {parts[1]}")
    if kind == "lognormal" and numbers[0] <= 0:
        raise SettingsError(f"--think-time {text!r}: MEAN must be > 0")
    return ThinkTime(kind, *numbers)


@dataclass(frozen=True)
class Turn:
    """One planned turn: the user's prompt and the answer's max_tokens."""

    prompt: str
    max_tokens: int


@dataclass(frozen=True)
class SessionPlan:
    """Every session's turns in order, with where they came from and what counted them."""

    sessions: tuple[tuple[Turn, ...], ...]
    source: str
    tokenizer: str

    @property
    def turns(self) -> int:
        return sum(len(s) for s in self.sessions)
