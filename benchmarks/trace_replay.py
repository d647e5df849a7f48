"""A 100 000-row trace replayed against the stub, beside a Poisson run at the same mean rate.

Issue #27's goal: a 60 s replay of a 100 000-row trace starts in under 2 s and keeps up as well
as a Poisson run at the same mean rate. This writes a plain CSV trace (`time_ns`, one row per
query) of a seeded Poisson process of --rows arrivals at --rows / --seconds QPS (1667 QPS for the
defaults), then runs, one after the other against the same stub (zero service time, on the
server's cores; the client on the client's: benchmarks/pinning.py):

- `loadtest server --trace trace.csv --workers 1` (the trace, played as recorded);
- `loadtest server --arrival poisson --qps <the trace's mean rate> --duration --seconds
  --workers 1` (loadtest's own Poisson schedule at the same rate, for the same time).

Both are the CLI as a user runs it (a subprocess). Printed for each run: the queries, how long
the command took to start playing (launch -> the run's start: imports, reading the trace,
connecting, the samples), send lag (scheduled -> request written) p50 / p99 / max from its
records, the share sent more than 1 ms late, loadtest's own "client kept up" verdict and exit
code; then the trace run ÷ the Poisson run for each lag figure. With --rounds N the pair runs N
times, alternating which goes first.

    python benchmarks/trace_replay.py [--rows 100000] [--seconds 60] [--rounds 1] [--seed 5]

The output goes to a new benchmarks/results/trace-replay-<date>-<time>.txt by default.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from pinning import add_pinning_arguments, choose_cores, stub_on, this_process_on
from results_file import Output, add_output_arguments, claim_output, footer, header
from server_run import METHOD, ServerRun, exact, loadtest_server

from loadtest.core.units import LATE_THRESHOLD_NS


def write_trace(path: Path, rows: int, seconds: float, seed: int) -> float:
    """A seeded Poisson process of `rows` arrivals at rows / seconds QPS, as CSV `time_ns` from
    0; its mean rate as loadtest reads it (rows / span)."""
    gaps = np.random.default_rng(seed).exponential(seconds / rows, size=rows - 1)
    times = np.concatenate([[0], np.cumsum(np.round(gaps * 1e9).astype(np.int64))])
    path.write_text("time_ns\n" + "\n".join(map(str, times.tolist())) + "\n")
    return rows / (times[-1] / 1e9)


def describe(name: str, run: ServerRun) -> list[str]:
    lag = run.send_lag_ns
    late = float((lag > LATE_THRESHOLD_NS).mean()) if len(lag) else 0.0
    kept = run.summary.get("client_kept_up")
    allowed_ms = run.summary["send_lag"]["allowed_lag_ns"] / 1e6
    return [
        f"  {name:8} {len(run.scheduled_ns):>7,} queries, started playing {run.ready_s:.2f} s "
        f"after launch, took {run.wall_s:.1f} s, exit code {run.exit_code}",
        f"  {'':8} send lag p50 {exact(lag, 0.5) / 1e6:.3f} / p99 {exact(lag, 0.99) / 1e6:.3f} / "
        f"max {lag.max() / 1e6:.3f} ms; {late:.2%} sent > 1 ms late; client kept up: "
        f"{'yes' if kept else 'no'} (loadtest's verdict: send-lag p99 ≤ {allowed_ms:g} ms, "
        "5 % of the 100 ms bound)",
    ]


def ratios(trace: ServerRun, poisson: ServerRun) -> str:
    a, b = trace.send_lag_ns, poisson.send_lag_ns
    parts = [
        f"{label} {exact(a, p) / max(exact(b, p), 1):.2f}"
        for label, p in (("p50", 0.5), ("p99", 0.99))
    ]
    parts.append(f"max {a.max() / max(b.max(), 1):.2f}")
    return "  send lag, trace ÷ Poisson: " + ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="queries in the trace")
    parser.add_argument("--seconds", type=float, default=60.0, help="the trace's length")
    parser.add_argument("--rounds", type=int, default=1, help="trace and Poisson, this often")
    parser.add_argument("--seed", type=int, default=5, help="the trace's and Poisson's seed")
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http")
    add_pinning_arguments(parser)
    add_output_arguments(parser, "trace-replay")
    args = parser.parse_args()
    if args.rows < 2 or args.seconds <= 0 or args.rounds < 1:
        parser.error("--rows must be ≥ 2, --seconds > 0 and --rounds ≥ 1")
    output = claim_output(parser, args.output, args.force, "trace-replay")
    try:
        cores, pinning = choose_cores(args.client_cores, args.server_cores, args.no_pin)
    except ValueError as error:
        parser.error(str(error))
    out = Output()
    header(out, "trace_replay.py", len(os.sched_getaffinity(0)))
    out(pinning)
    out(f"send lag: scheduled -> request written, {METHOD}; late = > 1 ms")
    started = time.monotonic()
    try:
        with (
            tempfile.TemporaryDirectory() as scratch,
            this_process_on(cores.client) if cores else nullcontext(),
            stub_on(cores) as stub,
        ):
            trace = Path(scratch) / "trace.csv"
            qps = write_trace(trace, args.rows, args.seconds, args.seed)
            out(f"trace: {args.rows:,} rows, Poisson (seed {args.seed}), mean {qps:,.1f} QPS "
                f"over {args.rows / qps:.1f} s, CSV {trace.stat().st_size / 1e6:.1f} MB; "
                "the stub: no service time")  # fmt: skip
            url = stub.grpc_url if args.protocol == "grpc" else stub.http_url
            common = ["--protocol", args.protocol, "--workers", "1", "--target-latency", "100"]
            arguments = {
                "trace": ["--trace", str(trace), *common],
                "poisson": ["--arrival", "poisson", "--qps", f"{qps:.6f}", "--duration",
                            f"{args.rows / qps:.6f}", "--seed", str(args.seed), *common],
            }  # fmt: skip
            for k in range(1, args.rounds + 1):
                order = ["trace", "poisson"] if k % 2 else ["poisson", "trace"]
                runs: dict[str, ServerRun] = {}
                for name in order:
                    folder = Path(scratch) / f"{name}-{k}"
                    runs[name] = loadtest_server(
                        url, arguments[name], folder, args.seconds * 3 + 60
                    )
                out(f"\nround {k} ({' then '.join(order)}):")
                for name in ("trace", "poisson"):
                    for line in describe(name, runs[name]):
                        out(line)
                out(ratios(runs["trace"], runs["poisson"]))
    finally:
        footer(out)
        out(f"took {time.monotonic() - started:.0f} s; written to {output}")
        out.write(output)


if __name__ == "__main__":
    main()
