"""A streamed run's token distributions, read from the best data its result file has, for the
HTML report's token figures (token_figures.py).

Per figure, best first (curves.curve_of):
- **per-query records** (`--records`): TTFT from the scheduled time and from the send, and TPOT,
  exact at every plotted percentile (rules/tokens.per_query, the rows the summary is taken over);
  each query's tokens per response; completed tokens per second over time;
- **HDR histograms** in result.json's `client.hdr`: TTFT from the scheduled time
  (`first_part_from_scheduled`) and the gaps between responses (`part_gap`: the records keep no
  per-response times, so the inter-chunk latency, ITL, is never exact);
- **the printed percentiles** of result.json's `tokens` object (p50 … p99.9): a coarse outline.

Tokens per second over time credits each query's n_tokens to the second in which its answer
completed: the records hold one count per query, not the time each token arrived (vLLM's
per-second output-token buckets place each chunk at its arrival instead; docs/STREAMING.md).
Pure: no I/O, no plotting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from loadtest.core.records import Records
from loadtest.core.units import NS_PER_S
from loadtest.engine.selfmeasure import FIRST_PART, PART_GAP
from loadtest.report.curves import PercentileCurve, curve_of
from loadtest.report.html_blocks import obj
from loadtest.report.resultfile import ResultFile
from loadtest.rules.tokens import per_query

CREDITED_AT_COMPLETION = (
    "each query's n_tokens credited in the second its answer completed (the records keep one "
    "count per query, not each token's arrival)"
)


@dataclass(frozen=True, eq=False)
class TokensPerSecond:
    """Completed tokens per time bucket, buckets from the first due time (t = 0)."""

    bucket_ns: int
    tokens: np.ndarray  # int64, tokens of the queries completing in each bucket

    @property
    def centres_s(self) -> np.ndarray:
        """Each bucket's midpoint, seconds from the first due time."""
        return (np.arange(len(self.tokens)) + 0.5) * self.bucket_ns / NS_PER_S

    @property
    def per_s(self) -> np.ndarray:
        return self.tokens * (NS_PER_S / self.bucket_ns)


def tokens_per_second(records: Records, bucket_ns: int = NS_PER_S) -> TokensPerSecond:
    """The successful streamed queries' tokens, summed by the bucket of their completion."""
    q = per_query(records)
    if not len(q.tokens):
        return TokensPerSecond(bucket_ns, np.zeros(0, np.int64))
    bucket = q.completed // bucket_ns
    summed = np.bincount(bucket, weights=q.tokens, minlength=int(bucket.max()) + 1)
    return TokensPerSecond(bucket_ns, np.rint(summed).astype(np.int64))


@dataclass(frozen=True, eq=False)
class TokenSeries:
    """What the token figures draw for one streamed run."""

    ttft: PercentileCurve  # from the scheduled time
    ttft_from_send: PercentileCurve
    tpot: PercentileCurve  # per query, n_tokens > 1
    itl: PercentileCurve | None  # None: no merged gap histogram (e.g. a single-stream run)
    tokens_per_response: np.ndarray | None  # per query n_tokens / responses; None: no records
    tokens_per_s: TokensPerSecond | None  # None: no records
    completed_tokens_per_s: float | None  # Σ n_tokens / the last completion (LoadGen)
    token_source: str


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def token_series(run: ResultFile) -> TokenSeries | None:
    """The run's token distributions; None when it has no `tokens` object (nothing streamed)."""
    tokens = obj(run.data.get("tokens"))
    if not tokens:
        return None
    hdr = obj(obj(run.data.get("client")).get("hdr"))
    records = run.records()
    q = per_query(records) if records is not None else None
    if q is not None and not len(q.tokens):
        q = None  # records written, but none of this file's rows streamed: use the figures
    itl = curve_of(None, hdr.get(PART_GAP), tokens.get("itl"))
    return TokenSeries(
        ttft=curve_of(q.ttft if q else None, hdr.get(FIRST_PART), tokens.get("ttft")),
        ttft_from_send=curve_of(
            q.ttft_from_send if q else None, None, tokens.get("ttft_from_send")
        ),
        tpot=curve_of(q.tpot if q else None, None, tokens.get("tpot")),
        itl=itl if itl.count else None,
        tokens_per_response=q.tokens / np.maximum(q.chunks, 1) if q else None,
        tokens_per_s=tokens_per_second(records) if q and records is not None else None,
        completed_tokens_per_s=_number(tokens.get("completed_tokens_per_s")),
        token_source=str(tokens.get("token_source", "")),
    )
