"""Failed queries behind reverse proxies that rotate HTTP/2 connections (issue #26's goal).

nginx closes a client's HTTP/2 connection after `keepalive_requests` requests with a GOAWAY; a
stream the client sent meanwhile was never processed, and grpc-core sends it again (gRFC A6). This
runs `loadtest server` over gRPC against the stub through:

- nginx, `grpc_pass`, keepalive_requests 10 and 100 (Debian's nginx, as tests/proxies.py runs it);
- HAProxy, HTTP/2 on both sides;
- and straight to the stub ("direct"), for the p99 the proxies add;

at a fixed rate for a fixed time, over several seeds, for each client asked: the wire client of
a given checkout (`--before DIR`: e.g. `git archive <commit> | tar -x -C DIR`; by default only
this checkout's) and grpcio (--grpc-client grpcio, this checkout). Each run's failed
queries, their error kinds, p99 latency and the verdict's exit code are printed, then a table of
the failed queries and one of the p99s (the median over the seeds).

    python benchmarks/proxy_goaway.py [--qps 500] [--duration 20] [--seeds 7,8,9]
        [--before DIR] [--clients wire,grpcio] [--output FILE]

The output goes to a new benchmarks/results/proxy-goaway-<date>-<time>.txt by default.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from results_file import Output, add_output_arguments, claim_output, footer, header

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the proxy launchers the tests use
from proxies import haproxy, nginx  # noqa: E402

from loadtest.stub.process import running_stub  # noqa: E402

PROXIES = ("nginx-kr10", "nginx-kr100", "haproxy", "direct")


@contextlib.contextmanager
def proxy(name: str, directory: Path, grpc_upstream: str) -> Iterator[str]:
    """The proxy's gRPC host:port, while it runs ("direct": the upstream's own)."""
    if name == "direct":
        yield grpc_upstream
    elif name == "haproxy":
        with haproxy(directory, grpc_upstream=grpc_upstream) as running:
            yield running.url("grpc")
    else:
        requests = int(name.removeprefix("nginx-kr"))
        with nginx(directory, grpc_upstream=grpc_upstream, keepalive_requests=requests) as running:
            yield running.url("grpc")


@dataclass
class Run:
    exit: int
    errors: int  # -1: no result.json
    completed: int = 0
    p99_ms: float = float("nan")
    kinds: dict[str, int] = field(default_factory=dict)
    note: str = ""


def one_run(
    checkout: Path, client: str, url: str, qps: float, duration: float, seed: int, out_dir: Path
) -> Run:
    """`loadtest server` from `checkout`; its summary's counts, p99, error kinds, exit code."""
    command = [sys.executable, "-m", "loadtest.cli", "server", "--url", url]
    command += ["--protocol", "grpc", "-m", "tiny", "--embedded", "never", "--qps", str(qps)]
    command += ["--duration", str(duration), "--seed", str(seed), "--target-latency", "50"]
    command += ["--no-live", "--output", str(out_dir)]
    if client != "wire":  # the default everywhere: an older checkout (--before) has no flag
        command += ["--grpc-client", client]
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    result = subprocess.run(
        command, cwd=checkout, env=env, capture_output=True, text=True, timeout=duration + 120
    )
    path = out_dir / "result.json"
    if not path.exists():
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
        return Run(result.returncode, -1, note=" ".join(tail))
    summary = json.loads(path.read_text()).get("summary", {})
    return Run(
        result.returncode,
        int(summary.get("errors", 0)),
        int(summary.get("completed_ok", 0)),
        summary.get("latency", {}).get("p99_ns", float("nan")) / 1e6,
        dict(summary.get("errors_by_kind") or {}),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--qps", type=float, default=500.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--seeds", default="7,8,9")
    parser.add_argument("--proxies", default=",".join(PROXIES))
    parser.add_argument("--clients", default="wire,grpcio", help="wire and/or grpcio")
    parser.add_argument(
        "--before", type=Path, help="another checkout whose wire client runs too (as 'before')"
    )
    add_output_arguments(parser, "proxy-goaway")
    args = parser.parse_args()
    path = claim_output(parser, args.output, args.force, "proxy-goaway")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    proxies = args.proxies.split(",")
    columns: list[tuple[str, Path, str]] = []  # (label, checkout, client)
    if args.before is not None:
        columns.append(("wire before", args.before.resolve(), "wire"))
    for client in args.clients.split(","):
        columns.append((f"{client} (this checkout)", REPO, client))

    out = Output()
    header(out, "proxy_goaway.py", os.cpu_count() or 1)
    if args.before is not None:
        out(f"before: {args.before}")
    totals: dict[tuple[str, str], list[int]] = {}
    p99s: dict[tuple[str, str], list[float]] = {}
    runs = 0
    # SIGTERM unwinds (SystemExit) so the proxies and the stub are stopped, not orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with running_stub() as stub, tempfile.TemporaryDirectory() as scratch:
        for proxy_name in proxies:
            with proxy(proxy_name, Path(scratch) / proxy_name, stub.grpc_url) as url:
                for seed in seeds:
                    for label, checkout, client in columns:
                        runs += 1  # each run its own --output folder
                        run_dir = Path(scratch) / f"run-{runs}"
                        got = one_run(checkout, client, url, args.qps, args.duration, seed, run_dir)
                        totals.setdefault((proxy_name, label), []).append(got.errors)
                        p99s.setdefault((proxy_name, label), []).append(got.p99_ms)
                        out(
                            f"{proxy_name:12} seed {seed}  {label:22} exit {got.exit}  "
                            f"failed {got.errors:>4}  ok {got.completed}  "
                            f"p99 {got.p99_ms:.2f} ms  {got.kinds or ''} {got.note}"
                        )
    out(f"\nfailed queries at {args.qps:g} QPS for {args.duration:g} s, seeds {args.seeds}:")
    out(f"{'proxy':12} | " + " | ".join(f"{label:22}" for label, _, _ in columns))
    for proxy_name in proxies:
        cells = []
        for label, _, _ in columns:
            counts = totals.get((proxy_name, label), [])
            cells.append(f"{' + '.join(map(str, counts))} = {sum(counts)}".ljust(22))
        out(f"{proxy_name:12} | " + " | ".join(cells))
    out("\np99 latency, ms (median over the seeds):")
    out(f"{'proxy':12} | " + " | ".join(f"{label:22}" for label, _, _ in columns))
    for proxy_name in proxies:
        cells = [
            f"{statistics.median(p99s.get((proxy_name, label), [float('nan')])):.2f}".ljust(22)
            for label, _, _ in columns
        ]
        out(f"{proxy_name:12} | " + " | ".join(cells))
    footer(out)
    out.write(path)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
