"""Goodput under per-request SLOs: who met them, what share, at what rate.

A request is **good** when it succeeded and meets every `--slo` at once (core/slos.py), as
vLLM's `--goodput` (each request must meet all; vllm/benchmarks/serve.py `calculate_metrics`),
AIPerf's goodput ("completed requests per second that meet specified metric constraints") and
GuideLLM's SLO attainment (PR guidellm#1085) count it. The figures, from the per-query columns
any streamed target fills (core/records.py: first_part_ns, parts, final_count):

- TTFT and E2E from the query's **scheduled** time (LoadGen's origin, the project's rule), so a
  client's own queue counts against the SLO; `origin=SEND` gives them from the actual send (only
  the search's client-bound rule reads that);
- TPOT per request = (E2E − TTFT) / (n − 1), n the server's token count (rules/tokens.py's
  `query_tokens`). A request with n < 2 has no TPOT and does **not** meet a TPOT SLO (LoadGen
  calls such an answer an error; vLLM instead counts its TPOT as 0, a pass);
- the denominator is every request **sent**: one that failed or was never answered is not good
  (GuideLLM counts errors as failures too); queries never sent (a stopped run's remainder) are
  left out, as GuideLLM leaves out requests the run cancelled;
- each rate is its completed rate's own formula over its own span, counting only the good
  requests, so goodput equals the completed rate when every request is good: requests/s =
  (good − 1) / (last successful completion − first due time), rules/stats.Summary.completed_qps
  (LoadGen's n − 1); tokens/s = Σ n of the good requests / the last successful completion from
  t = 0 (the run's start), rules/tokens' completed tokens/s (LoadGen's).

The peak search reads one number per probe: `ratio_at_share`, the requests' worst SLO ratio
(figure ÷ bound, the largest over the SLOs; ∞ for a failure) at the rank the target share needs.
Goodput ≥ share exactly when that ratio is ≤ 1, and the ratio grows with load like a latency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from loadtest.core.records import Records
from loadtest.core.slos import E2E, TPOT, TTFT, Slo, describe_all
from loadtest.core.units import NS_PER_S
from loadtest.rules.tokens import query_tokens

SCHEDULED = "scheduled"  # TTFT and E2E from the query's scheduled time (the reported figures)
SEND = "send"  # from the actual send: the client's lag taken out (the client-bound rule only)

DEFINITIONS = {
    "good": "a sent request that succeeded and meets every SLO at once (vLLM --goodput, AIPerf "
    "goodput, GuideLLM SLO attainment); a failed or never answered request is not good",
    "requests": "every request sent; queries never sent (a stopped run's remainder) are left out",
    TTFT: "first response − the query's scheduled time (LoadGen FirstTokenComplete's origin)",
    TPOT: "(e2e − TTFT) / (n − 1) per request, n the server's token count; a request with n < 2 "
    "has no TPOT and does not meet a TPOT SLO (LoadGen: n must be > 1; vLLM counts it as 0)",
    E2E: "completion − the query's scheduled time",
    "span_ns": "from the first due time to the last successful completion: the span completed "
    "QPS divides by",
    "requests_per_s": "(good − 1) / span_ns: completed QPS's formula (LoadGen's n − 1) over the "
    "good requests only",
    "tokens_span_ns": "from t = 0 (the run's start) to the last successful completion: the span "
    "completed tokens/s divides by (LoadGen's)",
    "tokens_per_s": "Σ n_tokens of the good requests / tokens_span_ns: completed tokens/s over "
    "the good requests only",
}


@dataclass(frozen=True)
class Attainment:
    """One SLO alone: how many of the sent requests met it."""

    slo: Slo
    met: int
    share: float

    def to_json(self) -> dict[str, Any]:
        return {"name": self.slo.name, "bound_ns": self.slo.bound_ns, "met": self.met,
                "share": self.share}  # fmt: skip


@dataclass(frozen=True)
class Goodput:
    """A run's goodput under its SLOs (counts of requests; rates per second of `span_ns`)."""

    slos: tuple[Slo, ...]
    origin: str
    requests: int  # sent: the denominator
    good: int
    failed: int  # errors + sent and never answered, counted as not good
    not_sent: int  # left out of the denominator
    attainment: tuple[Attainment, ...]
    share: float  # good / requests
    span_ns: int  # first due time -> last successful completion (completed QPS's)
    requests_per_s: float
    tokens_span_ns: int  # t = 0 -> last successful completion (completed tokens/s's)
    tokens: int | None  # Σ n of the good requests; None without a streamed answer
    tokens_per_s: float | None
    token_source: str | None

    def to_json(self) -> dict[str, Any]:
        definitions = {
            key: text
            for key, text in DEFINITIONS.items()
            if key not in (TTFT, TPOT, E2E) or any(slo.name == key for slo in self.slos)
        }
        return {
            "slos": [{"name": s.name, "bound_ns": s.bound_ns} for s in self.slos],
            "described": describe_all(self.slos),
            "origin": self.origin,
            "requests": self.requests,
            "good": self.good,
            "failed": self.failed,
            "not_sent": self.not_sent,
            "share": self.share,
            "attainment": [a.to_json() for a in self.attainment],
            "span_ns": self.span_ns,
            "requests_per_s": self.requests_per_s,
            "tokens_span_ns": self.tokens_span_ns,
            "tokens": self.tokens,
            "tokens_per_s": self.tokens_per_s,
            "token_source": self.token_source,
            "definitions": definitions,
        }


def _figures(records: Records, slo: Slo, origin: str) -> tuple[np.ndarray, np.ndarray]:
    """Per row: whether it meets `slo` (exact, in integers) and its figure ÷ the bound (∞ where
    the request failed, was never answered, or has no such figure)."""
    start = records.scheduled_ns if origin == SCHEDULED else records.issued_ns
    ok = records.ok
    streamed = ok & records.streamed
    if slo.name == E2E:
        has, spent, per = ok, records.completed_ns - start, np.ones(len(records), np.int64)
    elif slo.name == TTFT:
        has, spent, per = streamed, records.first_part_ns - start, np.ones(len(records), np.int64)
    else:  # TPOT: the answer's time after its first token, over its n − 1 later tokens
        tokens, _source = query_tokens(records)
        has = streamed & (tokens > 1)
        spent, per = records.completed_ns - records.first_part_ns, np.maximum(tokens - 1, 1)
    meets = has & (spent <= slo.bound_ns * per)
    ratio = np.full(len(records), math.inf)
    ratio[has] = spent[has] / per[has] / slo.bound_ns
    return meets, ratio


def goodput(records: Records, slos: tuple[Slo, ...], origin: str = SCHEDULED) -> Goodput:
    """The goodput of a run's records under `slos` (module docstring: every definition)."""
    sent = records.issued
    requests = int(sent.sum())
    good_rows = records.ok & sent
    attainment = []
    for slo in slos:
        meets, _ratio = _figures(records, slo, origin)
        met = int((meets & sent).sum())
        attainment.append(Attainment(slo, met, met / requests if requests else 0.0))
        good_rows &= meets
    good = int(good_rows.sum())
    ok = records.ok
    last_ok = int(records.completed_ns[ok].max()) if ok.any() else 0
    span = last_ok - int(records.scheduled_ns.min()) if ok.any() else 0
    tokens = tokens_per_s = source = None
    if (ok & records.streamed).any():
        counts, source = query_tokens(records)
        tokens = int(counts[good_rows].sum())
        tokens_per_s = tokens * NS_PER_S / last_ok if last_ok > 0 else 0.0
    return Goodput(
        slos=slos,
        origin=origin,
        requests=requests,
        good=good,
        failed=int((sent & ~records.ok).sum()),
        not_sent=len(records) - requests,
        attainment=tuple(attainment),
        share=good / requests if requests else 0.0,
        span_ns=span,
        requests_per_s=(good - 1) * NS_PER_S / span if span > 0 and good > 1 else 0.0,
        tokens_span_ns=last_ok,
        tokens=tokens,
        tokens_per_s=tokens_per_s,
        token_source=source,
    )


def needed_good(requests: int, share: float) -> int:
    """The fewest good requests out of `requests` that make goodput ≥ `share` (at least 1)."""
    return max(1, math.ceil(share * requests - 1e-9))


def holds(result: Goodput, share: float) -> bool:
    """Goodput ≥ `share`, counted (no float share compared): good ≥ needed_good."""
    return result.requests > 0 and result.good >= needed_good(result.requests, share)


def ratio_at_share(
    records: Records, slos: tuple[Slo, ...], share: float, origin: str = SCHEDULED
) -> float:
    """The worst SLO ratio among the best `share` of the sent requests: ≤ 1 exactly when
    goodput ≥ share (module docstring); ∞ when failures reach that rank or nothing was sent."""
    sent = records.issued
    requests = int(sent.sum())
    if not requests:
        return math.inf
    worst = np.zeros(len(records))
    for slo in slos:
        worst = np.maximum(worst, _figures(records, slo, origin)[1])
    ranked = np.sort(worst[sent])
    return float(ranked[needed_good(requests, share) - 1])
