"""Failed queries behind reverse proxies that rotate HTTP/2 connections, and the p99 they add
(issue #26's goals).

nginx closes a client's HTTP/2 connection after `keepalive_requests` requests with a GOAWAY; a
stream the client sent meanwhile was never processed, and grpc-core sends it again (gRFC A6). This
runs `loadtest server` over gRPC against the stub through:

- nginx, `grpc_pass`, keepalive_requests 10, 100 and 1000 (Debian's nginx, as tests/proxies.py
  runs it);
- HAProxy, HTTP/2 on both sides;
- and straight to the stub ("direct"), on the same schedule, for the p99 the proxies add;

at a fixed rate for a fixed time, over several seeds, for each client asked: the wire client of
a given checkout (`--before DIR`: e.g. `git archive <commit> | tar -x -C DIR`; by default only
this checkout's) and grpcio (--grpc-client grpcio, this checkout). Seeds are the outer loop (each
seed runs every setup and client in turn), so a change in the machine's load spreads over all.
Each run's failed queries, their error kinds, re-sent calls, p99 latency (loadtest's own: from
the scheduled send time to the answer) and the verdict's exit code are printed, then a table of
the failed queries, one of the p99s (the median over the seeds), and the proxy's cost: the
median p99 through each proxy minus, and over, the median direct p99 of the same client.

The stub and the proxies run on the server's cores, the client on the others
(benchmarks/pinning.py; --no-pin to share them).

    python benchmarks/proxy_goaway.py [--qps 500] [--duration 60] [--seeds 7,8,9,10,11]
        [--proxies direct,nginx-kr10,...] [--before DIR] [--clients wire,grpcio] [--output FILE]

The output goes to a new benchmarks/results/proxy-goaway-<date>-<time>.txt by default, rewritten
after every run (marked unfinished until the last), so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from pinning import Cores, add_pinning_arguments, choose_cores, pin_tree, stub_on, this_process_on
from results_file import Output, add_output_arguments, claim_output, footer, header

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the proxy launchers the tests use
from proxies import haproxy, nginx  # noqa: E402

PROXIES = ("direct", "nginx-kr10", "nginx-kr100", "nginx-kr1000", "haproxy")
DIRECT = "direct"


@contextlib.contextmanager
def proxy(name: str, directory: Path, grpc_upstream: str, cores: Cores | None) -> Iterator[str]:
    """The proxy's gRPC host:port, while it runs on the server's cores ("direct": the
    upstream's own)."""
    if name == DIRECT:
        yield grpc_upstream
        return
    with contextlib.ExitStack() as stack:
        with this_process_on(cores.server) if cores else nullcontext():
            if name == "haproxy":
                running = stack.enter_context(haproxy(directory, grpc_upstream=grpc_upstream))
            else:
                requests = int(name.removeprefix("nginx-kr"))
                running = stack.enter_context(
                    nginx(directory, grpc_upstream=grpc_upstream, keepalive_requests=requests)
                )
        if cores:
            pin_tree(running.pid, cores.server)
        yield running.url("grpc")


@dataclass
class Run:
    exit: int
    errors: int  # -1: no result.json
    completed: int = 0
    p99_ms: float = float("nan")
    kinds: dict[str, int] = field(default_factory=dict)
    resent: int = 0  # transparent retries: calls sent again, never processed
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
    result_json = json.loads(path.read_text())
    summary = result_json.get("summary", {})
    return Run(
        result.returncode,
        int(summary.get("errors", 0)),
        int(summary.get("completed_ok", 0)),
        summary.get("latency", {}).get("p99_ns", float("nan")) / 1e6,
        dict(summary.get("errors_by_kind") or {}),
        int((result_json.get("client") or {}).get("transparent_retries", 0)),
    )


class Kept(Output):
    """An Output that only keeps its lines (the partial file rewritten after each run)."""

    def __call__(self, text: str = "") -> None:
        self.lines.extend(text.split("\n"))


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def tables(
    out: Output,
    args: argparse.Namespace,
    proxies: list[str],
    labels: list[str],
    totals: dict[tuple[str, str], list[int]],
    p99s: dict[tuple[str, str], list[float]],
) -> None:
    """Failed queries per setup and client, the median p99s, and each proxy's cost."""
    width = 24
    head = f"{'setup':12} | " + " | ".join(f"{label:{width}}" for label in labels)
    out(f"\nfailed queries at {args.qps:g} QPS for {args.duration:g} s, seeds {args.seeds}:")
    out(head)
    for name in proxies:
        cells = []
        for label in labels:
            counts = totals.get((name, label), [])
            cells.append(f"{' + '.join(map(str, counts))} = {sum(counts)}".ljust(width))
        out(f"{name:12} | " + " | ".join(cells))
    out("\np99 latency, ms (loadtest's, scheduled send -> answer; the median over the seeds):")
    out(head)
    for name in proxies:
        cells = [f"{median(p99s.get((name, label), [])):.2f}".ljust(width) for label in labels]
        out(f"{name:12} | " + " | ".join(cells))
    if DIRECT not in proxies:
        return
    out("\nthe proxy's cost: median p99 through it minus the direct median p99 (ms), and ratio:")
    out(head)
    for name in proxies:
        if name == DIRECT:
            continue
        cells = []
        for label in labels:
            direct = median(p99s.get((DIRECT, label), []))
            through = median(p99s.get((name, label), []))
            ratio = through / direct if direct > 0 and not math.isnan(through) else float("nan")
            cells.append(f"{through - direct:+.2f} ms, x{ratio:.2f}".ljust(width))
        out(f"{name:12} | " + " | ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--qps", type=float, default=500.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--seeds", default="7,8,9,10,11")
    parser.add_argument("--proxies", default=",".join(PROXIES))
    parser.add_argument("--clients", default="wire,grpcio", help="wire and/or grpcio")
    parser.add_argument(
        "--before", type=Path, help="another checkout whose wire client runs too (as 'before')"
    )
    add_pinning_arguments(parser)
    add_output_arguments(parser, "proxy-goaway")
    args = parser.parse_args()
    path = claim_output(parser, args.output, args.force, "proxy-goaway")
    try:
        cores, pinning = choose_cores(args.client_cores, args.server_cores, args.no_pin)
    except ValueError as error:
        parser.error(str(error))
    seeds = [int(seed) for seed in args.seeds.split(",")]
    proxies = args.proxies.split(",")
    unknown = [name for name in proxies if name not in PROXIES and not name.startswith("nginx-kr")]
    if unknown:
        parser.error(f"unknown setup {unknown[0]!r}: use {', '.join(PROXIES)} or nginx-krN")
    columns: list[tuple[str, Path, str]] = []  # (label, checkout, client)
    if args.before is not None:
        columns.append(("wire before", args.before.resolve(), "wire"))
    for client in args.clients.split(","):
        columns.append((f"{client} (this checkout)", REPO, client))
    labels = [label for label, _, _ in columns]

    out = Output()
    header(out, "proxy_goaway.py", os.cpu_count() or 1)
    out(pinning + " (the stub and the proxy share the server's)")
    if args.before is not None:
        out(f"before: {args.before}")
    out(
        "p99: loadtest's own, from the scheduled send time to the answer; resent: calls sent "
        "again because the server or proxy said they were never processed (transparent retries)"
    )
    totals: dict[tuple[str, str], list[int]] = {}
    p99s: dict[tuple[str, str], list[float]] = {}
    runs, planned = 0, len(seeds) * len(proxies) * len(columns)
    # SIGTERM unwinds (SystemExit) so the proxies and the stub are stopped, not orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with (
        tempfile.TemporaryDirectory() as scratch,
        this_process_on(cores.client) if cores else nullcontext(),
        stub_on(cores) as stub,
    ):
        for seed in seeds:
            for proxy_name in proxies:
                folder = Path(scratch) / f"{proxy_name}-{seed}"
                with proxy(proxy_name, folder, stub.grpc_url, cores) as url:
                    for label, checkout, client in columns:
                        runs += 1  # each run its own --output folder
                        run_dir = Path(scratch) / f"run-{runs}"
                        got = one_run(checkout, client, url, args.qps, args.duration, seed, run_dir)
                        totals.setdefault((proxy_name, label), []).append(got.errors)
                        p99s.setdefault((proxy_name, label), []).append(got.p99_ms)
                        out(
                            f"{proxy_name:12} seed {seed}  {label:22} exit {got.exit}  "
                            f"failed {got.errors:>4}  ok {got.completed}  resent {got.resent:>4}  "
                            f"p99 {got.p99_ms:.2f} ms  {got.kinds or ''} {got.note}"
                        )
                        if runs < planned:  # what is measured so far survives a cut-short run
                            partial = Kept()
                            partial.lines = list(out.lines)
                            tables(partial, args, proxies, labels, totals, p99s)
                            partial(f"\nunfinished: {runs} of {planned} runs")
                            partial.write(path)
    tables(out, args, proxies, labels, totals, p99s)
    footer(out)
    out.write(path)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
