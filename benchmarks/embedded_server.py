"""Embedded Triton costs, measured side by side in one run on this machine.

Prints: model build time and size; server start-up time and memory (tritonserver + its Python
stubs, RSS via psutil) per model; and the per-request overhead of the embedded server over
onnxruntime in-process — the same model file, the same inputs, one request at a time (closed loop,
batch 1), median and p99 over N requests, gRPC and HTTP, and the ratio.

In-process ORT uses the same session settings as the server's backend (threads from the model's
config, spinning off), so the difference is Triton's: protocol, client, server queueing, the
Python-backend round trip.

    python benchmarks/embedded_server.py [--models tiny resnet50] [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import psutil

from loadtest.engine.samples import random_samples
from loadtest.models import SUITE, build_repository
from loadtest.server.embedded import EmbeddedTriton
from loadtest.targets.triton_grpc import TritonGrpcTarget
from loadtest.targets.triton_http import TritonHttpTarget


def tree_rss_mb(pid: int) -> float:
    process = psutil.Process(pid)
    processes = [process, *process.children(recursive=True)]
    return sum(p.memory_info().rss for p in processes if p.is_running()) / 1e6


def native_latencies_ms(model_path: Path, name: str, samples: list, n: int) -> np.ndarray:
    model = SUITE[name]
    options = ort.SessionOptions()
    options.intra_op_num_threads = model.intra_op_threads
    options.inter_op_num_threads = model.inter_op_threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    for sample in samples[:5]:
        session.run(None, dict(sample))
    out = []
    for i in range(n):
        start = time.perf_counter_ns()
        session.run(None, dict(samples[i % len(samples)]))
        out.append(time.perf_counter_ns() - start)
    return np.array(out) / 1e6


async def triton_latencies_ms(target, samples: list, n: int) -> np.ndarray:
    spec = await target.open()
    del spec
    await target.prepare(samples)
    for i in range(5):
        await target.infer(i % len(samples))
    out = []
    for i in range(n):
        start = time.perf_counter_ns()
        error = await target.infer(i % len(samples))
        out.append(time.perf_counter_ns() - start)
        assert error is None, error
    await target.close()
    return np.array(out) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "resnet50"])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        repository = Path(tmp)
        for name in args.models:
            build = build_repository(repository, [name])[0]
            print(f"build {name}: {build.seconds:.2f} s, {build.bytes / 1e6:.2f} MB")
            server = EmbeddedTriton(repository, models=[name])
            server.start()
            assert server.pid is not None
            rss = tree_rss_mb(server.pid)
            try:
                spec = asyncio.run(_spec(server.grpc_url, name))
                samples = random_samples(spec, 16, seed=0)
                n = args.requests if name == "tiny" else max(30, args.requests // 5)
                native = native_latencies_ms(
                    repository / name / "1" / "model.onnx", name, samples, n
                )
                grpc = asyncio.run(
                    triton_latencies_ms(TritonGrpcTarget(server.grpc_url, name), samples, n)
                )
                http = asyncio.run(
                    triton_latencies_ms(TritonHttpTarget(server.http_url, name), samples, n)
                )
                rss_after = tree_rss_mb(server.pid)
            finally:
                server.cleanup()
            row = {
                "model": name,
                "build_s": round(build.seconds, 2),
                "size_mb": round(build.bytes / 1e6, 2),
                "startup_s": round(server.startup_s, 2),
                "server_rss_mb_idle": round(rss, 1),
                "server_rss_mb_after": round(rss_after, 1),
                "requests": n,
            }
            for label, values in (("native", native), ("grpc", grpc), ("http", http)):
                row[f"{label}_p50_ms"] = round(float(np.percentile(values, 50)), 3)
                row[f"{label}_p99_ms"] = round(float(np.percentile(values, 99)), 3)
            for label in ("grpc", "http"):
                row[f"{label}_overhead_p50_ms"] = round(
                    row[f"{label}_p50_ms"] - row["native_p50_ms"], 3
                )
                row[f"{label}_vs_native_p50_ratio"] = round(
                    row[f"{label}_p50_ms"] / row["native_p50_ms"], 2
                )
            rows.append(row)
            print(json.dumps(row))
    print()
    header = (
        "model",
        "start s",
        "RSS MB",
        "native p50",
        "grpc p50",
        "http p50",
        "grpc +ms",
        "http +ms",
        "grpc/native",
    )
    print(" | ".join(header))
    for r in rows:
        print(
            " | ".join(
                str(v)
                for v in (
                    r["model"],
                    r["startup_s"],
                    r["server_rss_mb_after"],
                    r["native_p50_ms"],
                    r["grpc_p50_ms"],
                    r["http_p50_ms"],
                    r["grpc_overhead_p50_ms"],
                    r["http_overhead_p50_ms"],
                    r["grpc_vs_native_p50_ratio"],
                )
            )
        )


async def _spec(url: str, name: str):
    target = TritonGrpcTarget(url, name)
    spec = await target.open()
    await target.close()
    return spec


if __name__ == "__main__":
    main()
