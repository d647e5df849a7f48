"""Where a request's time went: Triton's statistics deltas against the client's own latency; pure.

Triton keeps cumulative per-model counters (statistics API, `inference_stats`): for successful
requests, the count and total ns of the whole request (`success`), of waiting in the scheduler
queue (`queue`), and of the three compute phases (`compute_input` / `compute_infer` /
`compute_output`), plus `inference_count` (samples) and `execution_count` (model executions).
Taking a snapshot just before and just after a run and subtracting gives exact per-run totals
(perf_analyzer does the same per window), so:

    per-request phase = Δphase_ns / Δsuccess_count     (µs in the report)
    server total      = Δsuccess_ns / Δsuccess_count   (Triton's whole request duration)
    residual          = server total − (queue + compute input + infer + output): time inside Triton
                        outside the named phases (request parsing, response, the Python stub hop)
    client + network  = client mean latency (from the actual send) − server total
    average batch     = Δinference_count / Δexecution_count

The rows therefore add up to the client's mean latency by construction; what can disagree is the
*count*: if Triton saw more or fewer successful requests than the client completed (another client
on the same server, a warm-up inside the window), the per-request figures are not this run's alone,
and `counts_match` says so. The client mean is taken from the actual send, because Triton cannot see
time a query spent waiting in the client before it was sent; the mean from scheduled time is kept
alongside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loadtest.core.units import ns_to_us

PHASES = ("queue", "compute_input", "compute_infer", "compute_output")
# Count agreement tolerated between the client's completions and Triton's Δsuccess: 1 %.
COUNT_TOLERANCE = 0.01


@dataclass(frozen=True)
class ModelStats:
    """One snapshot of a model's cumulative counters (summed over its versions)."""

    success_count: int
    success_ns: int
    fail_count: int
    queue_ns: int
    compute_input_ns: int
    compute_infer_ns: int
    compute_output_ns: int
    inference_count: int
    execution_count: int
    cache_hit_count: int = 0  # answered from Triton's response cache (the cache check reads it)

    @classmethod
    def from_statistics(cls, statistics: Mapping[str, Any], model: str) -> ModelStats:
        """From the statistics API's JSON (gRPC gives int64 as strings, HTTP as numbers)."""
        totals = dict.fromkeys(
            (
                "success_count",
                "success_ns",
                "fail_count",
                *(f"{p}_ns" for p in PHASES),
                "inference_count",
                "execution_count",
                "cache_hit_count",
            ),
            0,
        )
        for entry in statistics.get("model_stats", []):
            if entry.get("name") != model:
                continue
            stats = entry.get("inference_stats", {})

            def duration(key: str, field: str, stats: Mapping[str, Any] = stats) -> int:
                return int((stats.get(key) or {}).get(field, 0) or 0)

            totals["success_count"] += duration("success", "count")
            totals["success_ns"] += duration("success", "ns")
            totals["fail_count"] += duration("fail", "count")
            totals["cache_hit_count"] += duration("cache_hit", "count")
            for phase in PHASES:
                totals[f"{phase}_ns"] += duration(phase, "ns")
            totals["inference_count"] += int(entry.get("inference_count", 0) or 0)
            totals["execution_count"] += int(entry.get("execution_count", 0) or 0)
        return cls(**totals)

    def minus(self, before: ModelStats) -> ModelStats:
        return ModelStats(**{name: getattr(self, name) - getattr(before, name) for name in _FIELDS})


_FIELDS = tuple(ModelStats.__dataclass_fields__)


@dataclass(frozen=True)
class ServerSplit:
    """Per-request means in ns over one run (see the module docstring for each definition)."""

    requests: int  # Δsuccess_count
    failed: int  # Δfail_count
    client_requests: int  # successful queries the client completed in the same window
    queue_ns: float
    compute_input_ns: float
    compute_infer_ns: float
    compute_output_ns: float
    residual_ns: float
    server_total_ns: float
    client_network_ns: float
    client_mean_ns: float  # client mean latency from the actual send
    client_mean_from_scheduled_ns: float
    average_batch: float | None  # None when Triton executed nothing
    inferences: int
    executions: int

    @property
    def counts_match(self) -> bool:
        if self.client_requests == 0:
            return self.requests == 0
        return abs(self.requests - self.client_requests) <= COUNT_TOLERANCE * self.client_requests

    def rows(self) -> list[tuple[str, float]]:
        """(label, ns) rows that add up to the client mean latency."""
        return [
            ("queue", self.queue_ns),
            ("compute input", self.compute_input_ns),
            ("compute infer", self.compute_infer_ns),
            ("compute output", self.compute_output_ns),
            ("other server time (residual)", self.residual_ns),
            ("client + network", self.client_network_ns),
        ]

    def to_dict(self) -> dict[str, Any]:
        def us(ns: float) -> float:
            return round(ns_to_us(ns), 3)

        return {
            "requests": self.requests,
            "failed": self.failed,
            "client_requests": self.client_requests,
            "counts_match": self.counts_match,
            "queue_us": us(self.queue_ns),
            "compute_input_us": us(self.compute_input_ns),
            "compute_infer_us": us(self.compute_infer_ns),
            "compute_output_us": us(self.compute_output_ns),
            "residual_us": us(self.residual_ns),
            "server_total_us": us(self.server_total_ns),
            "client_network_us": us(self.client_network_ns),
            "client_mean_us": us(self.client_mean_ns),
            "client_mean_from_scheduled_us": us(self.client_mean_from_scheduled_ns),
            "average_batch": None if self.average_batch is None else round(self.average_batch, 3),
            "inferences": self.inferences,
            "executions": self.executions,
            "client_latency_origin": "actual send",
        }


def split(
    before: ModelStats,
    after: ModelStats,
    client_requests: int,
    client_mean_ns: float,
    client_mean_from_scheduled_ns: float = 0.0,
) -> ServerSplit | None:
    """The split for one run; None when Triton counted no successful request in the window."""
    delta = after.minus(before)
    n = delta.success_count
    if n <= 0:
        return None
    phases = [getattr(delta, f"{p}_ns") / n for p in PHASES]
    total = delta.success_ns / n
    return ServerSplit(
        requests=n,
        failed=delta.fail_count,
        client_requests=client_requests,
        queue_ns=phases[0],
        compute_input_ns=phases[1],
        compute_infer_ns=phases[2],
        compute_output_ns=phases[3],
        residual_ns=total - sum(phases),
        server_total_ns=total,
        client_network_ns=client_mean_ns - total,
        client_mean_ns=client_mean_ns,
        client_mean_from_scheduled_ns=client_mean_from_scheduled_ns,
        average_batch=(
            delta.inference_count / delta.execution_count if delta.execution_count > 0 else None
        ),
        inferences=delta.inference_count,
        executions=delta.execution_count,
    )
