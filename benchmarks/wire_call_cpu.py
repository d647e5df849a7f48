"""The wire gRPC client's own CPU per call, this checkout against another, rounds interleaved.

benchmarks/grpc_clients.py compares client libraries on one Triton; on a shared 2-vCPU machine
its rounds vary by more than a small change to the wire client costs. This isolates that cost:
a closed loop (32 calls in flight, each answer sends the next) of `ModelInfer` calls from one
GrpcWire to the stub's lean gRPC server (`loadtest stub`, its own process), one child process per
round that imports one checkout's `loadtest`, alternating the checkouts round by round so that a
machine that gets busier charges both alike. Prints user+system CPU µs per call of each round,
then each checkout's median and minimum.

    python benchmarks/wire_call_cpu.py --before DIR [--rounds 20] [--calls 20000] [--output FILE]

DIR is another checkout (e.g. `git archive <commit> | tar -x -C DIR`). The output goes to a new
benchmarks/results/wire-call-cpu-<date>-<time>.txt by default.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from results_file import Output, add_output_arguments, claim_output, footer, header

from loadtest.stub.process import running_stub

REPO = Path(__file__).resolve().parent.parent

# One round, run as `python -c CHILD checkout port calls` in a child with only that checkout on
# its path: prints "<CPU µs per call> <failed calls>".
CHILD = """
import asyncio, resource, sys
sys.path.insert(0, sys.argv[1])
from tritonclient.grpc import service_pb2
from loadtest.wire import grpc_wire
assert grpc_wire.__file__.startswith(sys.argv[1]), grpc_wire.__file__
port, calls = int(sys.argv[2]), int(sys.argv[3])
message = grpc_wire.framed(service_pb2.ModelInferRequest(model_name="tiny").SerializeToString())

async def main():
    wire = grpc_wire.GrpcWire(
        "127.0.0.1", port, "/inference.GRPCInferenceService/ModelInfer", 10.0
    )
    await wire.connect(5)
    for _ in range(200):
        await wire.unary(message)
    finished = asyncio.get_running_loop().create_future()
    counts = {"started": 0, "done": 0, "failed": 0}

    def on_done(code, details, response):
        counts["done"] += 1
        counts["failed"] += code != grpc_wire.OK
        if counts["started"] < calls:
            counts["started"] += 1
            wire.call(message, on_done)
        elif counts["done"] == calls and not finished.done():
            finished.set_result(None)

    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(32):
        counts["started"] += 1
        wire.call(message, on_done)
    await finished
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    print(f"{cpu / calls * 1e6:.2f} {counts['failed']}")
    wire.close()

asyncio.run(main())
"""


def one_round(checkout: Path, port: int, calls: int) -> tuple[float, int]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(checkout), str(port), str(calls)],
        capture_output=True,
        text=True,
        cwd="/",
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        timeout=300,
    )
    if result.returncode != 0:
        raise SystemExit(f"a round failed: {result.stderr.strip().splitlines()[-1:]}")
    cpu_us, failed = result.stdout.split()
    return float(cpu_us), int(failed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="the other checkout")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=20_000)
    add_output_arguments(parser, "wire-call-cpu")
    args = parser.parse_args()
    path = claim_output(parser, args.output, args.force, "wire-call-cpu")
    checkouts = {"before": args.before.resolve(), "this checkout": REPO}
    out = Output()
    header(out, "wire_call_cpu.py", os.cpu_count() or 1)
    out(f"before: {args.before}")
    cpu: dict[str, list[float]] = {name: [] for name in checkouts}
    with running_stub() as stub:
        for round_number in range(1, args.rounds + 1):
            for name, checkout in checkouts.items():
                us, failed = one_round(checkout, stub.grpc_port, args.calls)
                cpu[name].append(us)
                out(f"round {round_number:2} {name:14} {us:6.2f} µs CPU/call  failed {failed}")
    out("\nclient CPU µs per call    median   min")
    for name, values in cpu.items():
        out(f"{name:24} {statistics.median(values):7.2f} {min(values):6.2f}")
    footer(out)
    out.write(path)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
