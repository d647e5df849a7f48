"""A text run's prompts in figures, and the client's token count against the server's.

The client counts each prompt with the run's tokenizer (one token per whitespace word, or a
Hugging Face tokenizer.json); a server may report its own count of the same prompt (an
OpenAI-compatible server's `usage.prompt_tokens`). The two disagree when the tokenizers differ,
or when the server counts more than the text (a chat template's tokens), which is why users ask
for the rate (inference-perf#580: client and server output counts disagreed for more than half
the requests).

**Mismatch rate**: among the successful queries whose server reported a prompt count, the share
whose count differs from the client's count of the prompt that query sent (any difference, in
either direction). Queries without a server count are not compared and are counted apart. The
server's count is never replaced by the client's, and no figure here feeds the token figures
(rules/tokens.py counts output tokens from the server). Only the input side is compared: the
targets do not keep the streamed text, so the client cannot count an answer's tokens.
Pure: arrays in, figures out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from loadtest.core.records import NO_COUNT, Records

NO_LENGTH = -1  # a sample whose max_tokens no prompt source set (engine/prompts/library.py)
MISMATCH_DEFINITION = (
    "share of the successful queries with a server-reported prompt count (usage.prompt_tokens) "
    "whose count differs from the client tokenizer's count of the prompt sent; queries without a "
    "server count are not compared; the server's count is never replaced by the client's"
)


@dataclass(frozen=True)
class Spread:
    """Min, mean and max of a set of token counts."""

    min: int
    mean: float
    max: int

    @classmethod
    def of(cls, values: np.ndarray) -> Spread | None:
        if not len(values):
            return None
        return cls(int(values.min()), float(values.mean()), int(values.max()))

    def text(self) -> str:
        if self.min == self.max:
            return f"{self.min:,}"
        return f"{self.min:,}-{self.max:,} (mean {self.mean:,.1f})"


@dataclass(frozen=True)
class PromptFigures:
    """The library's prompts and how the server counted the ones sent."""

    source: str  # where the prompts came from, in words
    tokenizer: str  # who counted the client's figures
    samples: int
    input_tokens: Spread | None  # per sample, by `tokenizer`
    max_tokens: Spread | None  # per sample as sent; None when the model takes none
    sent_input_tokens: int  # Σ client counts over the issued queries
    compared: int  # successful queries with a server prompt count
    mismatched: int
    not_reported: int  # successful queries without one
    mean_difference: float | None  # mean of (server − client) over the compared queries

    @property
    def mismatch_rate(self) -> float | None:
        return self.mismatched / self.compared if self.compared else None

    def to_json(self) -> dict[str, Any]:
        figures = asdict(self)
        figures["mismatch_rate"] = self.mismatch_rate
        figures["definitions"] = {
            "input_tokens": f"per sample, counted by the client: {self.tokenizer}",
            "max_tokens": "per sample, the max_tokens each request carries",
            "sent_input_tokens": "Σ of the client's counts over the issued queries",
            "mismatch_rate": MISMATCH_DEFINITION,
            "mean_difference": "mean of (server count − client count) over the compared queries",
        }
        return figures

    def counts_line(self) -> str:
        """The server-against-client comparison in one line (its definition in result.json)."""
        if not self.compared:
            return (
                "server prompt counts: none reported (nothing to compare the client's count with)"
            )
        rate = self.mismatch_rate or 0.0
        return (
            f"server prompt counts (usage.prompt_tokens) ≠ the client's on {self.mismatched:,} of "
            f"{self.compared:,} queries ({rate * 100:.1f} %; mean server − client "
            f"{self.mean_difference or 0:+.2f} tokens)"
            + (f"; {self.not_reported:,} without a server count" if self.not_reported else "")
        )


def prompt_figures(
    records: Records,
    input_tokens: np.ndarray,
    max_tokens: np.ndarray,
    tokenizer: str,
    source: str,
) -> PromptFigures:
    """The figures of a run whose sample k has `input_tokens[k]` prompt tokens (client count)
    and `max_tokens[k]` (NO_LENGTH: none)."""
    samples = records.sample_index.astype(np.int64)
    client = input_tokens[samples]
    answered = records.ok
    reported = answered & (records.prompt_count != NO_COUNT)
    server = records.prompt_count[reported]
    mine = client[reported]
    sent = max_tokens[max_tokens != NO_LENGTH]
    return PromptFigures(
        source=source,
        tokenizer=tokenizer,
        samples=len(input_tokens),
        input_tokens=Spread.of(input_tokens),
        max_tokens=Spread.of(sent),
        sent_input_tokens=int(client[records.issued].sum()),
        compared=int(reported.sum()),
        mismatched=int((server != mine).sum()),
        not_reported=int((answered & ~reported).sum()),
        mean_difference=float((server - mine).mean()) if len(server) else None,
    )
