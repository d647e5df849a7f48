"""LoadGen's token figures of a streamed (LLM) run, and its token-latency verdict.

Read from the per-query columns an answer in parts fills (core/records.py: first_part_ns, parts,
final_count), as MLPerf LoadGen computes them (mlcommons/inference loadgen/loadgen.cc,
logging.cc, results.cc; docs/STREAMING.md quotes the lines):

- TTFT from the **scheduled** time (`FirstTokenComplete`: now − the query's scheduled time), the
  figure the bound is held to; TTFT from the actual send beside it, for comparison;
- TPOT once per query: (end-to-end − TTFT) / (n_tokens − 1), the first token excluded; a query with
  n_tokens ≤ 1 has no TPOT and is an error, as LoadGen's "Number of tokens need to be greater
  than 1";
- percentiles over queries, sorted[floor(n·p)] (rules/stats.py);
- early stopping run on the TTFT array and on the TPOT array, each with its bound (results.cc:
  both must pass), confidence 0.99, tolerance 0;
- completed tokens per second = Σ n_tokens / the last completion's time (t = 0 is the first due
  time, as LoadGen's start);
- tokens per chunk: one streamed response is not one token (a server may send many per response).

n_tokens is the server's count: over Triton, the sum of the `num_output_tokens` of a query's
responses; over an OpenAI-compatible API, `usage.completion_tokens` of the final chunk
(`stream_options.include_usage`). When a server sends none, the response count (the content
chunks, over OpenAI) stands in and `token_source` says so: `TokenCounting` holds each API's pair
of labels, `counting_of` picks it by protocol.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

from loadtest.core.records import NO_COUNT, Records
from loadtest.core.settings import Protocol
from loadtest.core.units import NS_PER_S
from loadtest.rules.stats import (
    LOADGEN_PERCENTILES,
    LatencyStats,
    exact_percentile,
    exact_percentile_with_failures,
    latency_stats,
)
from loadtest.rules.validity import EarlyStopping, server_early_stopping

SERVER_COUNT = "server num_output_tokens (summed over a query's responses)"
RESPONSE_COUNT = "response count (the server sent no num_output_tokens)"
USAGE_COUNT = "server usage (stream_options.include_usage): usage.completion_tokens"
CONTENT_CHUNK_COUNT = "content chunk count (the server sent no usage; one chunk taken as one token)"
TTFT_ORIGIN = "from the scheduled time (LoadGen FirstTokenComplete)"
TTFT_SEND_ORIGIN = "from the actual send"
TPOT_ORIGIN = "per query: (end-to-end − TTFT) / (n_tokens − 1), first token excluded (LoadGen)"


# MLPerf's Server token bounds per model key, (TTFT ms, TPOT ms), at the 99th percentile:
# mlcommons/inference loadgen/mlperf.conf @001712e (`<key>.Server.ttft_latency` / `tpot_latency`,
# `*.Server.target_latency_percentile = 99`); docs/STREAMING.md has the table with its source.
MLPERF_TOKEN_BOUNDS_MS: dict[str, tuple[int, int]] = {
    "llama2-70b": (2000, 200),
    "llama2-70b-interactive": (450, 40),
    "mixtral-8x7b": (2000, 200),
    "llama3_1-405b": (6000, 175),
    "llama3_1-405b-interactive": (4500, 80),
    "llama3_1-8b": (2000, 100),
    "llama3_1-8b-interactive": (500, 30),
    "deepseek-r1": (2000, 80),
    "deepseek-r1-interactive": (1500, 15),
}


@dataclass(frozen=True)
class TokenCounting:
    """Where one API's token counts come from: the server's own count, or the stand-in when a
    server sends none (each label is what result.json and the terminal say)."""

    server: str
    fallback: str


TRITON_COUNTING = TokenCounting(SERVER_COUNT, RESPONSE_COUNT)
OPENAI_COUNTING = TokenCounting(USAGE_COUNT, CONTENT_CHUNK_COUNT)


def counting_of(protocol: Protocol) -> TokenCounting:
    """The labels of a protocol's token counts (Triton's unless it is an OpenAI one)."""
    return OPENAI_COUNTING if protocol.is_openai else TRITON_COUNTING


@dataclass(frozen=True)
class TokenBounds:
    """p99 (or `percentile`) bounds on TTFT and TPOT, ns; 0 = no bound. `source` says whose."""

    ttft_ns: int = 0
    tpot_ns: int = 0
    percentile: float = 0.99
    source: str = ""
    confidence: float = 0.99  # early stopping's (LoadGen: 0.99, tolerance 0)

    @classmethod
    def of_mlperf_model(cls, key: str) -> TokenBounds:
        """MLPerf's bounds for a model key (raises KeyError, naming none, for another key)."""
        ttft_ms, tpot_ms = MLPERF_TOKEN_BOUNDS_MS[key]
        return cls(ttft_ms * 1_000_000, tpot_ms * 1_000_000, 0.99, f"MLPerf {key}, mlperf.conf")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TokenFigures:
    """One streamed run's token figures (ns unless named otherwise)."""

    queries: int  # successful queries whose answer came in parts
    ttft: LatencyStats  # from the scheduled time
    ttft_from_send: LatencyStats
    tpot: LatencyStats  # per query, over queries with n_tokens > 1
    tokens: int  # Σ n_tokens
    token_source: str
    tokens_per_chunk_mean: float  # Σ n_tokens / Σ responses
    tokens_per_chunk_max: int  # the most tokens one query's response carried on average (ceil)
    one_token_answers: int  # successful queries with n_tokens ≤ 1 (LoadGen: an error)
    completed_tokens_per_s: float
    final_completed_ns: int

    def to_json(self) -> dict[str, Any]:
        figures = asdict(self)
        figures["origins"] = {
            "ttft": TTFT_ORIGIN,
            "ttft_from_send": TTFT_SEND_ORIGIN,
            "tpot": TPOT_ORIGIN,
            "tokens": self.token_source,
            "completed_tokens_per_s": "Σ n_tokens / the last completion (from the first due time)",
        }
        return figures


def query_tokens(
    records: Records, counting: TokenCounting = TRITON_COUNTING
) -> tuple[np.ndarray, str]:
    """Each row's token count and where it came from: the server's count where every answered
    query has one, else the response count (a server that sends no count)."""
    counted = records.final_count != NO_COUNT
    answered = records.ok & records.streamed
    if answered.any() and counted[answered].all():
        return records.final_count.astype(np.int64), counting.server
    return records.parts.astype(np.int64), counting.fallback


@dataclass(frozen=True)
class PerQuery:
    """The successful streamed queries' own figures, row by row (ns): what the summaries are taken
    over, and what the report's distributions are drawn from."""

    tokens: np.ndarray
    source: str
    ttft: np.ndarray
    ttft_from_send: np.ndarray
    tpot: np.ndarray  # only the queries with n_tokens > 1
    chunks: np.ndarray
    completed: np.ndarray


def per_query(records: Records, counting: TokenCounting = TRITON_COUNTING) -> PerQuery:
    """Each successful streamed query's tokens, TTFT (both origins), TPOT, responses, completion."""
    kept = records.ok & records.streamed
    tokens, source = query_tokens(records, counting)
    n = tokens[kept]
    first = records.first_part_ns[kept]
    ttft = first - records.scheduled_ns[kept]
    e2e = records.completed_ns[kept] - records.scheduled_ns[kept]
    many = n > 1
    return PerQuery(
        tokens=n,
        source=source,
        ttft=ttft,
        ttft_from_send=first - records.issued_ns[kept],
        tpot=(e2e[many] - ttft[many]) // (n[many] - 1),
        chunks=records.parts[kept].astype(np.int64),
        completed=records.completed_ns[kept],
    )


def token_figures(
    records: Records, counting: TokenCounting = TRITON_COUNTING
) -> TokenFigures | None:
    """The token figures of the successful streamed queries; None when none streamed."""
    q = per_query(records, counting)
    if not len(q.tokens):
        return None
    final = int(q.completed.max())
    total = int(q.tokens.sum())
    per_chunk = np.ceil(q.tokens / np.maximum(q.chunks, 1)).astype(np.int64)
    return TokenFigures(
        queries=len(q.tokens),
        ttft=latency_stats(q.ttft),
        ttft_from_send=latency_stats(q.ttft_from_send),
        tpot=latency_stats(q.tpot),
        tokens=total,
        token_source=q.source,
        tokens_per_chunk_mean=total / max(int(q.chunks.sum()), 1),
        tokens_per_chunk_max=int(per_chunk.max()),
        one_token_answers=int((q.tokens <= 1).sum()),
        completed_tokens_per_s=total * NS_PER_S / final if final > 0 else 0.0,
        final_completed_ns=final,
    )


def gap_stats(histogram: HdrHistogram) -> dict[str, int]:
    """Count, min, mean, LoadGen's percentiles and max of an HDR histogram of gaps (ns; the
    histogram's 3 significant digits, not exact): the inter-chunk latency (ITL)."""
    count = int(histogram.get_total_count())
    if not count:
        return {"count": 0}
    stats = {
        "count": count,
        "min_ns": int(histogram.get_min_value()),
        "mean_ns": int(histogram.get_mean_value()),
        "max_ns": int(histogram.get_max_value()),
    }
    for p in LOADGEN_PERCENTILES:
        stats[f"p{p * 100:g}_ns".replace(".", "")] = int(histogram.get_value_at_percentile(p * 100))
    return stats


@dataclass(frozen=True)
class TokenCheck:
    name: str
    passed: bool
    detail: str


def token_checks(
    records: Records, bounds: TokenBounds, counting: TokenCounting = TRITON_COUNTING
) -> list[TokenCheck]:
    """LoadGen's LLM rules: no answer of one token or none, and the p TTFT (from the scheduled
    time) and p TPOT within their bounds, each only when set."""
    q = per_query(records, counting)
    short = int((q.tokens <= 1).sum())
    checks = [
        TokenCheck(
            "token counts",
            short == 0 and len(q.tokens) > 0,
            f"{short} answers of ≤ 1 token (LoadGen: n_tokens must be > 1; {q.source})"
            if short
            else f"every answer has > 1 token ({q.source})",
        )
    ]
    tag = f"p{bounds.percentile * 100:g}"
    stopped = _token_early_stopping(q, bounds)
    for name, bound, values in (("TTFT", bounds.ttft_ns, q.ttft), ("TPOT", bounds.tpot_ns, q.tpot)):
        if not bound:
            continue
        if not len(values):
            checks.append(TokenCheck(f"{tag} {name}", False, "no query to measure it on"))
            continue
        value = exact_percentile(np.sort(values), bounds.percentile)
        over = int((values > bound).sum())
        stopping = stopped[name]
        source = f" ({bounds.source})" if bounds.source else ""
        relation = "≤" if value <= bound else ">"
        checks.append(
            TokenCheck(
                f"{tag} {name}",
                value <= bound,
                f"{tag} {name} {value / 1e6:.3f} ms {relation} {bound / 1e6:g} ms{source}",
            )
        )
        checks.append(
            TokenCheck(
                f"early stopping {name}",
                stopping.passed,
                f"early stopping on {name}: {len(values)} queries, {over} over {bound / 1e6:g} ms"
                + ("" if stopping.passed else f", {stopping.min_queries_needed} needed")
                + f" ({tag}, {bounds.confidence * 100:g} % confidence; LoadGen runs it on each)",
            )
        )
    return checks


def _token_early_stopping(q: PerQuery, bounds: TokenBounds) -> dict[str, EarlyStopping]:
    """LoadGen's early stopping run on the TTFT array and on the TPOT array, each against its
    bound (results.cc `EarlyStopping` twice when use_token_latencies), for the bounds set."""
    stopped = {}
    for name, bound, values in (("TTFT", bounds.ttft_ns, q.ttft), ("TPOT", bounds.tpot_ns, q.tpot)):
        if bound and len(values):
            over = int((values > bound).sum())
            stopped[name] = server_early_stopping(
                len(values), over, bounds.percentile, bounds.confidence
            )
    return stopped


def token_early_stopping(
    records: Records, bounds: TokenBounds, counting: TokenCounting = TRITON_COUNTING
) -> dict[str, EarlyStopping]:
    """ "TTFT"/"TPOT" -> that array's early stopping (LoadGen's recommendation text in `.text`,
    as mlperf_log_summary.txt prints it); only the bounds set, only with answers to judge."""
    return _token_early_stopping(per_query(records, counting), bounds)


def token_ratio(
    records: Records, bounds: TokenBounds, failed: int, from_send: bool = False
) -> float:
    """find-peak's token rule in one number: the larger of (p TTFT ÷ its bound) and (p TPOT ÷ its
    bound), each bound only when set, so ≤ 1 exactly when both hold at the percentile. Each
    percentile is over every issued query, the `failed` ones at +∞ (as the Server verdict places
    them), and for TPOT also the answers of ≤ 1 token, which have none (LoadGen: an error).
    `from_send`: TTFT from the actual send, the client's lag taken out (TPOT has none in it).
    math.inf when a percentile's rank falls among the failures."""
    q = per_query(records)
    ttft = q.ttft_from_send if from_send else q.ttft
    short = int((q.tokens <= 1).sum())
    worst = 0.0
    for bound, values, at_infinity in (
        (bounds.ttft_ns, ttft, failed),
        (bounds.tpot_ns, q.tpot, failed + short),
    ):
        if not bound:
            continue
        if not len(values) + at_infinity:
            return math.inf
        value = exact_percentile_with_failures(np.sort(values), at_infinity, bounds.percentile)
        if value is None:
            return math.inf
        worst = max(worst, value / bound)
    return worst


def fastest_ratio(records: Records, bounds: TokenBounds) -> float:
    """The fastest answers against the bounds: the larger of (least TTFT from the send ÷ its bound)
    and (least TPOT ÷ its bound); above 1, no rate can meet the bounds (find-peak stops). 0 when
    nothing streamed."""
    q = per_query(records)
    worst = 0.0
    for bound, values in ((bounds.ttft_ns, q.ttft_from_send), (bounds.tpot_ns, q.tpot)):
        if bound and len(values):
            worst = max(worst, int(values.min()) / bound)
    return worst
