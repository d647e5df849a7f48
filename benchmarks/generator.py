"""How fast the generator itself is: its highest clean Poisson rate, CPU per request and send law.

Side by side in one run on this machine, against (a) the zero-compute stub (`loadtest stub`; its
gRPC side is stub/grpc_wire_server.py, ~60k calls/s closed loop, so gRPC rows against it measure
the client) and (b) the embedded Triton serving `tiny` (the real server, on its own cores: see
below), over HTTP and gRPC, for 1 worker process and for N (default: one per client core):

- clean = the generator kept up and its sends were Poisson: send-lag p99 ≤ 1 ms, ≥ 99 % of queries
  sent within 1 ms of their scheduled time (the absolute rule, not a run's latency-bound
  allowance), no query failed or went unanswered, and the send-gap CV within 0.05 of the
  schedule's own (the same queries' due times: ≈ 1 for Poisson, exactly what the run drew);
- client CPU µs per request = user+system CPU of every generator process / queries issued
  (spin-waiting included: it is what the generator costs the machine);
- send-gap CV = std/mean of the gaps between actual sends, all workers merged, beside the
  schedule's own (engine/selfmeasure.py's gaps_follow_schedule judges the two).

gRPC rows are measured for each load client in --grpc-clients (default "wire,grpcio"): the wire
client (wire/grpc_wire.py, the default) and grpc.aio (--grpc-client grpcio, the load
path before issue #14, one worker only), so the before and after stand side by side in one run.

Each rate is one Server-scenario run of --seconds. Every ladder (loadtest's and perf_analyzer's)
climbs by its step until two rates in a row are not clean, however high that is (a safety cap of
MAX_RUNGS rungs says so if it is ever reached): no table ends at its top rung.
perf_analyzer (async, Poisson, same server, same rates) runs beside it when its binary is found
(PERF_ANALYZER=path, or /opt/loadtest-trixie/perf_analyzer as benchmarks/perf_analyzer_root.sh
makes it); its "delayed" share (requests sent more than 1 ms late, docs/reference.md) decides its
clean rate (≤ 1 %); it reports no send times, so it has no CV column. Without it, no ratio is
printed: a perf_analyzer figure is only ever one measured in the same run.

Every run writes its whole output to a new dated file under benchmarks/results/ (or --output,
refused if it exists unless --force), headed by the date, machine, load average (before and after)
and the git commit measured; benchmarks/results/INDEX.md says which claim each file supports.

Client and server on disjoint cores (the default when the server is local, as it always is here):
the stub or the embedded Triton and everything it starts run on the server's cores, this process,
its worker processes and perf_analyzer on the client's (benchmarks/pinning.py; on 2 vCPUs one core
each; --client-cores/--server-cores choose them, --no-pin shares all cores as before 2026-12). Each
server's closed-loop capacity, measured from the client's cores, is printed as the roofline.

    python benchmarks/generator.py [--seconds 5] [--workers N] [--skip-triton] [--skip-pa]
                                   [--targets stub,triton] [--protocols http,grpc]
                                   [--grpc-clients wire,grpcio] [--no-pin] [--output FILE]
    python benchmarks/generator.py --interleaved 8000 9000 10000 [--reps 2]
                                   [--interleaved-protocols grpc,http] [--output FILE]
    python benchmarks/generator.py --pinned-table

--interleaved runs loadtest (one worker) and perf_analyzer back to back at each rate instead,
their order swapped every repetition, so that both meet the same minute of a shared machine, and
ends with how many runs at each rate were within each rule.

--pinned-table is the measurement the README's generator table quotes (issue #25): Triton `tiny`
on the server's core, each client on the client's, 5 s per rate, 2 interleaved repetitions at
4000, 6000, 8000 and 10 000 QPS, over gRPC and HTTP, loadtest's wire client against
perf_analyzer; it writes benchmarks/results/generator-pinned-table-<date>-<time>.txt.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from pinning import Cores, allowed_cores, format_cores, pin_tree, split_cores, this_process_on
from results_file import Output, add_output_arguments, claim_output, footer, header

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
from loadtest.engine.selfmeasure import GAP_CV_TOLERANCE, gaps_follow_schedule
from loadtest.models import build_repository
from loadtest.scenarios.mlperf.interpret import interpret_server
from loadtest.scenarios.mlperf.play import Generator, closed_loop_throughput, run_server
from loadtest.server.embedded import EmbeddedTriton
from loadtest.stub.process import running_stub
from loadtest.targets import target_for

NS = 1_000_000_000
# Each ladder: (first rate, step). It climbs by the step until two rates in a row are not clean.
LADDERS = {
    ("stub", "http"): (2000, 2000),
    ("stub", "grpc"): (2000, 2000),
    ("triton", "http"): (1000, 1000),
    ("triton", "grpc"): (500, 500),
}
MAX_RUNGS = 60  # a safety cap only: a ladder that reaches it says so
LATE_NS = 1_000_000  # the absolute rule: a send more than 1 ms after its scheduled time is late
MAX_LATE_SHARE = 0.01
CV_TOLERANCE = GAP_CV_TOLERANCE  # clean sends follow the schedule's own send-gap CV within this
PA_DEFAULT = Path("/opt/loadtest-trixie/perf_analyzer")


out = Output()


@dataclass(frozen=True)
class Row:
    qps: float
    completed_qps: float
    lag_p99_ms: float
    on_time_pct: float
    cpu_us: float
    cv: float
    errors: int
    own_cv: float = 1.0  # the schedule's own send-gap CV over the same (issued) queries

    @property
    def cv_ok(self) -> bool:
        return gaps_follow_schedule(self.cv, self.own_cv)

    @property
    def failed_rules(self) -> list[str]:
        """Which parts of "clean" this rate missed (empty = clean)."""
        failed = []
        if self.lag_p99_ms * 1e6 > LATE_NS:
            failed.append("lag p99")
        if self.on_time_pct < 100 * (1 - MAX_LATE_SHARE):
            failed.append("on time")
        if self.errors:
            failed.append("errors")
        if not self.cv_ok:
            failed.append("CV")
        return failed

    @property
    def clean(self) -> bool:
        return not self.failed_rules

    @property
    def clean_by_pa_rule(self) -> bool:
        """perf_analyzer's own rule, the one its ladder is judged by: ≤ 1 % sent > 1 ms late."""
        return self.on_time_pct >= 100 * (1 - MAX_LATE_SHARE) and not self.errors


async def measure_rate(url: str, protocol: str, qps: float, seconds: float, workers: int) -> Row:
    target = target_for(_target_settings(url, protocol))
    try:
        spec, library = await open_with_samples(target, 64, 1)
        settings = ServerSettings(
            qps=qps, target_latency_ns=NS, min_duration_ns=int(seconds * NS), min_query_count=1
        )
        generator = Generator(
            ClientSettings(workers=workers, loop=LoopKind.AUTO),
            _target_settings(url, protocol),
        )
        measurement = await run_server(
            target, spec, len(library), settings, 30 * NS, generator=generator
        )
    finally:
        await target.close()
    summary, _ = interpret_server(settings, measurement.outcome)
    client = measurement.client
    assert client is not None
    records = measurement.outcome.records
    lag = records.send_lag_ns()
    scheduled = len(records.scheduled_ns)
    # The absolute rule over every scheduled query: one never sent counts as late.
    on_time = int((lag <= LATE_NS).sum()) / scheduled if scheduled else 1.0
    return Row(
        qps=qps,
        completed_qps=summary.completed_qps,
        lag_p99_ms=summary.send_lag.p99_ns / 1e6,
        on_time_pct=100 * on_time,
        cpu_us=client.cpu_us_per_query,
        cv=client.send_gap_cv,
        own_cv=client.scheduled_gap_cv,
        errors=summary.errors + summary.pending,
    )


def rates(name: str, protocol: str, rungs: int = MAX_RUNGS) -> list[float]:
    first, step = LADDERS[(name, protocol)]
    return [float(first + k * step) for k in range(rungs)]


# The gRPC load client of the measurements in progress (the --grpc-client setting).
_grpc_client = ["wire"]


@contextmanager
def grpc_load_client(client: str) -> Iterator[None]:
    """Measure with the gRPC load client `client` ("" = the default, wire), restored
    afterwards: it goes into the target and the TargetSettings the workers build theirs from."""
    before = _grpc_client[0]
    _grpc_client[0] = client or "wire"
    try:
        yield
    finally:
        _grpc_client[0] = before


def _target_settings(url: str, protocol: str) -> TargetSettings:
    client = _grpc_client[0] if protocol == "grpc" else "wire"
    return TargetSettings(url=url, protocol=Protocol(protocol), model="tiny", grpc_client=client)


def ladder(
    name: str,
    url: str,
    protocol: str,
    workers: int,
    seconds: float,
    path: str,
    rungs: int = MAX_RUNGS,
) -> list[Row]:
    rows: list[Row] = []
    misses = 0
    out(f"\n{name} {path}, {workers} worker(s), {seconds:g} s per rate, loop auto")
    out("  rate  completed  lag p99 ms  on time %  CPU µs/req  send-gap CV  errors  clean")
    for qps in rates(name, protocol, rungs):
        loop = resolve_loop(LoopKind.AUTO, qps / workers).value
        row = timing.run(measure_rate(url, protocol, qps, seconds, workers), loop)
        rows.append(row)
        why = f" ({', '.join(row.failed_rules)})" if row.failed_rules else ""
        out(
            f"{row.qps:6.0f} {row.completed_qps:10.0f} {row.lag_p99_ms:11.3f} "
            f"{row.on_time_pct:10.2f} {row.cpu_us:11.0f} {row.cv:12.3f} {row.errors:7d}  "
            f"{'yes' if row.clean else 'NO'}{why}"
        )
        misses = 0 if row.clean else misses + 1
        if misses == 2:
            break
    else:
        out(f"  ladder cap reached ({rungs} rungs) before two unclean rates")
    return rows


def best(rows: list[Row]) -> Row | None:
    return max((r for r in rows if r.clean), key=lambda r: r.qps, default=None)


def best_by_pa_rule(rows: list[Row]) -> float | None:
    return max((r.qps for r in rows if r.clean_by_pa_rule), default=None)


@dataclass(frozen=True)
class PaRow:
    """One perf_analyzer run at one rate: its delayed share (None: it failed or timed out)."""

    qps: float
    delayed_pct: float | None
    cpu_us: float
    failure: str = ""

    @property
    def clean(self) -> bool:
        return self.delayed_pct is not None and self.delayed_pct <= 100 * MAX_LATE_SHARE


# The client's cores when pinned (None: not pinned); perf_analyzer is started on them.
CLIENT_CORES: frozenset[int] | None = None


def _on_client_cores() -> None:
    """preexec_fn of perf_analyzer: the client's cores, whatever thread starts it."""
    if CLIENT_CORES is not None:
        os.sched_setaffinity(0, CLIENT_CORES)


def perf_analyzer_at(binary: Path, url: str, protocol: str, qps: float, seconds: float) -> PaRow:
    """perf_analyzer --async Poisson at one rate for rate × seconds requests."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        done = subprocess.run(
            [str(binary), "-m", "tiny", "-u", url, "-i", protocol, "--async",
             "--request-rate-range", str(qps), "--request-distribution", "poisson",
             "--request-count", str(int(qps * seconds))],
            capture_output=True, text=True, timeout=seconds * 6 + 30,
            preexec_fn=_on_client_cores,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return PaRow(qps, None, 0.0, "timed out")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if done.returncode != 0 or "Request count" not in done.stdout:
        return PaRow(qps, None, 0.0, f"failed (exit {done.returncode})")
    found = re.search(r"([\d.]+)% of the requests were delayed", done.stdout)
    return PaRow(qps, float(found.group(1)) if found else 0.0, cpu * 1e6 / (qps * seconds))


def perf_analyzer_ladder(
    binary: Path, url: str, protocol: str, seconds: float, rungs: int = MAX_RUNGS
) -> float | None:
    """perf_analyzer --async Poisson at each rate; its highest rate with ≤ 1 % delayed."""
    out(f"\nperf_analyzer {protocol} (async, Poisson, --request-count = rate × {seconds:g} s)")
    out("  rate  delayed %  client CPU µs/req  clean")
    clean_best, misses = None, 0
    for qps in rates("triton", protocol, rungs):
        row = perf_analyzer_at(binary, url, protocol, qps, seconds)
        if row.delayed_pct is None:
            out(f"{qps:6.0f}  {row.failure}")
            if row.failure == "timed out":
                break
            misses += 1
        else:
            out(f"{qps:6.0f} {row.delayed_pct:10.2f} {row.cpu_us:18.0f}  "
                f"{'yes' if row.clean else 'NO'}")  # fmt: skip
            if row.clean:
                clean_best = float(qps)
            misses = 0 if row.clean else misses + 1
        if misses == 2:
            break
    else:
        out(f"  ladder cap reached ({rungs} rungs) before two unclean rates")
    return clean_best


@dataclass(frozen=True)
class Pair:
    """One repetition at one rate: loadtest's run and perf_analyzer's."""

    protocol: str
    qps: float
    ours: Row
    theirs: PaRow


def interleaved(
    binary: Path, url: str, protocol: str, chosen: list[float], seconds: float, reps: int
) -> list[Pair]:
    """loadtest (one worker, the default client) and perf_analyzer at each rate, back to back,
    their order swapped every repetition: a machine that gets busier or quieter from one minute
    to the next charges both alike, which two ladders run minutes apart cannot promise."""
    out(f"\ninterleaved, {protocol}, one worker, {seconds:g} s per run, {reps} repetition(s);")
    out("'PA rule' = ≤ 1 % sent > 1 ms late (perf_analyzer's own), 'clean' = the full rule above")
    out("   rate  rep  loadtest: on time %  lag p99 ms  CV     CPU µs  PA rule  clean"
        "   perf_analyzer: on time %  CPU µs  PA rule")  # fmt: skip
    pairs: list[Pair] = []
    for rep in range(reps):
        for qps in chosen:
            pa_first = rep % 2 == 1
            pa = perf_analyzer_at(binary, url, protocol, qps, seconds) if pa_first else None
            loop = resolve_loop(LoopKind.AUTO, qps).value
            row = timing.run(measure_rate(url, protocol, qps, seconds, 1), loop)
            if pa is None:
                pa = perf_analyzer_at(binary, url, protocol, qps, seconds)
            theirs = (
                f"{100 - pa.delayed_pct:25.2f} {pa.cpu_us:7.0f}  {'yes' if pa.clean else 'NO'}"
                if pa.delayed_pct is not None
                else f"{pa.failure:>25}"
            )
            out(f"{qps:7.0f} {rep + 1:4d} {row.on_time_pct:20.2f} {row.lag_p99_ms:11.3f} "
                f"{row.cv:6.3f} {row.cpu_us:8.0f}  {'yes' if row.clean_by_pa_rule else 'NO':7} "
                f"{'yes' if row.clean else 'NO':5}  {theirs}")  # fmt: skip
            pairs.append(Pair(protocol, qps, row, pa))
    return pairs


def interleaved_summary(pairs: list[Pair], capacities: dict[str, float]) -> None:
    """How many runs at each rate were within each rule: the table the README quotes."""
    out("\nruns within each rule, of the repetitions at each rate (roofline = the server's")
    out("closed-loop capacity on its cores, measured from the client's)")
    out("protocol  roofline q/s    rate  loadtest clean  loadtest PA rule  perf_analyzer PA rule")
    keys = list(dict.fromkeys((pair.protocol, pair.qps) for pair in pairs))
    for protocol, qps in keys:
        runs = [pair for pair in pairs if (pair.protocol, pair.qps) == (protocol, qps)]
        n = len(runs)
        clean = sum(pair.ours.clean for pair in runs)
        ours_pa = sum(pair.ours.clean_by_pa_rule for pair in runs)
        theirs = sum(pair.theirs.clean for pair in runs)
        roof = capacities.get(protocol, 0.0)
        out(f"{protocol:8} {roof:13.0f} {qps:7.0f} {f'{clean} of {n}':>15} "
            f"{f'{ours_pa} of {n}':>17} {f'{theirs} of {n}':>22}")  # fmt: skip


CAPACITY_IN_FLIGHT = 32
CAPACITY_SECONDS = 3.0


async def _capacity(url: str, protocol: str, seconds: float) -> float:
    """The server's closed-loop throughput (32 in flight, one process): what it can take at
    most, whatever the open-loop client does. The roofline for the open-loop rates below."""
    target = target_for(_target_settings(url, protocol))
    try:
        _spec, library = await open_with_samples(target, 64, 1)
        qps, _seconds, _stopped = await closed_loop_throughput(
            target, len(library), 1, CAPACITY_IN_FLIGHT, int(seconds * NS)
        )
    finally:
        await target.close()
    return qps


def capacity(
    name: str, url: str, protocol: str, path: str, seconds: float = CAPACITY_SECONDS
) -> float:
    qps = timing.run(_capacity(url, protocol, seconds))
    out(
        f"\n{name} {path} closed-loop capacity: {qps:.0f} q/s "
        f"({CAPACITY_IN_FLIGHT} in flight, {seconds:g} s, one client process)"
    )
    return qps


PINNED_TABLE = {"rates": [4000.0, 6000.0, 8000.0, 10000.0], "reps": 2, "seconds": 5.0}


def parse_arguments() -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument(
        "--workers", type=int, help="generator processes (default: one per client core)"
    )
    parser.add_argument("--skip-triton", action="store_true")
    parser.add_argument("--targets", default="stub,triton", help="of stub, triton, in order")
    parser.add_argument("--protocols", default="http,grpc", help="of http, grpc, in order")
    parser.add_argument("--skip-pa", action="store_true", help="do not run perf_analyzer")
    parser.add_argument(
        "--rungs",
        type=int,
        default=MAX_RUNGS,
        help="at most this many rates per ladder (a smoke test's cut; default: the safety cap)",
    )
    parser.add_argument(
        "--capacity-seconds",
        type=float,
        default=CAPACITY_SECONDS,
        help="the closed-loop capacity measurement's length",
    )
    add_output_arguments(parser, "generator-benchmark")
    parser.add_argument(
        "--grpc-clients", default="wire,grpcio", help="gRPC load clients to measure, in order"
    )
    parser.add_argument(
        "--interleaved",
        type=float,
        nargs="+",
        metavar="RATE",
        help="instead of the ladders: loadtest and perf_analyzer back to back at these rates, "
        "against Triton, over --interleaved-protocols",
    )
    parser.add_argument(
        "--interleaved-protocols",
        "--interleaved-protocol",
        default="grpc",
        help="of grpc, http, in order (default grpc)",
    )
    parser.add_argument("--reps", type=int, default=2, help="repetitions of --interleaved")
    parser.add_argument(
        "--pinned-table",
        action="store_true",
        help="the README's table: --interleaved 4000 6000 8000 10000 --reps 2 --seconds 5 "
        "--interleaved-protocols grpc,http, pinned, wire client",
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="client and server share every core (no pinning)"
    )
    parser.add_argument("--client-cores", help="e.g. 0 or 0-3 (default: the lower half)")
    parser.add_argument("--server-cores", help="e.g. 1 or 4-7 (default: the upper half)")
    args = parser.parse_args()
    if args.pinned_table:
        if args.no_pin or args.interleaved:
            parser.error("--pinned-table pins and picks its rates: drop --no-pin/--interleaved")
        args.interleaved = PINNED_TABLE["rates"]
        args.reps = PINNED_TABLE["reps"]
        args.seconds = PINNED_TABLE["seconds"]
        args.interleaved_protocols = "grpc,http"
        args.grpc_clients = "wire"
    return parser, args


def choose_cores(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[Cores | None, str]:
    """The pinning (None: --no-pin, or one core only) and the line that says so."""
    if args.no_pin:
        if args.client_cores or args.server_cores:
            parser.error("--client-cores/--server-cores pin: drop --no-pin")
        return None, "pinning: none (client and server share every core)"
    explicit = args.client_cores or args.server_cores or args.pinned_table
    try:
        cores = split_cores(args.client_cores, args.server_cores)
    except ValueError as error:
        if explicit:
            parser.error(str(error))
        return None, f"pinning: none ({error})"
    return cores, f"pinning: {cores.describe()}"


@contextmanager
def local_server(kind: str, cores: Cores | None) -> Iterator[tuple[str, str]]:
    """The stub or the embedded Triton serving `tiny`, started on the server's cores (everything
    it starts inherits them), its whole tree swept once more: (HTTP URL, gRPC URL)."""
    with ExitStack() as stack:
        with this_process_on(cores.server) if cores else nullcontext():
            if kind == "stub":
                stub = stack.enter_context(running_stub())
                pid, urls = stub.pid, (stub.http_url, stub.grpc_url)
            else:
                repository = Path(stack.enter_context(tempfile.TemporaryDirectory()))
                build_repository(repository, ["tiny"])
                server = stack.enter_context(EmbeddedTriton(repository, models=["tiny"]))
                assert server.pid is not None
                pid, urls = server.pid, (server.http_url, server.grpc_url)
        if cores:
            processes, threads = pin_tree(pid, cores.server)
            server_now = format_cores(allowed_cores(pid))
            client_now = format_cores(allowed_cores(os.getpid(), descendants=False))
            out(f"\n{kind}: {processes} process(es), {threads} threads pinned to cores "
                f"{format_cores(cores.server)}; allowed now: {server_now}; "
                f"this process: {client_now}")  # fmt: skip
        yield urls


def main() -> None:
    global CLIENT_CORES
    parser, args = parse_arguments()
    name = "generator-benchmark"
    if args.interleaved:
        name = "generator-pinned-table" if args.pinned_table else "generator-interleaved"
    output = claim_output(parser, args.output, args.force, name)
    clients = [c.strip() for c in args.grpc_clients.split(",") if c.strip()]
    binary = Path(os.environ.get("PERF_ANALYZER", PA_DEFAULT))
    have_pa = not args.skip_pa and binary.exists() and shutil.which(str(binary)) is not None
    if args.interleaved and not have_pa:
        parser.error("--interleaved needs perf_analyzer (PERF_ANALYZER=path)")
    interleaved_protocols = [p.strip() for p in args.interleaved_protocols.split(",") if p.strip()]
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    unknown = set(protocols + interleaved_protocols) - {"http", "grpc"}
    if set(targets) - {"stub", "triton"} or unknown:
        parser.error("--targets takes stub and triton, --protocols http and grpc")
    if args.skip_triton:
        targets = [t for t in targets if t != "triton"]
    cores, pinning = choose_cores(parser, args)
    CLIENT_CORES = cores.client if cores else None
    workers = args.workers or (len(cores.client) if cores else available_cpus())
    started = time.monotonic()
    header(out, "generator.py", available_cpus())
    out(pinning)
    out("clean = send-lag p99 ≤ 1 ms, ≥ 99 % of scheduled queries sent ≤ 1 ms late, no errors,")
    out(f"send-gap CV within {CV_TOLERANCE} of the schedule's own; CPU = all generator processes,")
    out("spin included")
    out(f"gRPC load clients: {', '.join(clients)} (--grpc-client; the first is the default")
    out("one; grpc.aio, the client before issue #14, runs with one worker only, for comparison)")
    try:
        with this_process_on(cores.client) if cores else nullcontext():
            if args.interleaved:
                run_interleaved(args, binary, interleaved_protocols, cores)
            else:
                run_ladders(args, binary, have_pa, targets, protocols, clients, workers, cores)
    finally:
        footer(out)
        out(f"took {time.monotonic() - started:.0f} s; written to {output}")
        out.write(output)


def run_interleaved(
    args: argparse.Namespace, binary: Path, protocols: list[str], cores: Cores | None
) -> None:
    pairs: list[Pair] = []
    capacities: dict[str, float] = {}
    with local_server("triton", cores) as (http_url, grpc_url):
        for protocol in protocols:
            url = grpc_url if protocol == "grpc" else http_url
            capacities[protocol] = capacity(
                "triton", url, protocol, protocol, args.capacity_seconds
            )
            pairs += interleaved(binary, url, protocol, args.interleaved, args.seconds, args.reps)
    interleaved_summary(pairs, capacities)


def run_ladders(
    args: argparse.Namespace,
    binary: Path,
    have_pa: bool,
    targets: list[str],
    protocols: list[str],
    clients: list[str],
    workers: int,
    cores: Cores | None,
) -> None:
    best_of: dict[tuple[str, str, int], Row | None] = {}
    best_pa_rule: dict[tuple[str, str, int], float | None] = {}
    capacities: dict[tuple[str, str], float] = {}
    pa_best: dict[str, float | None] = {}

    def measure(name: str, protocol: str, url: str) -> None:
        for client in clients if protocol == "grpc" else [""]:
            path = f"{protocol}/{client}" if client else protocol
            with grpc_load_client(client):
                capacities[(name, path)] = capacity(
                    name, url, protocol, path, args.capacity_seconds
                )
                counts = [1] if client == "grpcio" else sorted({1, workers})
                for count in counts:
                    rows = ladder(name, url, protocol, count, args.seconds, path, args.rungs)
                    best_of[(name, path, count)] = best(rows)
                    best_pa_rule[(name, path, count)] = best_by_pa_rule(rows)

    for name in targets:
        with local_server(name, cores) as (http_url, grpc_url):
            for protocol in protocols:
                url = http_url if protocol == "http" else grpc_url
                measure(name, protocol, url)
                if name == "triton" and have_pa:
                    pa_best[protocol] = perf_analyzer_ladder(
                        binary, url, protocol, args.seconds, args.rungs
                    )
    summary(best_of, capacities, pa_best, have_pa)
    summary_by_pa_rule(best_pa_rule, pa_best, have_pa)


def summary(
    best_of: dict[tuple[str, str, int], Row | None],
    capacities: dict[tuple[str, str], float],
    pa_best: dict[str, float | None],
    have_pa: bool,
) -> None:
    out("\nhighest clean rate (QPS), CPU µs/req and send-gap CV at that rate;")
    out("capacity = the server's closed-loop throughput (the roofline for that row)")
    out("target  protocol/client  workers    rate  CPU µs  CV     capacity  vs perf_analyzer")
    for (name, path, count), row in best_of.items():
        protocol = path.split("/")[0]
        reference = pa_best.get(protocol) if name == "triton" and have_pa else None
        ratio = "—"
        if row is not None and reference:
            ratio = f"{row.qps / reference:.2f}× (measured here: {reference:g})"
        elif reference:
            ratio = f"perf_analyzer clean to {reference:g} here"
        elif name == "triton" and have_pa:
            ratio = "perf_analyzer: none clean here"
        elif name == "triton":
            ratio = "perf_analyzer not run"
        roof = f"{capacities.get((name, path), 0):8.0f}"
        if row is None:
            out(f"{name:7} {path:15} {count:7d}  none clean {'':17} {roof}  {ratio}")
            continue
        out(f"{name:7} {path:15} {count:7d} {row.qps:7.0f} {row.cpu_us:7.0f} {row.cv:6.3f} "
            f"{roof}  {ratio}")  # fmt: skip
    if not have_pa:
        out(
            "perf_analyzer not run: make it with benchmarks/perf_analyzer_root.sh "
            "(it needs glibc ≥ 2.38: a Debian 13 root provides it) or set PERF_ANALYZER"
        )


def summary_by_pa_rule(
    best: dict[tuple[str, str, int], float | None], pa_best: dict[str, float | None], have_pa: bool
) -> None:
    """The same ladders judged by perf_analyzer's rule alone (≤ 1 % of sends > 1 ms late: no
    p99 or CV condition), within the rates each ladder climbed: like against like."""
    if not have_pa:
        return
    out("\njudged by perf_analyzer's rule alone (≤ 1 % sent > 1 ms late, no errors), Triton rows")
    out("target  protocol/client  workers    rate  vs perf_analyzer")
    for (name, path, count), rate in best.items():
        reference = pa_best.get(path.split("/")[0])
        if name != "triton":
            continue
        shown = f"{rate:7.0f}" if rate is not None else "   none"
        ratio = f"{rate / reference:.2f}×" if rate is not None and reference else "—"
        out(f"{name:7} {path:15} {count:7d} {shown}  {ratio}")


if __name__ == "__main__":
    main()
