"""The sessions of a multi-turn run: their turns' prompts and output lengths, and the filler that
stands for an earlier answer in the conversation carried by the next turn.

Two sources:
- a ShareGPT file (--input-data): one session per conversation, every human turn in order, each
  turn's max_tokens the token count of the gpt answer after it (as the one-turn reader sizes
  it) unless --output-tokens draws them; sessions are taken in file order, cycling when more
  are asked for than the file holds;
- synthetic (--turns LAW): each session's turn count from the law, each turn's prompt of
  --input-tokens tokens and its max_tokens from --output-tokens, rendered by the run's tokenizer.

Seeded from the run's sample seed with streams of their own, so every run with one seed sends
the same text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from loadtest.core.lengths import LengthLaw
from loadtest.core.prompts import PromptSettings
from loadtest.core.sessions import SessionPlan, Turn
from loadtest.engine.prompts.files import read_conversations
from loadtest.engine.prompts.render import render_texts
from loadtest.engine.prompts.tokenizer import PromptTokenizer
from loadtest.errors import SettingsError

TURNS_STREAM = 0x5455524E  # "TURN": turns per synthetic session
SESSION_INPUT_STREAM = 0x53494E  # "SIN": each synthetic turn's prompt length
SESSION_OUTPUT_STREAM = 0x534F5554  # "SOUT": each turn's max_tokens
ANSWER_STREAM = 0x414E53  # "ANS": the filler standing for an earlier answer
MAX_SESSION_TURNS = 1_000


def _stream(seed: int, key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64([seed, key]))


def _synthetic(
    count: int, turns: LengthLaw, settings: PromptSettings, tokenizer: PromptTokenizer, seed: int
) -> SessionPlan:
    if settings.input_tokens is None or settings.output_tokens is None:
        raise SettingsError(
            "--turns: synthetic sessions need --input-tokens and --output-tokens (each turn's "
            "prompt and answer lengths)"
        )
    per_session = turns.draw(count, _stream(seed, TURNS_STREAM))
    if int(per_session.max()) > MAX_SESSION_TURNS:
        raise SettingsError(f"--turns {turns.spec}: over {MAX_SESSION_TURNS} turns in a session")
    total = int(per_session.sum())
    inputs = settings.input_tokens.draw(total, _stream(seed, SESSION_INPUT_STREAM))
    if int(inputs.min()) <= tokenizer.specials:
        raise SettingsError(
            f"--input-tokens {settings.input_tokens.spec}: a prompt needs at least one token "
            f"beside the {tokenizer.specials} special tokens the tokenizer adds"
        )
    outputs = settings.output_tokens.draw(total, _stream(seed, SESSION_OUTPUT_STREAM))
    texts = render_texts(tokenizer, inputs, seed)
    sessions = []
    at = 0
    for n in per_session.tolist():
        sessions.append(tuple(Turn(texts[k], int(outputs[k])) for k in range(at, at + int(n))))
        at += int(n)
    source = (
        f"{count} synthetic sessions: turns {turns.describe()}, each turn's prompt "
        f"{settings.input_tokens.describe()} tokens, max_tokens {settings.output_tokens.describe()}"
    )
    return SessionPlan(tuple(sessions), source, tokenizer.name)


def _from_file(
    path: Path, count: int, settings: PromptSettings, tokenizer: PromptTokenizer, seed: int
) -> SessionPlan:
    read = read_conversations(path)
    chosen = [read.conversations[k % len(read.conversations)] for k in range(count)]
    total = sum(len(c) for c in chosen)
    if settings.output_tokens is not None:
        outputs = settings.output_tokens.draw(total, _stream(seed, SESSION_OUTPUT_STREAM))
        how = f"max_tokens {settings.output_tokens.describe()} (--output-tokens)"
    else:
        answers = [e.answer or "" for c in chosen for e in c]
        outputs = np.maximum(tokenizer.counts(answers) - tokenizer.specials, 1)
        how = "each turn's max_tokens = the gpt answer after it, in tokens"
    sessions = []
    at = 0
    for conversation in chosen:
        sessions.append(
            tuple(Turn(e.text, int(outputs[at + k])) for k, e in enumerate(conversation))
        )
        at += len(conversation)
    notes = [
        f"{path.name} (sharegpt): {count} sessions from {len(read.conversations)} "
        f"conversations, every human turn in order; {how}"
    ]
    if count > len(read.conversations):
        notes.append("conversations reused in file order")
    if read.skipped:
        notes.append(f"{read.skipped} conversations skipped (no human turn with a gpt answer)")
    if read.unanswered:
        notes.append(f"{read.unanswered} human turns without a gpt answer after them dropped")
    return SessionPlan(tuple(sessions), "; ".join(notes), tokenizer.name)


def session_plan(
    count: int,
    turns: LengthLaw | None,
    settings: PromptSettings,
    input_data: Path | None,
    tokenizer: PromptTokenizer,
    seed: int,
) -> SessionPlan:
    """`count` sessions from a ShareGPT file or the --turns law (exactly one of them)."""
    if settings.shared_prefix or settings.trace is not None:
        raise SettingsError("--shared-prefix: not for sessions (their history is the prefix)")
    if input_data is not None:
        if turns is not None:
            raise SettingsError("--turns: not with --input-data, whose conversations give turns")
        if settings.input_tokens is not None:
            raise SettingsError("--input-tokens: not with --input-data, whose prompts are given")
        if settings.input_format not in (None, "sharegpt"):
            raise SettingsError("--input-format: sessions read ShareGPT conversations only")
        return _from_file(input_data, count, settings, tokenizer, seed)
    if turns is None:
        raise SettingsError("sessions need --turns LAW (synthetic) or --input-data a ShareGPT file")
    return _synthetic(count, turns, settings, tokenizer, seed)


class AnswerFiller:
    """The text standing for an earlier answer of n tokens (core/sessions.ANSWER_PLACEHOLDER):
    seeded units of the run's tokenizer, one stream per (session, turn), so a rerun with the
    same seed carries the same history when the server answers with the same counts."""

    def __init__(self, tokenizer: PromptTokenizer, seed: int) -> None:
        self.tokenizer = tokenizer
        self.seed = seed

    def text(self, session: int, turn: int, tokens: int) -> str:
        rng = np.random.Generator(np.random.PCG64([self.seed, ANSWER_STREAM, session, turn]))
        total = max(tokens, 0) + self.tokenizer.specials
        units = self.tokenizer.units(max(tokens, 0), rng)
        return self.tokenizer.fit(units, total, rng) if tokens > 0 else ""
