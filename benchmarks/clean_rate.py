"""The highest Poisson rate one client process sustains cleanly, against the embedded Triton.

Clean (issue 3's definition) = send-lag p99 ≤ 1 ms and ≥ 99 % of queries sent within 1 ms of their
scheduled time. Each rate is one open-loop Server run of `--seconds` against the embedded Triton's
`tiny` model (client and server share this machine's cores, as they would in a quick local test);
the table shows, side by side, the send lag, the on-time share, client CPU per query (this process,
spin-wait included), achieved rate and p99 latency from scheduled time.

    python benchmarks/clean_rate.py [--rates 250 500 1000 1500 2000 3000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from loadtest.core.schedule import NS_PER_S, server_schedule
from loadtest.engine import timing
from loadtest.engine.runner import Runner
from loadtest.engine.samples import random_samples
from loadtest.models import build_repository
from loadtest.rules.stats import summarize
from loadtest.server.embedded import EmbeddedTriton
from loadtest.targets import triton_target


async def one_rate(url: str, protocol: str, qps: float, seconds: float) -> dict[str, float]:
    target = triton_target(url, protocol, "tiny")
    spec = await target.open()
    await target.prepare(random_samples(spec, 64, seed=1))
    schedule = server_schedule(qps, int(seconds * NS_PER_S), 1, 64, 0, 1)
    cpu = time.process_time()
    outcome = await Runner(schedule, target).run(handle_sigint=False)
    cpu = time.process_time() - cpu
    await target.close()
    summary = summarize(outcome.records, outcome.duration_ns, histogram=False)
    lag = summary.send_lag
    return {
        "qps": qps,
        "scheduled_qps": summary.scheduled_qps,
        "completed_qps": summary.completed_qps,
        "lag_p99_ms": lag.p99_ns / 1e6,
        "on_time_pct": 100 * (1 - lag.late_share),
        "clean": float(lag.kept_up),
        "cpu_us_per_query": cpu * 1e6 / max(1, summary.issued),
        "p99_ms": summary.latency.p99_ns / 1e6,
        "errors": summary.errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rates", nargs="+", type=float, default=[250, 500, 1000, 1500, 2000, 3000]
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        build_repository(Path(tmp), ["tiny"])
        with EmbeddedTriton(Path(tmp), models=["tiny"]) as server:
            url = server.grpc_url if args.protocol == "grpc" else server.http_url
            print(f"embedded Triton, model tiny, {args.protocol}, {args.seconds:g} s per rate")
            print(
                "requested  drawn  completed  lag p99 ms  on time %  clean  CPU µs/q  p99 ms errors"
            )
            best = 0.0
            for qps in args.rates:
                row = timing.run(one_rate(url, args.protocol, qps, args.seconds))
                print(
                    f"{row['qps']:9.0f} {row['scheduled_qps']:6.0f} {row['completed_qps']:10.0f} "
                    f"{row['lag_p99_ms']:11.3f} {row['on_time_pct']:10.2f} "
                    f"{'yes' if row['clean'] else 'NO':>6} {row['cpu_us_per_query']:9.0f} "
                    f"{row['p99_ms']:7.2f} {row['errors']:7.0f}"
                )
                if row["clean"] and row["errors"] == 0:
                    best = max(best, qps)
            print(f"highest clean rate tried: {best:g} QPS" if best else "no rate was clean")


if __name__ == "__main__":
    main()
