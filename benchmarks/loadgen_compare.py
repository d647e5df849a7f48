"""loadtest against MLPerf's LoadGen on one schedule: latency from the scheduled time, side by side.

Issue #27's goal: loadtest and LoadGen playing the same LoadGen schedule against the same server
report p99 within 5 % of each other. Each round plays, one after the other (LoadGen first in odd
rounds, loadtest first in even ones, replaying round 1's trace: LoadGen's schedule is the same
every time, from the same seeds):

1. LoadGen's Server scenario (mlcommons-loadgen, in this process: benchmarks/loadgen_sut.py) at
   --qps for --seconds, trace on. Its SUT sends each query with loadtest's own client and
   samples, so both tools send the same requests through the same library.
2. `loadtest server --trace <LoadGen's mlperf_log_trace.json> --trace-format loadgen --workers 1`
   (a subprocess, the CLI as a user runs it): the same arrival times, sample by sample.

Each against a fresh stub (`loadtest stub --servers K --delay-ms S --service exponential
--service-seed N`, stub/service.py): a FIFO queue in front of K servers with seeded exponential
service, utilisation ρ = qps·S/K, where the n-th arrival meets the same service time in both
runs. A queue makes p99 sensitive to how the sends land (a burstier or later send waits longer),
which is what the comparison must see. The stub runs on the server's cores, both clients on the
client's (benchmarks/pinning.py).

Printed per round and tool: p50 / p90 / p99 of latency from the scheduled time over every query,
computed here one way (exact, sorted[floor(n·p)]) from LoadGen's per-sample `complete_ns` (its
trace) and loadtest's records, each tool's own report beside them (mlperf_log_summary.txt,
result.json), and loadtest ÷ LoadGen; how late each tool sent (LoadGen: scheduled -> IssueQuery
called, its `issue_start_ns`, then apart from it the SUT's IssueQuery -> request written, which
includes any wait for a free connection; loadtest: scheduled -> request written; and how many
queries of each waited for a connection, since both use one client's pool); each tool's client
CPU per query (user + system: getrusage of LoadGen's process over the test, result.json's for
loadtest); and that both played the same times (the largest difference between the two
schedules, each from its first query). The same schedule every round, so the rounds show the
run-to-run noise of this machine; the summary gives each round's p99 ratio, their median, and how
many rounds were within the goal.

    python benchmarks/loadgen_compare.py [--qps 400] [--seconds 40] [--rounds 4]
        [--servers 4] [--service-ms 6] [--protocol http] [--service-seed 7]
        [--server stub|triton|triton-fixed] [--model tiny]

`--server triton` puts the embedded Triton (a fresh one per run, serving --model from
model_repository/) in the stub's place: the issue's "a small SUT that sends LoadGen's queries to
Triton". Its service times are Triton's own, not seeded, so the rounds show that noise too.
`--server triton-fixed` has the embedded Triton serve benchmarks/fixed_service/ (Python backend,
one instance, no batching, every request held --service-ms): an M/D/1 queue inside a real
Triton, so both tools meet the same queue and the noise of a model's compute is out of the way.

The output goes to a new benchmarks/results/loadgen-compare-<date>-<time>.txt by default.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from loadgen_sut import (
    LoadGenPlay,
    LoadGenSamples,
    loadgen_version,
    play_loadgen,
    read_samples,
    read_summary,
)
from pinning import (
    Cores,
    add_pinning_arguments,
    choose_cores,
    pin_tree,
    stub_on,
    this_process_on,
)
from results_file import Output, add_output_arguments, claim_output, footer, header
from server_run import METHOD, ServerRun, exact, loadtest_server

from loadtest.server.embedded import EmbeddedTriton

PERCENTILES = (0.5, 0.9, 0.99)
GOAL = 0.05  # issue #27: p99 within 5 %
SAMPLES = 64
HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@dataclass(frozen=True)
class Pair:
    """One round: LoadGen's run and loadtest's replay of its schedule."""

    loadgen: LoadGenSamples
    loadgen_own: dict[float, int]  # mlperf_log_summary.txt
    to_write_ns: np.ndarray  # the SUT's IssueQuery -> written
    sut_waits: int  # the SUT's queries that waited for a connection
    loadgen_cpu_s: float  # LoadGen's process over the test
    loadgen_failed: int
    loadtest: ServerRun
    order: str  # which ran first

    def ratio(self, percentile: float) -> float:
        return exact(self.loadtest.latency_ns, percentile) / exact(
            self.loadgen.latency_ns, percentile
        )


FIXED_SERVICE = "fixed_service"


def fixed_service_repository(root: Path, service_ms: float) -> Path:
    """A repository of one model, benchmarks/fixed_service/, holding each request service_ms:
    tiny's tensors, Python backend, one instance, no batching (an M/D/1 queue in Triton)."""
    repository = root / "fixed-service-repository"
    version = repository / FIXED_SERVICE / "1"
    if not version.is_dir():
        version.mkdir(parents=True)
        (version / "model.py").write_text((HERE / "fixed_service" / "model.py").read_text())
    config = f"""name: "{FIXED_SERVICE}"
backend: "python"
max_batch_size: 0
input {{
  name: "INPUT0"
  data_type: TYPE_FP32
  dims: [ 16 ]
}}
output {{
  name: "OUTPUT0"
  data_type: TYPE_FP32
  dims: [ 16 ]
}}
instance_group {{
  count: 1
  kind: KIND_CPU
}}
parameters {{
  key: "service_ms"
  value {{
    string_value: "{service_ms:g}"
  }}
}}
"""
    (repository / FIXED_SERVICE / "config.pbtxt").write_text(config)
    return repository


def ms(ns: float) -> str:
    return f"{ns / 1e6:.3f}"


@contextmanager
def serving(args: argparse.Namespace, cores: Cores | None) -> Iterator[str]:
    """A fresh server on the server's cores, its URL for --protocol: the queueing stub
    (`--server stub`), or the embedded Triton serving --model from model_repository/
    (`--server triton`)."""
    if args.server == "stub":
        options = ["--delay-ms", str(args.service_ms), "--servers", str(args.servers)]
        options += ["--service", "exponential", "--service-seed", str(args.service_seed)]
        with stub_on(cores, *options, "--grpc-server", "wire") as stub:
            yield stub.grpc_url if args.protocol == "grpc" else stub.http_url
        return
    with this_process_on(cores.server) if cores else nullcontext():
        if args.server == "triton-fixed":
            repository = fixed_service_repository(Path(args.scratch), args.service_ms)
            server = EmbeddedTriton(repository, models=[FIXED_SERVICE])
        else:
            server = EmbeddedTriton(REPO / "model_repository", models=[args.model])
        server.start()
    try:
        assert server.pid is not None
        if cores:
            pin_tree(server.pid, cores.server)
        yield server.grpc_url if args.protocol == "grpc" else server.http_url
    finally:
        server.cleanup()


def one_round(
    args: argparse.Namespace, cores: Cores | None, scratch: Path, k: int, earlier: Path | None
) -> Pair:
    """LoadGen's run and loadtest's replay of LoadGen's schedule, each against a fresh stub.
    Odd rounds play LoadGen first (the first round must: its trace is the schedule); even ones
    play loadtest first, replaying the `earlier` round's trace (LoadGen draws the same schedule
    every time, and the report checks it did), so a machine getting busier or quieter over a
    round does not favour one tool."""
    directory = scratch / f"loadgen-{k}"
    directory.mkdir()

    def loadgen() -> LoadGenPlay:
        with serving(args, cores) as url:
            bound_ns = int(args.bound_ms * 1e6)
            return play_loadgen(
                url, args.protocol, args.qps, args.seconds, SAMPLES, bound_ns, directory, args.model
            )

    def loadtest(trace: Path) -> ServerRun:
        with serving(args, cores) as url:
            replay = ["--trace", str(trace), "--trace-format", "loadgen", "--workers", "1"]
            replay += ["--protocol", args.protocol, "--samples", str(SAMPLES), "-m", args.model]
            replay += ["--target-latency", str(args.bound_ms)]
            return loadtest_server(url, replay, scratch / f"loadtest-{k}", args.seconds + 120)

    if k % 2 == 0 and earlier is not None:
        run = loadtest(earlier)
        play = loadgen()
    else:
        play = loadgen()
        run = loadtest(play.trace)
    return Pair(
        read_samples(play.trace),
        read_summary(directory / "mlperf_log_summary.txt"),
        play.to_write_ns,
        play.connection_waits,
        play.cpu_s,
        play.failed,
        run,
        "loadtest first" if k % 2 == 0 and earlier is not None else "LoadGen first",
    )


def report_round(out: Output, k: int, pair: Pair) -> None:
    lg, lt = pair.loadgen, pair.loadtest
    same = len(lg.scheduled_ns) == len(lt.scheduled_ns)
    if same:
        ours = np.sort(lt.scheduled_ns) - lt.scheduled_ns.min()
        gap = f"largest difference {int(np.abs(ours - lg.scheduled_ns).max())} ns"
    else:
        gap = "not compared: the counts differ"
    out(f"\nround {k} ({pair.order}): {len(lg.scheduled_ns):,} queries scheduled by LoadGen, "
        f"{len(lt.scheduled_ns):,} replayed by loadtest (schedules from their first query: "
        f"{gap})")  # fmt: skip
    out(f"  failed: LoadGen's SUT {pair.loadgen_failed}, loadtest {int((~lt.ok).sum())}; "
        f"loadtest exit code {lt.exit_code}")  # fmt: skip
    out("  latency from the scheduled time, ms   p50      p90      p99")
    own = pair.loadgen_own
    lg_row = [exact(lg.latency_ns, p) for p in PERCENTILES]
    lt_row = [exact(lt.latency_ns, p) for p in PERCENTILES]
    lt_own = lt.summary["latency"]
    out("  LoadGen  (its trace's complete_ns)  " + "  ".join(f"{ms(v):>7}" for v in lg_row))
    out("  LoadGen  (mlperf_log_summary.txt)   "
        + "  ".join(f"{ms(own.get(p, float('nan'))):>7}" for p in PERCENTILES))  # fmt: skip
    out("  loadtest (its records)              " + "  ".join(f"{ms(v):>7}" for v in lt_row))
    out("  loadtest (result.json summary)      "
        + "  ".join(f"{ms(lt_own[k]):>7}" for k in ("p50_ns", "p90_ns", "p99_ns")))  # fmt: skip
    out("  loadtest ÷ LoadGen                  "
        + "  ".join(f"{pair.ratio(p):>7.3f}" for p in PERCENTILES))  # fmt: skip
    lag = lt.send_lag_ns
    out(f"  sends: LoadGen scheduled -> IssueQuery p50 {ms(exact(lg.issue_delay_ns, 0.5))} / "
        f"p99 {ms(exact(lg.issue_delay_ns, 0.99))} / max {ms(lg.issue_delay_ns.max())} ms, then "
        f"its SUT IssueQuery -> written p50 {ms(exact(pair.to_write_ns, 0.5))} / "
        f"p99 {ms(exact(pair.to_write_ns, 0.99))} / max {ms(pair.to_write_ns.max())} ms "
        f"({pair.sut_waits} waited for a connection); loadtest scheduled -> written "
        f"p50 {ms(exact(lag, 0.5))} / p99 {ms(exact(lag, 0.99))} / max {ms(lag.max())} ms "
        f"({lt.result['client'].get('connection_waits', 0)} waited for a connection)")  # fmt: skip
    lg_cpu_us = pair.loadgen_cpu_s / len(lg.scheduled_ns) * 1e6
    out(f"  client CPU per query: LoadGen's process {lg_cpu_us:.0f} µs (LoadGen's threads, its "
        f"trace and the SUT); loadtest {lt.result['client']['cpu_us_per_query']:.0f} µs "
        "(its generator process, spin-waiting included)")  # fmt: skip


def report_summary(out: Output, pairs: list[Pair]) -> None:
    ratios = [pair.ratio(0.99) for pair in pairs]
    within = sum(abs(r - 1) <= GOAL for r in ratios)
    out(f"\np99 loadtest ÷ LoadGen per round: {', '.join(f'{r:.3f}' for r in ratios)}; "
        f"median {statistics.median(ratios):.3f}; within {GOAL:.0%} (issue #27's goal) in "
        f"{within} of {len(ratios)}")  # fmt: skip
    if len(pairs) > 1:
        for name, values in (
            ("LoadGen", [exact(p.loadgen.latency_ns, 0.99) for p in pairs]),
            ("loadtest", [exact(p.loadtest.latency_ns, 0.99) for p in pairs]),
        ):
            out(f"{name} p99 over the rounds: {', '.join(ms(v) for v in values)} ms "
                f"(spread {(max(values) / min(values) - 1):.1%}: the same tool, the same "
                "schedule, this machine's noise)")  # fmt: skip


def parse_arguments() -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--qps", type=float, default=400.0, help="LoadGen's server_target_qps")
    parser.add_argument("--seconds", type=float, default=40.0, help="LoadGen's min duration")
    parser.add_argument("--rounds", type=int, default=4, help="pairs, order alternating")
    parser.add_argument("--servers", type=int, default=4, help="the stub's servers (K)")
    parser.add_argument("--service-ms", type=float, default=6.0, help="mean service time (S)")
    parser.add_argument("--service-seed", type=int, default=7, help="the stub's service draws")
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http")
    parser.add_argument("--bound-ms", type=float, default=100.0, help="latency bound (verdicts)")
    parser.add_argument(
        "--server",
        choices=("stub", "triton", "triton-fixed"),
        default="stub",
        help="the queueing stub (seeded service, the default), the embedded Triton serving "
        "--model, or the embedded Triton serving a fixed --service-ms per request (M/D/1)",
    )
    parser.add_argument("--model", default="tiny", help="the model both tools send queries to")
    add_pinning_arguments(parser)
    add_output_arguments(parser, "loadgen-compare")
    return parser, parser.parse_args()


def main() -> None:
    parser, args = parse_arguments()
    if args.qps <= 0 or args.seconds <= 0 or args.rounds < 1 or args.servers < 1:
        parser.error("--qps and --seconds must be > 0, --rounds and --servers ≥ 1")
    if args.service_ms <= 0 or args.bound_ms <= 0:
        parser.error("--service-ms and --bound-ms must be > 0")
    if args.server == "triton-fixed":
        args.model = FIXED_SERVICE  # both tools send to the fixed-service model
    output = claim_output(parser, args.output, args.force, "loadgen-compare")
    version = loadgen_version()
    if version is None:
        parser.error("LoadGen is not installed: pip install 'loadtest[loadgen]'")
    try:
        cores, pinning = choose_cores(args.client_cores, args.server_cores, args.no_pin)
    except ValueError as error:
        parser.error(str(error))
    out = Output()
    header(out, "loadgen_compare.py", len(os.sched_getaffinity(0)))
    out(pinning)
    rho = args.qps * args.service_ms / 1e3 / args.servers
    out(f"LoadGen: mlcommons-loadgen {version}, Server scenario at {args.qps:g} QPS for "
        f"≥ {args.seconds:g} s, default seeds, {SAMPLES} samples; its SUT: loadtest's "
        f"{args.protocol} client on one loop thread")  # fmt: skip
    out(f"loadtest: server --trace <LoadGen's trace> --trace-format loadgen --workers 1 "
        f"--protocol {args.protocol} --samples {SAMPLES}")  # fmt: skip
    if args.server == "stub":
        out(f"server: a fresh stub per run, {args.servers} servers, exponential service mean "
            f"{args.service_ms:g} ms (seed {args.service_seed}), FIFO: ρ = {rho:.2f}")  # fmt: skip
    elif args.server == "triton-fixed":
        least_rho = args.qps * args.service_ms / 1e3
        out(f"server: a fresh embedded Triton per run serving benchmarks/fixed_service/ "
            f"(Python backend, 1 instance, no batching, {args.service_ms:g} ms per request "
            f"plus the backend's hand-over): M/D/1, ρ ≥ {least_rho:.2f}")  # fmt: skip
    else:
        out(f"server: a fresh embedded Triton per run serving {args.model} from "
            "model_repository/ (its own config: instances, batching)")  # fmt: skip
    out(f"percentiles: {METHOD}, over every query")
    started = time.monotonic()
    pairs: list[Pair] = []
    try:
        with (
            tempfile.TemporaryDirectory() as scratch,
            this_process_on(cores.client) if cores else nullcontext(),
        ):
            args.scratch = scratch
            for k in range(1, args.rounds + 1):
                earlier = Path(scratch) / "loadgen-1" / "mlperf_log_trace.json" if pairs else None
                pair = one_round(args, cores, Path(scratch), k, earlier)
                pairs.append(pair)
                report_round(out, k, pair)
        report_summary(out, pairs)
    finally:
        footer(out)
        out(f"took {time.monotonic() - started:.0f} s; written to {output}")
        out.write(output)


if __name__ == "__main__":
    main()
