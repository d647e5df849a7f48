"""Requested against achieved output length: each streamed answer's token count beside the
max_tokens its request carried.

A server stops an answer early at an end-of-sequence token or when it truncates it (a context
limit, a cap of its own); an answer longer than max_tokens is a server bug. MLPerf pins the
generation length and forbids truncating output tokens (inference_rules.adoc, the LLM
`max_new_tokens` caps and the FAQ; docs/STREAMING.md quotes them), and its compliance TEST06
checks that the reported token count equals the output's length: a benchmark whose answers are
shorter than asked measures less work than it claims. With `ignore_eos` asked, the server was
told to run to max_tokens, so a shorter answer is the server not honouring it.

**Mismatch**: a successful streamed query whose request carried max_tokens and whose server
count of output tokens (rules/tokens.query_tokens' server count; never the response-count
stand-in, which counts responses, not tokens) differs from it. Queries without either are not
compared and are counted apart. Pure: arrays in, figures out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from loadtest.core.records import NO_COUNT, Records

NO_MAX_TOKENS = -1  # a sample whose request carried no max_tokens (engine/prompts' NO_LENGTH)

MISMATCH_DEFINITION = (
    "among the successful streamed queries whose request carried max_tokens and whose server "
    "reported a token count, the share whose count differs from max_tokens (shorter: an "
    "end-of-sequence token or truncation; longer: the server overran max_tokens); queries "
    "without either are not compared"
)
SHORTER_WITH_IGNORE_EOS = (
    "ignore_eos was asked, so the server was told to generate max_tokens: a shorter answer is the "
    "server not honouring it (or truncating)"
)
SHORTER_WITHOUT_IGNORE_EOS = (
    "ignore_eos was not asked: a shorter answer may be the model's end-of-sequence token or "
    "truncation; MLPerf forbids truncation"
)


@dataclass(frozen=True)
class OutputLengths:
    """How the answers' lengths compare with the max_tokens asked (tokens)."""

    compared: int
    shorter: int
    longer: int
    not_compared: int  # successful streamed queries without max_tokens or a server count
    requested_tokens: int  # Σ max_tokens over the compared queries
    achieved_tokens: int  # Σ server count over the same queries
    ignore_eos: bool

    @property
    def mismatched(self) -> int:
        return self.shorter + self.longer

    @property
    def mismatch_share(self) -> float | None:
        return self.mismatched / self.compared if self.compared else None

    def text(self) -> str:
        """One terminal line: the counts and what a shortfall means here."""
        if not self.compared:
            return (
                f"output length: not compared ({self.not_compared} answers without max_tokens "
                "in the request or a server token count)"
            )
        share = self.mismatch_share or 0.0
        meaning = SHORTER_WITH_IGNORE_EOS if self.ignore_eos else SHORTER_WITHOUT_IGNORE_EOS
        apart = f"; {self.not_compared} not compared" if self.not_compared else ""
        return (
            f"output length vs max_tokens: {self.mismatched:,} of {self.compared:,} answers differ "
            f"({share * 100:.2f} %: {self.shorter:,} shorter, {self.longer:,} longer; "
            f"{self.achieved_tokens:,} tokens of {self.requested_tokens:,} asked{apart})"
            + (f"; {meaning}" if self.shorter else "")
            + ("; longer than max_tokens is a server bug" if self.longer else "")
        )

    def to_json(self) -> dict[str, Any]:
        figures = asdict(self)
        figures["mismatched"] = self.mismatched
        figures["mismatch_share"] = self.mismatch_share
        figures["definition"] = MISMATCH_DEFINITION
        figures["shorter_means"] = (
            SHORTER_WITH_IGNORE_EOS if self.ignore_eos else SHORTER_WITHOUT_IGNORE_EOS
        )
        return figures


def output_lengths(
    records: Records, max_tokens: np.ndarray, ignore_eos: bool = False
) -> OutputLengths | None:
    """The comparison over a run's successful streamed queries; `max_tokens` per sample of the
    library (NO_MAX_TOKENS: none). None when nothing streamed or a query held several samples
    (one count per query cannot be split between them)."""
    answered = records.ok & records.streamed
    if not answered.any() or records.samples_per_query != 1:
        return None
    asked = max_tokens[records.sample_index[answered]]
    counted = records.final_count[answered]
    known = (asked != NO_MAX_TOKENS) & (counted != NO_COUNT)
    asked, counted = asked[known], counted[known]
    return OutputLengths(
        compared=int(known.sum()),
        shorter=int((counted < asked).sum()),
        longer=int((counted > asked).sum()),
        not_compared=int((~known).sum()),
        requested_tokens=int(asked.sum()),
        achieved_tokens=int(counted.sum()),
        ignore_eos=ignore_eos,
    )
