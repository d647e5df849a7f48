"""The exact merge of shard results: one timeline of records, HDR histograms added, counts summed.

A worker sends back a ShardResult: its per-query records (merged into one timeline, so every
percentile stays exact), HDR histograms of its latencies and send lag (merged with
`decode_and_add`, never by averaging percentiles), counts, and its self-measurement (CPU, event-
loop lag). Pure apart from naming the host and process a result came from.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, replace

import numpy as np

from loadtest.core.records import Records
from loadtest.core.schedule import Schedule, merged_schedule
from loadtest.engine.runner import RunOutcome
from loadtest.engine.selfmeasure import (
    PART_GAP,
    ClientReport,
    WorkerReport,
    record_histograms,
    send_gap_cv,
)
from loadtest.errors import LoadtestError, TargetError
from loadtest.rules.stats import decode_histograms, encode_histogram, send_lag_stats


@dataclass
class ShardResult:
    """One worker's measurements, in a form that merges exactly."""

    shard: int
    host: str
    pid: int
    schedule: Schedule
    records: Records | None  # per-query rows, when the plan keeps them
    histograms: dict[str, str]  # record_histograms' names -> encoded HDR (V2, base64)
    scheduled: int
    issued: int
    ok: int
    errors: int
    cpu_s: float
    loop_lag_ns: np.ndarray
    connection_waits: int
    started_unix_ns: int
    duration_ns: int
    interrupted: bool
    stop_reason: str
    late_threshold_ns: int
    node: str = ""  # the Ray node that played it ("" for local processes)
    transparent_retries: int = 0  # queries sent again: never processed (gRPC wire client)

    def worker_report(self) -> WorkerReport:
        lag = self.records.send_lag_ns() if self.records is not None else np.zeros(0, np.int64)
        lag_stats = send_lag_stats(lag, self.scheduled, self.late_threshold_ns)
        return WorkerReport.of(
            shard=self.shard,
            host=self.host,
            pid=self.pid,
            issued=self.issued,
            cpu_s=self.cpu_s,
            loop_lag_ns=self.loop_lag_ns,
            send_lag=lag_stats,
            connection_waits=self.connection_waits,
            node=self.node,
            transparent_retries=self.transparent_retries,
        )


def shard_result(
    shard: int,
    schedule: Schedule,
    outcome: RunOutcome,
    cpu_s: float,
    loop_lag_ns: np.ndarray,
    connection_waits: int,
    late_threshold_ns: int,
    keep_records: bool = True,
    transparent_retries: int = 0,
) -> ShardResult:
    """What one generator (a worker, or this process alone) measured, ready to merge."""
    records = outcome.records
    return ShardResult(
        shard=shard,
        host=socket.gethostname(),
        pid=os.getpid(),
        schedule=schedule,
        records=records if keep_records else None,
        histograms=record_histograms(records, outcome.part_gaps),
        scheduled=len(records),
        issued=int(records.issued.sum()),
        ok=int(records.ok.sum()),
        errors=int(records.errored.sum()),
        cpu_s=cpu_s,
        loop_lag_ns=loop_lag_ns,
        connection_waits=connection_waits,
        started_unix_ns=outcome.started_unix_ns,
        duration_ns=outcome.duration_ns,
        interrupted=outcome.interrupted,
        stop_reason=outcome.stop_reason,
        late_threshold_ns=late_threshold_ns,
        transparent_retries=transparent_retries,
    )


def lost_shard_result(
    shard: int,
    schedule: Schedule,
    host: str,
    pid: int,
    node: str,
    started_unix_ns: int,
    late_threshold_ns: int,
    reason: str,
) -> ShardResult:
    """A shard whose worker vanished mid-run (its records went with it): every query of its
    schedule stays PENDING, so the merged result counts them as never answered, and the run is
    partial with `reason` saying which shard was lost. Whether some were sent is unknowable."""
    records = Records(scheduled_ns=schedule.scheduled_ns, sample_index=schedule.sample_index)
    if schedule.rows is not None:
        records.trace_index[:] = schedule.rows.index
    return ShardResult(
        shard=shard,
        host=host,
        pid=pid,
        schedule=schedule,
        records=records,
        histograms=record_histograms(records),
        scheduled=len(records),
        issued=0,
        ok=0,
        errors=0,
        cpu_s=0.0,
        loop_lag_ns=np.zeros(0, np.int64),
        connection_waits=0,
        started_unix_ns=started_unix_ns,
        duration_ns=0,
        interrupted=True,
        stop_reason=reason,
        late_threshold_ns=late_threshold_ns,
        node=node,
    )


@dataclass(frozen=True)
class MergedShards:
    schedule: Schedule
    outcome: RunOutcome
    client: ClientReport  # its histograms are exact merges of the shards' HDR histograms
    cpu_s: float


def merge_records(shards: list[Records]) -> Records:
    """One Records for all shards, in due-time order; error kinds renumbered into one table."""
    merged = Records.concatenate(shards)
    return merged.take(np.argsort(merged.scheduled_ns, kind="stable"))


def client_report(
    results: list[ShardResult],
    placement: str,
    loop: str,
    merged: Records,
    parent_cpu_s: float = 0.0,
) -> ClientReport:
    """The generator's self-measurement: per worker, plus merged HDR and the merged send law
    beside the schedule's own (the same issued queries' due times).

    Each histogram any shard has is the exact sum over the shards that have it (a shard without
    one, e.g. no answer in parts, had nothing to count)."""
    names = dict.fromkeys(name for r in results for name in r.histograms)
    histograms = {
        name: encode_histogram(
            decode_histograms(r.histograms[name] for r in results if name in r.histograms)
        )
        for name in names
    }
    return ClientReport(
        placement=placement,
        loop=loop,
        workers=tuple(r.worker_report() for r in results),
        send_gap_cv=send_gap_cv(merged.issued_ns[merged.issued]),
        histograms=histograms,
        parent_cpu_s=parent_cpu_s,
        scheduled_gap_cv=send_gap_cv(merged.scheduled_ns[merged.issued]),
    )


def merge_shards(
    results: list[ShardResult], placement: str, loop: str, parent_cpu_s: float = 0.0
) -> MergedShards:
    """Exact merge: records concatenated in time order, HDR histograms added, counts summed."""
    if not results:
        raise TargetError("no worker returned a result")
    results = sorted(results, key=lambda r: r.shard)
    missing = [r.shard for r in results if r.records is None]
    if missing:
        raise LoadtestError(f"workers {missing} kept no per-query records; cannot report exactly")
    records = merge_records([r.records for r in results if r.records is not None])
    reasons = sorted({r.stop_reason for r in results if r.stop_reason})
    outcome = RunOutcome(
        records=records,
        started_unix_ns=min(r.started_unix_ns for r in results),
        duration_ns=max(r.duration_ns for r in results),
        interrupted=any(r.interrupted for r in results),
        stop_reason="; ".join(reasons),
    )
    client = client_report(results, placement, loop, records, parent_cpu_s)
    outcome = replace(outcome, part_gaps=client.histograms.get(PART_GAP, ""))
    return MergedShards(
        schedule=merged_schedule([r.schedule for r in results]),
        outcome=outcome,
        client=client,
        cpu_s=client.cpu_s,
    )
