"""Synthetic result files for the report/export/diff tests: runs built from seeded records (no
load generated), streamed (LLM) runs with their token figures, a find-peak sweep and a compare file
in the shapes their writers use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.core.records import Records, Status
from loadtest.engine.selfmeasure import record_histograms
from loadtest.report.results import plain, tokens_json
from loadtest.rules.stats import encode_histogram, latency_histogram, summarize, timeline
from loadtest.rules.tokens import token_figures
from loadtest.rules.validity import judge_server

MS = 1_000_000


def synthetic_records(
    n: int = 3000, qps: float = 500.0, scale: float = 1.0, seed: int = 0, errors: int = 0
) -> Records:
    """n queries at a steady rate, lognormal latencies (median ≈ 2 ms × scale), a little send lag;
    the first `errors` queries fail and the last query never completes when errors > 0."""
    rng = np.random.default_rng(seed)
    scheduled = (np.arange(n) * (1e9 / qps)).astype(np.int64)
    records = Records(scheduled_ns=scheduled, sample_index=(np.arange(n) % 64).astype(np.int32))
    latency = (rng.lognormal(np.log(2 * MS), 0.5, n) * scale).astype(np.int64)
    records.issued_ns[:] = scheduled + rng.integers(1_000, 50_000, n)
    records.completed_ns[:] = scheduled + latency
    records.status[:] = Status.OK
    if errors:
        code = records.error_code_for("timeout")
        records.status[:errors] = Status.ERROR
        records.error_code[:errors] = code
        records.status[-1] = Status.PENDING
        records.completed_ns[-1] = -1
    return records


def run_json(
    records: Records,
    *,
    qps: float = 500.0,
    target_ms: float = 50.0,
    keep_records: bool = True,
    scenario: str = "Server",
    metrics: dict[str, Any] | None = None,
    with_timeline: bool = False,
) -> dict[str, Any]:
    """A result.json as an older loadtest wrote it (no `timeline`) unless `with_timeline`."""
    summary = summarize(records)
    verdict = judge_server(
        summary, records.latency_from_scheduled_ns(), int(target_ms * MS), 0.99, 1, 100
    )
    data: dict[str, Any] = {
        "schema": "loadtest.result",
        "schema_version": 1,
        "scenario": scenario,
        "created_unix_s": 1_700_000_000.0,
        "settings": {
            "qps": qps,
            "target_latency_ns": int(target_ms * MS),
            "percentile": 0.99,
            "keep_records": keep_records,
            "scenario": scenario,
        },
        "target": {"url": "fake://", "model": "tiny"},
        "model": {"name": "tiny"},
        "environment": {"host": "test", "versions": {"loadtest": "0.1.0"}},
        "run": {"duration_ns": summary.duration_ns, "interrupted": False},
        "summary": summary.to_dict(),
        "verdict": plain(verdict),
    }
    if metrics is not None:
        data["metrics"] = metrics
    if with_timeline:
        data["timeline"] = timeline(records).to_dict()
    if keep_records:
        data["records"] = {
            "error_kinds": records.error_kinds,
            "samples_per_query": records.samples_per_query,
            "columns": records.to_columns(),
        }
    return data


def streamed_records(
    n: int = 400, qps: float = 20.0, seed: int = 0, per_response: int = 1
) -> tuple[Records, str]:
    """n answers in parts at a steady rate, as an LLM server streams them: a little send lag,
    the first response ~80 ms after the send (lognormal), then one response every ~10 ms per
    token it carries (`per_response` tokens each, the last one the rest), 8-16 tokens counted by
    the server. Returns the records and the encoded HDR histogram of the gaps between responses
    (what engine/parts.py would have merged)."""
    rng = np.random.default_rng(seed)
    scheduled = (np.arange(n) * (1e9 / qps)).astype(np.int64)
    records = Records(scheduled_ns=scheduled, sample_index=(np.arange(n) % 64).astype(np.int32))
    records.issued_ns[:] = scheduled + rng.integers(10_000, 500_000, n)
    records.first_part_ns[:] = records.issued_ns + rng.lognormal(np.log(80 * MS), 0.3, n).astype(
        np.int64
    )
    tokens = rng.integers(8, 17, n)
    parts = -(-tokens // per_response)
    gap = (rng.normal(10 * MS, MS, n).clip(5 * MS) * per_response).astype(np.int64)
    records.completed_ns[:] = records.first_part_ns + (parts - 1) * gap
    records.parts[:] = parts
    records.final_count[:] = tokens
    records.status[:] = Status.OK
    gaps = np.repeat(gap, parts - 1)
    return records, encode_histogram(latency_histogram(gaps))


def streamed_run_json(records: Records, part_gaps: str, **options: Any) -> dict[str, Any]:
    """A streamed run's result.json: run_json's, with the `tokens` object and the client's merged
    histograms built by the writer's own functions."""
    data = run_json(records, **options)
    figures = token_figures(records)
    assert figures is not None, "no streamed query in these records"
    data["tokens"] = tokens_json(figures, part_gaps, None)
    data["client"] = {"hdr": record_histograms(records, part_gaps)}
    return data


def find_peak_json() -> dict[str, Any]:
    probes = [
        {"qps": q, "p99_ns": int(p * MS), "valid": p <= 50}
        for q, p in ((100, 5), (200, 7), (400, 12), (600, 30), (700, 48), (800, 140))
    ]
    return {
        "schema": "loadtest.find_peak",
        "schema_version": 1,
        "kind": "find-peak",
        "scenario": "Server",
        "settings": {"target_latency_ns": 50 * MS, "percentile": 0.99},
        "probes": probes,
        "peak_qps": 700,
    }


def compare_json(with_split: bool = True) -> dict[str, Any]:
    def row(target: str, p99: float, split: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "target": target,
            "qps": 300.0,
            "achieved_qps": 299.1,
            "p50_ns": int(p99 / 3 * MS),
            "p99_ns": int(p99 * MS),
            "valid": True,
            "client_bound": False,
        }
        if split:
            data["split_ns"] = {
                "queue_ns": 0.2 * MS,
                "compute_input_ns": 0.05 * MS,
                "compute_infer_ns": 1.1 * MS,
                "compute_output_ns": 0.04 * MS,
                "other_server_ns": 0.01 * MS,
                "client_network_ns": 0.3 * MS,
            }
            data["server_side"] = {
                "metrics": {
                    "gpu_utilization": 0.42,
                    "gpu_power_w": 180.5,
                    "energy_j": 900.0,
                    "inferences": 9000.0,
                }
            }
        return data

    return {
        "schema": "loadtest.analysis.compare",
        "schema_version": 1,
        "kind": "compare",
        "scenario": "Server",
        "rows": [row("triton-grpc", 4.0, with_split), row("native", 3.2, False)],
    }


def write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path
