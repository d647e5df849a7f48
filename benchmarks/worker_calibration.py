"""Does the start-up calibration predict one worker's highest clean rate? The measurement behind
CORE_SHARE_ALONE and CORE_SHARE_BESIDE_LOCAL_SERVER (loadtest/shards/client_cost.py).

For each target (the stub and the embedded Triton serving `tiny`, over HTTP and gRPC) this runs
the calibration the automatic worker count runs (scenarios/play.measure_client_cost: a 0.5 s
closed loop, 16 in flight, this process's CPU per answered query) --calibrations times, then
benchmarks/generator.py's one-worker ladder (5 s per rate, until two rates in a row are not
clean). The product of the two, clean top × CPU per query, is the share of a core the worker
filled at its top, in calibrated units: the constant the rule divides by the calibrated cost.

Against the stub the worker has a core to itself (the stub takes the other and little of it):
the case of a remote server, CORE_SHARE_ALONE. Against the embedded Triton the server's threads
share the worker's cores, so the share comes out lower: CORE_SHARE_BESIDE_LOCAL_SERVER, which the
product applies to every loopback server (it cannot tell a light one from a heavy one). The
'predicted' columns are each constant divided by the median calibrated cost.

    python benchmarks/worker_calibration.py [--calibrations 3] [--seconds 5] [--skip-triton]
                                            [--output FILE] [--force]

The output goes to a new benchmarks/results/worker-calibration-<date>-<time>.txt by default.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from generator import best, grpc_load_client, ladder, out
from results_file import add_output_arguments, claim_output, footer, header

from loadtest.core.settings import available_cpus
from loadtest.engine import timing
from loadtest.engine.samples import open_with_samples
from loadtest.models import build_repository
from loadtest.scenarios.mlperf.play import measure_client_cost
from loadtest.server.embedded import EmbeddedTriton
from loadtest.shards.client_cost import CORE_SHARE_ALONE, CORE_SHARE_BESIDE_LOCAL_SERVER, ClientCost
from loadtest.stub.process import running_stub
from loadtest.targets import triton_target


async def _calibrate(url: str, protocol: str) -> ClientCost | None:
    target = triton_target(url, protocol, "tiny")
    try:
        _spec, library = await open_with_samples(target, 64, 1)
        return await measure_client_cost(target, len(library), 1, beside_local_server=True)
    finally:
        await target.close()


def measure(name: str, protocol: str, url: str, calibrations: int, seconds: float) -> str:
    """Calibrations, then the ladder: the summary row for this target."""
    costs_us = []
    for k in range(calibrations):
        cost = timing.run(_calibrate(url, protocol))
        if cost is None:
            out(f"{name} {protocol}: calibration {k + 1} answered too few queries to tell")
            continue
        costs_us.append(cost.cpu_s_per_query * 1e6)
        out(f"{name} {protocol}: calibration {k + 1}: {cost.describe()}")
    rows = ladder(name, url, protocol, 1, seconds, protocol)
    top = best(rows)
    if top is None or not costs_us:
        return f"{name:7} {protocol:8} {'—':>8}  no clean rate or no calibration"
    median = statistics.median(costs_us)
    shares = [top.qps * c / 1e6 for c in costs_us]
    return (
        f"{name:7} {protocol:8} {top.qps:8.0f}  {min(costs_us):6.1f} {median:6.1f} "
        f"{max(costs_us):6.1f}  {min(shares):5.2f} {statistics.median(shares):5.2f} "
        f"{max(shares):5.2f}  {CORE_SHARE_ALONE / median * 1e6:9.0f} "
        f"{CORE_SHARE_BESIDE_LOCAL_SERVER / median * 1e6:9.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calibrations", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--skip-triton", action="store_true")
    add_output_arguments(parser, "worker-calibration")
    args = parser.parse_args()
    output = claim_output(parser, args.output, args.force, "worker-calibration")
    header(out, "worker_calibration.py", available_cpus())
    out("calibration = scenarios/play.measure_client_cost (0.5 s closed loop, 16 in flight,")
    out("CPU of this process per answered query, precise loop); ladder and 'clean' as in")
    out("benchmarks/generator.py (one worker); gRPC over the default wire client")
    summary: list[str] = []
    try:
        with grpc_load_client("wire"), running_stub() as stub:
            for protocol, url in (("http", stub.http_url), ("grpc", stub.grpc_url)):
                summary.append(measure("stub", protocol, url, args.calibrations, args.seconds))
        if not args.skip_triton:
            with tempfile.TemporaryDirectory() as tmp:
                build_repository(Path(tmp), ["tiny"])
                with grpc_load_client("wire"), EmbeddedTriton(Path(tmp), models=["tiny"]) as srv:
                    for protocol, url in (("http", srv.http_url), ("grpc", srv.grpc_url)):
                        summary.append(
                            measure("triton", protocol, url, args.calibrations, args.seconds)
                        )
        out("\none worker's highest clean rate against the calibrated CPU per query;")
        out("share = clean top × CPU per query; predicted = the rule's share / median cost:")
        out(
            f"'alone' {CORE_SHARE_ALONE} (a remote server), 'local' "
            f"{CORE_SHARE_BESIDE_LOCAL_SERVER} (a loopback server, as every row here)"
        )
        out("target  protocol  clean top  µs/query: min    med    max  share: min   med   max"
            "  predicted: alone   local")  # fmt: skip
        for line in summary:
            out(line)
    finally:
        footer(out)
        out.write(output)


if __name__ == "__main__":
    main()
