"""How fast the generator itself is: its highest clean Poisson rate, CPU per request and send law.

Side by side in one run on this machine, against (a) the zero-compute stub (`loadtest stub`; its
gRPC side is stub/grpc_wire_server.py, ~60k calls/s closed loop, so gRPC rows against it measure
the client) and (b) the embedded Triton serving `tiny` (the real server sharing the machine's
cores), over HTTP and gRPC, for 1 worker process and for N (default: one per core):

- clean = the generator kept up and its sends were Poisson: send-lag p99 ≤ 1 ms, ≥ 99 % of queries
  sent within 1 ms of their scheduled time (the absolute rule, not a run's latency-bound
  allowance), no query failed or went unanswered, and the send-gap CV within 1.00 ± 0.05;
- client CPU µs per request = user+system CPU of every generator process / queries issued
  (spin-waiting included: it is what the generator costs the machine);
- send-gap CV = std/mean of the gaps between actual sends, all workers merged (Poisson = 1).

gRPC rows are measured for each load client in --grpc-clients (default "wire,grpcio"): the wire
client (targets/grpc_wire.py, the default) and grpc.aio (LOADTEST_GRPC_CLIENT=grpcio, the load
path before issue #14, one worker only), so the before and after stand side by side in one run.

Each rate is one Server-scenario run of --seconds. Every ladder (loadtest's and perf_analyzer's)
climbs by its step until two rates in a row are not clean, however high that is (a safety cap of
MAX_RUNGS rungs says so if it is ever reached): no table ends at its top rung.
perf_analyzer (async, Poisson, same server, same rates) runs beside it when its binary is found
(PERF_ANALYZER=path, or /opt/loadtest-trixie/perf_analyzer as benchmarks/perf_analyzer_root.sh
makes it); its "delayed" share (requests sent more than 1 ms late, docs/reference.md) decides its
clean rate (≤ 1 %); it reports no send times, so it has no CV column. Without it, no ratio is
printed: a perf_analyzer figure is only ever one measured in the same run.

--output FILE also writes the whole output there, headed by the date, machine, load average
(before and after) and the git commit measured (docs/generator-benchmark.txt is such a file).

    python benchmarks/generator.py [--seconds 5] [--workers 2] [--skip-triton] [--skip-pa]
                                   [--targets stub,triton] [--protocols http,grpc]
                                   [--grpc-clients wire,grpcio]
                                   [--output docs/generator-benchmark.txt]
    python benchmarks/generator.py --interleaved 8000 9000 10000 [--reps 2]
                                   [--interleaved-protocol grpc] [--output FILE]

--interleaved runs loadtest (one worker) and perf_analyzer back to back at each rate instead,
their order swapped every repetition, so that both meet the same minute of a shared machine.
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
from collections.abc import Iterator
from contextlib import contextmanager
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
from loadtest.scenarios.mlperf.interpret import interpret_server
from loadtest.scenarios.mlperf.play import Generator, closed_loop_throughput, run_server
from loadtest.server.embedded import EmbeddedTriton
from loadtest.stub.process import running_stub
from loadtest.targets import triton_target
from loadtest.targets.triton_grpc import GRPC_CLIENT_VARIABLE

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
CV_TOLERANCE = 0.05  # clean sends are Poisson: send-gap CV within 1.00 ± this
PA_DEFAULT = Path("/opt/loadtest-trixie/perf_analyzer")


class Output:
    """print(), and keep every line for --output."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.extend(text.split("\n"))


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

    @property
    def cv_ok(self) -> bool:
        return abs(self.cv - 1.0) <= CV_TOLERANCE

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
        errors=summary.errors + summary.pending,
    )


def rates(name: str, protocol: str) -> list[float]:
    first, step = LADDERS[(name, protocol)]
    return [float(first + k * step) for k in range(MAX_RUNGS)]


@contextmanager
def grpc_load_client(client: str) -> Iterator[None]:
    """Run with LOADTEST_GRPC_CLIENT=client ("" = leave it), restored afterwards; worker
    processes inherit it."""
    before = os.environ.get(GRPC_CLIENT_VARIABLE)
    if client:
        os.environ[GRPC_CLIENT_VARIABLE] = client
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(GRPC_CLIENT_VARIABLE, None)
        else:
            os.environ[GRPC_CLIENT_VARIABLE] = before


def ladder(
    name: str, url: str, protocol: str, workers: int, seconds: float, path: str
) -> list[Row]:
    rows: list[Row] = []
    misses = 0
    out(f"\n{name} {path}, {workers} worker(s), {seconds:g} s per rate, loop auto")
    out("  rate  completed  lag p99 ms  on time %  CPU µs/req  send-gap CV  errors  clean")
    for qps in rates(name, protocol):
        loop = resolve_loop(LoopKind.AUTO, qps / workers).value
        row = timing.run(_one(url, protocol, qps, seconds, workers), loop)
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
        out(f"  ladder cap reached ({MAX_RUNGS} rungs) before two unclean rates")
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


def perf_analyzer_at(binary: Path, url: str, protocol: str, qps: float, seconds: float) -> PaRow:
    """perf_analyzer --async Poisson at one rate for rate × seconds requests."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        done = subprocess.run(
            [str(binary), "-m", "tiny", "-u", url, "-i", protocol, "--async",
             "--request-rate-range", str(qps), "--request-distribution", "poisson",
             "--request-count", str(int(qps * seconds))],
            capture_output=True, text=True, timeout=seconds * 6 + 30,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return PaRow(qps, None, 0.0, "timed out")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if done.returncode != 0 or "Request count" not in done.stdout:
        return PaRow(qps, None, 0.0, f"failed (exit {done.returncode})")
    found = re.search(r"([\d.]+)% of the requests were delayed", done.stdout)
    return PaRow(qps, float(found.group(1)) if found else 0.0, cpu * 1e6 / (qps * seconds))


def perf_analyzer_ladder(binary: Path, url: str, protocol: str, seconds: float) -> float | None:
    """perf_analyzer --async Poisson at each rate; its highest rate with ≤ 1 % delayed."""
    out(f"\nperf_analyzer {protocol} (async, Poisson, --request-count = rate × {seconds:g} s)")
    out("  rate  delayed %  client CPU µs/req  clean")
    clean_best, misses = None, 0
    for qps in rates("triton", protocol):
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
        out(f"  ladder cap reached ({MAX_RUNGS} rungs) before two unclean rates")
    return clean_best


def interleaved(
    binary: Path, url: str, protocol: str, chosen: list[float], seconds: float, reps: int
) -> None:
    """loadtest (one worker, the default client) and perf_analyzer at each rate, back to back,
    their order swapped every repetition: a machine that gets busier or quieter from one minute
    to the next charges both alike, which two ladders run minutes apart cannot promise."""
    out(f"\ninterleaved, {protocol}, one worker, {seconds:g} s per run, {reps} repetition(s);")
    out("'PA rule' = ≤ 1 % sent > 1 ms late (perf_analyzer's own), 'clean' = the full rule above")
    out("   rate  rep  loadtest: on time %  lag p99 ms  CV     CPU µs  PA rule  clean"
        "   perf_analyzer: on time %  CPU µs  PA rule")  # fmt: skip
    for rep in range(reps):
        for qps in chosen:
            pa_first = rep % 2 == 1
            pa = perf_analyzer_at(binary, url, protocol, qps, seconds) if pa_first else None
            loop = resolve_loop(LoopKind.AUTO, qps).value
            row = timing.run(_one(url, protocol, qps, seconds, 1), loop)
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


CAPACITY_IN_FLIGHT = 32
CAPACITY_SECONDS = 3.0


async def _capacity(url: str, protocol: str) -> float:
    """The server's closed-loop throughput (32 in flight, one process): what it can take at
    most, whatever the open-loop client does. The roofline for the open-loop rates below."""
    target = triton_target(url, protocol, "tiny")
    try:
        _spec, library = await open_with_samples(target, 64, 1)
        qps, _seconds, _stopped = await closed_loop_throughput(
            target, len(library), 1, CAPACITY_IN_FLIGHT, int(CAPACITY_SECONDS * NS)
        )
    finally:
        await target.close()
    return qps


def capacity(name: str, url: str, protocol: str, path: str) -> float:
    qps = timing.run(_capacity(url, protocol))
    out(
        f"\n{name} {path} closed-loop capacity: {qps:.0f} q/s "
        f"({CAPACITY_IN_FLIGHT} in flight, {CAPACITY_SECONDS:g} s, one client process)"
    )
    return qps


def _git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" + uncommitted changes" if dirty else "")


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--workers", type=int, default=available_cpus())
    parser.add_argument("--skip-triton", action="store_true")
    parser.add_argument("--targets", default="stub,triton", help="of stub, triton, in order")
    parser.add_argument("--protocols", default="http,grpc", help="of http, grpc, in order")
    parser.add_argument("--skip-pa", action="store_true", help="do not run perf_analyzer")
    parser.add_argument("--output", type=Path, help="also write the whole output to this file")
    parser.add_argument(
        "--grpc-clients", default="wire,grpcio", help="gRPC load clients to measure, in order"
    )
    parser.add_argument(
        "--interleaved",
        type=float,
        nargs="+",
        metavar="RATE",
        help="instead of the ladders: loadtest and perf_analyzer back to back at these rates, "
        "against Triton, over --interleaved-protocol",
    )
    parser.add_argument("--interleaved-protocol", default="grpc", choices=["grpc", "http"])
    parser.add_argument("--reps", type=int, default=2, help="repetitions of --interleaved")
    args = parser.parse_args()
    clients = [c.strip() for c in args.grpc_clients.split(",") if c.strip()]
    binary = Path(os.environ.get("PERF_ANALYZER", PA_DEFAULT))
    have_pa = not args.skip_pa and binary.exists() and shutil.which(str(binary)) is not None
    out(" ".join(["python benchmarks/generator.py", *sys.argv[1:]]))
    out(f"machine: {available_cpus()} CPUs ({_cpu_model()}), python {sys.version.split()[0]}")
    out(f"commit: {_git_commit()}")
    out(f"started {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average {_load()}")
    out("clean = send-lag p99 ≤ 1 ms, ≥ 99 % of scheduled queries sent ≤ 1 ms late, no errors,")
    out(f"send-gap CV within 1.00 ± {CV_TOLERANCE}; CPU = all generator processes, spin included")
    out(f"gRPC load clients: {', '.join(clients)} (LOADTEST_GRPC_CLIENT; the first is the default")
    out("one; grpc.aio, the client before issue #14, runs with one worker only, for comparison)")
    best_of: dict[tuple[str, str, int], Row | None] = {}
    best_pa_rule: dict[tuple[str, str, int], float | None] = {}
    capacities: dict[tuple[str, str], float] = {}
    pa_best: dict[str, float | None] = {}

    def measure(name: str, protocol: str, url: str) -> None:
        for client in clients if protocol == "grpc" else [""]:
            path = f"{protocol}/{client}" if client else protocol
            with grpc_load_client(client):
                capacities[(name, path)] = capacity(name, url, protocol, path)
                counts = [1] if client == "grpcio" else sorted({1, args.workers})
                for workers in counts:
                    rows = ladder(name, url, protocol, workers, args.seconds, path)
                    best_of[(name, path, workers)] = best(rows)
                    best_pa_rule[(name, path, workers)] = best_by_pa_rule(rows)

    if args.interleaved:
        if not have_pa:
            parser.error("--interleaved needs perf_analyzer (PERF_ANALYZER=path)")
        try:
            with tempfile.TemporaryDirectory() as tmp:
                build_repository(Path(tmp), ["tiny"])
                with EmbeddedTriton(Path(tmp), models=["tiny"]) as server:
                    protocol = args.interleaved_protocol
                    url = server.grpc_url if protocol == "grpc" else server.http_url
                    interleaved(binary, url, protocol, args.interleaved, args.seconds, args.reps)
        finally:
            out(f"\nfinished {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average {_load()}")
            if args.output is not None:
                args.output.write_text("\n".join(out.lines) + "\n")
        return
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    if set(targets) - {"stub", "triton"} or set(protocols) - {"http", "grpc"}:
        parser.error("--targets takes stub and triton, --protocols http and grpc")
    if args.skip_triton:
        targets = [t for t in targets if t != "triton"]
    try:
        if "stub" in targets:
            with running_stub() as stub:
                for protocol in protocols:
                    measure(
                        "stub", protocol, stub.http_url if protocol == "http" else stub.grpc_url
                    )
        if "triton" in targets:
            with tempfile.TemporaryDirectory() as tmp:
                build_repository(Path(tmp), ["tiny"])
                with EmbeddedTriton(Path(tmp), models=["tiny"]) as server:
                    for protocol in protocols:
                        url = server.http_url if protocol == "http" else server.grpc_url
                        measure("triton", protocol, url)
                        if have_pa:
                            pa_best[protocol] = perf_analyzer_ladder(
                                binary, url, protocol, args.seconds
                            )
        summary(best_of, capacities, pa_best, have_pa)
        summary_by_pa_rule(best_pa_rule, pa_best, have_pa)
    finally:
        out(f"\nfinished {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average {_load()}")
        if args.output is not None:
            args.output.write_text("\n".join(out.lines) + "\n")


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
