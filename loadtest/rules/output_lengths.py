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
    ignore_eos: bool  # every compared request asked ignore_eos (--ignore-eos or its input)
    shorter_with_ignore_eos: int = 0  # shorter answers whose request asked ignore_eos

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
        meaning = self.shorter_means()
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
        figures["shorter_means"] = self.shorter_means()
        return figures

    def shorter_means(self) -> str:
        """What the shorter answers mean: ignore_eos asked (the server's fault) or not (the
        model's end-of-sequence, or truncation), or each for its share."""
        if self.shorter and 0 < self.shorter_with_ignore_eos < self.shorter:
            return (
                f"{self.shorter_with_ignore_eos:,} of the shorter asked ignore_eos: "
                f"{SHORTER_WITH_IGNORE_EOS}; the others did not: {SHORTER_WITHOUT_IGNORE_EOS}"
            )
        if self.ignore_eos or (self.shorter and self.shorter_with_ignore_eos == self.shorter):
            return SHORTER_WITH_IGNORE_EOS
        return SHORTER_WITHOUT_IGNORE_EOS


def output_lengths(
    records: Records,
    max_tokens: np.ndarray,
    ignore_eos: bool = False,
    sample_ignore_eos: np.ndarray | None = None,
) -> OutputLengths | None:
    """The comparison over a run's successful streamed queries; `max_tokens` per sample of the
    library (NO_MAX_TOKENS: none); `ignore_eos`: every request asked it (the OpenAI targets'
    --ignore-eos); `sample_ignore_eos`: per sample, its own ignore_eos input (Triton's). None
    when nothing streamed or a query held several samples (one count per query cannot be split
    between them)."""
    answered = records.ok & records.streamed
    if not answered.any() or records.samples_per_query != 1:
        return None
    index = records.sample_index[answered]
    asked = max_tokens[index]
    counted = records.final_count[answered]
    known = (asked != NO_MAX_TOKENS) & (counted != NO_COUNT)
    eos_ignored = np.full(len(index), ignore_eos, dtype=bool)
    if sample_ignore_eos is not None:
        eos_ignored |= sample_ignore_eos[index]
    asked, counted, eos_ignored = asked[known], counted[known], eos_ignored[known]
    shorter = counted < asked
    return OutputLengths(
        compared=int(known.sum()),
        shorter=int(shorter.sum()),
        longer=int((counted > asked).sum()),
        not_compared=int((~known).sum()),
        requested_tokens=int(asked.sum()),
        achieved_tokens=int(counted.sum()),
        ignore_eos=bool(len(eos_ignored) and eos_ignored.all()),
        shorter_with_ignore_eos=int((shorter & eos_ignored).sum()),
    )
