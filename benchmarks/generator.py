"""How fast the generator itself is: its highest clean Poisson rate, CPU per request and send law.

Side by side in one run on this machine, against (a) the zero-compute stub (`loadtest stub`: the
roofline of the client alone) and (b) the embedded Triton serving `tiny` (the real server sharing
the machine's cores), over HTTP and gRPC, for 1 worker process and for N (default: one per core):

- clean = the generator kept up: send-lag p99 ≤ 1 ms and ≥ 99 % of queries sent within 1 ms of
  their scheduled time (validity.py's rule), and no query failed;
- client CPU µs per request = user+system CPU of every generator process / queries issued
  (spin-waiting included: it is what the generator costs the machine);
- send-gap CV = std/mean of the gaps between actual sends, all workers merged (Poisson = 1).

Each rate is one Server-scenario run of --seconds; rates climb until two in a row are not clean.
perf_analyzer (async, Poisson, same server, same rates) runs beside it when its binary is found
(PERF_ANALYZER=path, or /opt/loadtest-trixie/perf_analyzer as benchmarks/perf_analyzer_root.sh
makes it); its "delayed" share (> 1 ms late, its own definition) decides its clean rate. Without it,
no ratio is printed: a perf_analyzer figure is only ever one measured in the same run.

    python benchmarks/generator.py [--seconds 5] [--workers 2] [--skip-triton] [--skip-pa]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from loadtest.core.settings import (
    ClientSettings,
    LoopKind,
    Protocol,
    ServerSettings,
    TargetSettings,
    available_cpus,
    resolve_loop,
)
from loadtest.engine import timing
from loadtest.engine.samples import open_with_samples
from loadtest.models import build_repository
from loadtest.scenarios.interpret import interpret_server
from loadtest.scenarios.play import Generator, run_server
from loadtest.server.embedded import EmbeddedTriton
from loadtest.stub.process import running_stub
from loadtest.targets import triton_target

NS = 1_000_000_000
RATES = {
    ("stub", "http"): [2000, 5000, 10000, 15000, 20000, 25000, 30000],
    ("stub", "grpc"): [500, 1000, 1500, 2000, 3000, 4000],
    ("triton", "http"): [1000, 2000, 3000, 4000, 5000, 6000],
    ("triton", "grpc"): [500, 1000, 1500, 2000, 3000, 4000],
}
PA_DEFAULT = Path("/opt/loadtest-trixie/perf_analyzer")


@dataclass(frozen=True)
class Row:
    qps: float
    completed_qps: float
    lag_p99_ms: float
    on_time_pct: float
    cpu_us: float
    cv: float
    errors: int
    clean: bool


async def _one(url: str, protocol: str, qps: float, seconds: float, workers: int) -> Row:
    target = triton_target(url, protocol, "tiny")
    try:
        spec, library = await open_with_samples(target, 64, 1)
        settings = ServerSettings(
            qps=qps, target_latency_ns=NS, min_duration_ns=int(seconds * NS), min_query_count=1
        )
        generator = Generator(
            ClientSettings(workers=workers, loop=LoopKind.AUTO),
            TargetSettings(url=url, protocol=Protocol(protocol), model="tiny"),
        )
        measurement = await run_server(
            target, spec, len(library), settings, 30 * NS, generator=generator
        )
    finally:
        await target.close()
    summary, _ = interpret_server(settings, measurement.outcome)
    client = measurement.client
    assert client is not None
    lag = summary.send_lag
    return Row(
        qps=qps,
        completed_qps=summary.completed_qps,
        lag_p99_ms=lag.p99_ns / 1e6,
        on_time_pct=100 * (1 - lag.late_share),
        cpu_us=client.cpu_us_per_query,
        cv=client.send_gap_cv,
        errors=summary.errors + summary.pending,
        clean=lag.kept_up and summary.errors + summary.pending == 0,
    )


def ladder(name: str, url: str, protocol: str, workers: int, seconds: float) -> list[Row]:
    rows: list[Row] = []
    misses = 0
    print(f"\n{name} {protocol}, {workers} worker(s), {seconds:g} s per rate, loop auto")
    print("  rate  completed  lag p99 ms  on time %  CPU µs/req  send-gap CV  errors  clean")
    for qps in RATES[(name, protocol)]:
        loop = resolve_loop(LoopKind.AUTO, qps / workers).value
        row = timing.run(_one(url, protocol, qps, seconds, workers), loop)
        rows.append(row)
        print(
            f"{row.qps:6.0f} {row.completed_qps:10.0f} {row.lag_p99_ms:11.3f} "
            f"{row.on_time_pct:10.2f} {row.cpu_us:11.0f} {row.cv:12.3f} {row.errors:7d}  "
            f"{'yes' if row.clean else 'NO'}"
        )
        misses = 0 if row.clean else misses + 1
        if misses == 2:
            break
    return rows


def best(rows: list[Row]) -> Row | None:
    return max((r for r in rows if r.clean), key=lambda r: r.qps, default=None)


def perf_analyzer_ladder(binary: Path, url: str, protocol: str, seconds: float) -> float | None:
    """perf_analyzer --async Poisson at each rate; its highest rate with ≤ 1 % delayed."""
    print(f"\nperf_analyzer {protocol} (async, Poisson, --request-count = rate × {seconds:g} s)")
    print("  rate  delayed %  client CPU µs/req  clean")
    clean_best, misses = None, 0
    for qps in RATES[("triton", protocol)]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            done = subprocess.run(
                [str(binary), "-m", "tiny", "-u", url, "-i", protocol, "--async",
                 "--request-rate-range", str(qps), "--request-distribution", "poisson",
                 "--request-count", str(int(qps * seconds))],
                capture_output=True, text=True, timeout=seconds * 6 + 30,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            print(f"{qps:6.0f}  timed out")
            break
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        found = re.search(r"([\d.]+)% of the requests were delayed", done.stdout)
        delayed = float(found.group(1)) if found else 0.0
        if done.returncode != 0 or "Request count" not in done.stdout:
            print(f"{qps:6.0f}  failed (exit {done.returncode})")
            misses += 1
        else:
            clean = delayed <= 1.0
            print(f"{qps:6.0f} {delayed:10.2f} {cpu * 1e6 / (qps * seconds):18.0f}  "
                  f"{'yes' if clean else 'NO'}")  # fmt: skip
            if clean:
                clean_best = float(qps)
            misses = 0 if clean else misses + 1
        if misses == 2:
            break
    return clean_best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--workers", type=int, default=available_cpus())
    parser.add_argument("--skip-triton", action="store_true")
    parser.add_argument("--skip-pa", action="store_true", help="do not run perf_analyzer")
    args = parser.parse_args()
    binary = Path(os.environ.get("PERF_ANALYZER", PA_DEFAULT))
    have_pa = not args.skip_pa and binary.exists() and shutil.which(str(binary)) is not None
    print(f"machine: {available_cpus()} CPUs ({_cpu_model()}), python {sys.version.split()[0]}")
    print(f"started {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; clean = send-lag p99 ≤ 1 ms, ≥ 99 %")
    print("on time, no errors; CPU = all generator processes, spin-wait included")
    best_of: dict[tuple[str, str, int], Row | None] = {}
    with running_stub() as stub:
        for protocol, url in (("http", stub.http_url), ("grpc", stub.grpc_url)):
            for workers in sorted({1, args.workers}):
                best_of[("stub", protocol, workers)] = best(
                    ladder("stub", url, protocol, workers, args.seconds)
                )
    pa_best: dict[str, float | None] = {}
    if not args.skip_triton:
        with tempfile.TemporaryDirectory() as tmp:
            build_repository(Path(tmp), ["tiny"])
            with EmbeddedTriton(Path(tmp), models=["tiny"]) as server:
                for protocol, url in (("http", server.http_url), ("grpc", server.grpc_url)):
                    for workers in sorted({1, args.workers}):
                        best_of[("triton", protocol, workers)] = best(
                            ladder("triton", url, protocol, workers, args.seconds)
                        )
                    if have_pa:
                        pa_best[protocol] = perf_analyzer_ladder(
                            binary, url, protocol, args.seconds
                        )
    summary(best_of, pa_best, have_pa, args.workers)


def summary(
    best_of: dict[tuple[str, str, int], Row | None],
    pa_best: dict[str, float | None],
    have_pa: bool,
    workers: int,
) -> None:
    print("\nhighest clean rate (QPS), CPU µs/req and send-gap CV at that rate")
    print("target  proto  workers    rate  CPU µs  CV     vs perf_analyzer")
    for (name, protocol, count), row in best_of.items():
        reference, source = None, ""
        if name == "triton" and have_pa:
            reference, source = pa_best.get(protocol), "measured here"
        ratio = "—"
        if row is not None and reference:
            ratio = f"{row.qps / reference:.2f}× ({source}: {reference:g})"
        elif name == "triton" and not reference:
            ratio = "no perf_analyzer rate to compare"
        if row is None:
            print(f"{name:7} {protocol:6} {count:7d}  none clean")
            continue
        print(f"{name:7} {protocol:6} {count:7d} {row.qps:7.0f} {row.cpu_us:7.0f} {row.cv:6.3f} "
              f"{ratio}")  # fmt: skip
    if not have_pa:
        print(
            "perf_analyzer not run: make it with benchmarks/perf_analyzer_root.sh "
            "(it needs glibc ≥ 2.38: a Debian 13 root provides it) or set PERF_ANALYZER"
        )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
