"""Is a late send the issuer's own doing, or a CPU it was waiting for? The kernel's answer.

One worker sends Poisson gRPC load (the wire client) to the embedded Triton serving `tiny`, on the
same cores, as in benchmarks/generator.py. Around each 5 s run this reads the issuer thread's
/proc/thread-self/schedstat (Linux): its CPU time, the time it was runnable but waiting in a run
queue for a CPU, and how many times it was put on a CPU. A spinning issuer is always runnable,
so its run-queue wait is time it wanted to send and could not: the server's threads had the
cores. Each rate runs in each of --modes, their order rotated every repetition:
- shipped: as shipped: the spin window uncapped above 5000 QPS per worker (engine/runner.py),
  and the loop thread's 100 µs EEVDF time slice (engine/timing.py; since commit 73d92a0);
- capped: the window capped at a quarter of the mean gap (less spinning, more timer sleeps);
- default-slice: as shipped, but with the kernel's default slice for the loop thread (the code
  before the short slice; benchmarks/results/issuer-runqueue-slice-2026-12-01-0808.txt compared
  the two, when this mode was
  "shipped" and the short slice was a mode of its own, "slice").

    python benchmarks/issuer_runqueue.py [--rates 8000,9000,10000] [--reps 3]
                                         [--modes shipped,default-slice] [--output FILE]

The output goes to a new benchmarks/results/issuer-runqueue-<date>-<time>.txt by default.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from generator import measure_rate
from results_file import Output, add_output_arguments, claim_output, footer, header

from loadtest.core.settings import available_cpus
from loadtest.engine import runner, timing
from loadtest.models import build_repository
from loadtest.server.embedded import EmbeddedTriton

SHIPPED_FULL_SPIN_GAP_NS = runner.FULL_SPIN_GAP_NS


def schedstat() -> tuple[int, int, int]:
    """(ns on a CPU, ns runnable and waiting for one, times put on a CPU) of this thread."""
    fields = Path("/proc/thread-self/schedstat").read_text().split()
    return int(fields[0]), int(fields[1]), int(fields[2])


SHIPPED_REQUEST_SHORT_SLICE = timing.request_short_slice


def default_slice(slice_ns: int = 0) -> bool:
    """Stands in for timing.request_short_slice: the kernel's default slice for the thread."""
    return SHIPPED_REQUEST_SHORT_SLICE(0)


def measure(url: str, qps: float, seconds: float, mode: str) -> str:
    """One run in `mode` ("shipped", "capped" or "default-slice"): its row, without rep."""
    runner.FULL_SPIN_GAP_NS = 0 if mode == "capped" else SHIPPED_FULL_SPIN_GAP_NS
    timing.request_short_slice = (
        default_slice if mode == "default-slice" else SHIPPED_REQUEST_SHORT_SLICE
    )
    before = schedstat()
    row = timing.run(measure_rate(url, "grpc", qps, seconds, 1))  # its new loop sets the slice
    after = schedstat()
    cpu, wait, slices = (after[k] - before[k] for k in range(3))
    verdict = "yes" if row.clean else f"NO ({', '.join(row.failed_rules)})"
    return (
        f"{mode:7}  {row.on_time_pct:9.2f} {row.lag_p99_ms:11.3f} {row.cv:6.3f} "
        f"{row.cpu_us:11.0f} {cpu / 1e6:7.0f} {wait / 1e6:13.1f} {slices:7d}  {verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="8000,9000,10000")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument(
        "--modes", default="shipped,default-slice", help="of shipped, capped, default-slice"
    )
    add_output_arguments(parser, "issuer-runqueue")
    args = parser.parse_args()
    output = claim_output(parser, args.output, args.force, "issuer-runqueue")
    out = Output()
    header(out, "issuer_runqueue.py", available_cpus())
    out("one worker, gRPC (wire client) to the embedded Triton `tiny` on the same cores;")
    out("mode: as shipped (spin uncapped above 5000 QPS, a 100 µs EEVDF slice for the loop")
    out("thread), spin capped at 1/4 of the mean gap, or the kernel's default slice;")
    out("CPU / run-queue wait / slices: the issuer thread's schedstat over the run;")
    out("lag = send lag (actual − scheduled send), p99 exact; clean = lag p99 ≤ 1 ms, ≥ 99 %")
    out("sent ≤ 1 ms late, no errors, send-gap CV within 0.05 of the schedule's own (generator.py)")
    out("   rate  rep  mode     on time %  lag p99 ms  CV     CPU µs/req  CPU ms  runq wait ms"
        "  slices  clean")  # fmt: skip
    rates = [float(rate) for rate in args.rates.split(",")]
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    if not modes or set(modes) - {"shipped", "capped", "default-slice"}:
        parser.error("--modes takes shipped, capped and default-slice")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            build_repository(Path(tmp), ["tiny"])
            with EmbeddedTriton(Path(tmp), models=["tiny"]) as server:
                for rep in range(args.reps):
                    for qps in rates:
                        turn = rep % len(modes)
                        for mode in modes[turn:] + modes[:turn]:
                            row = measure(server.grpc_url, qps, args.seconds, mode)
                            out(f"{qps:7.0f} {rep + 1:4d}  {row}")
    finally:
        runner.FULL_SPIN_GAP_NS = SHIPPED_FULL_SPIN_GAP_NS
        timing.request_short_slice = SHIPPED_REQUEST_SHORT_SLICE
        footer(out)
        out.write(output)


if __name__ == "__main__":
    main()
