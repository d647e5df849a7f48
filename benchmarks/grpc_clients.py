"""What one gRPC call costs the client, per client library, side by side on one Triton.

Closed loop (a fixed number of calls in flight, each answer sends the next), one process, the
same prebuilt ModelInferRequest bytes for `tiny` on the embedded Triton, alternating the clients
round by round so that a machine that gets busier part-way through charges them alike:

- wire: loadtest's own client (wire/grpc_wire.py), the default load path;
- grpc.aio: a raw bytes-in/bytes-out `ModelInfer` method on a grpc.aio channel (the load path
  before issue #14, --grpc-client grpcio);
- h2: the same calls over python-hyper's h2 state machine (a dev dependency), to show what a
  general HTTP/2 library costs where the wire client writes the few frames a unary call needs.

Prints calls per second and client CPU µs per call (user+system of this process / calls) for
each round, then each client's median and its ratio to the wire client's.

    python benchmarks/grpc_clients.py [--calls 20000] [--in-flight 32] [--rounds 3] [--output FILE]

The output goes to a new benchmarks/results/grpc-clients-benchmark-<date>-<time>.txt by default.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
from results_file import Output, add_output_arguments, claim_output, footer, header

from loadtest.engine import timing
from loadtest.engine.samples import random_samples
from loadtest.models import build_repository
from loadtest.server.embedded import EmbeddedTriton
from loadtest.targets.triton_grpc import MODEL_INFER, TritonGrpcTarget, call_status
from loadtest.wire.grpc_wire import OK, GrpcWire, framed

Send = Callable[[Callable[[bool], None]], None]  # start one call; the callback gets "ok"


async def request_bytes(url: str) -> bytes:
    target = TritonGrpcTarget(url, "tiny", load_client="grpcio")
    spec = await target.open()
    await target.prepare(random_samples(spec, 1, seed=0))
    wire = target.serialized_request(0)
    await target.close()
    return wire


async def closed_loop(send: Send, calls: int, in_flight: int) -> tuple[float, float, int]:
    """(calls/s, client CPU µs per call, failed calls)."""
    finished = asyncio.get_running_loop().create_future()
    started = in_flight
    done = failed = 0

    def answered(ok: bool) -> None:
        nonlocal started, done, failed
        done += 1
        failed += not ok
        if started < calls:
            started += 1
            send(answered)
        elif done == calls and not finished.done():
            finished.set_result(None)

    before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(in_flight):
        send(answered)
    await finished
    elapsed, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return calls / elapsed, cpu * 1e6 / calls, failed


async def with_wire(
    url: str, message: bytes, calls: int, in_flight: int
) -> tuple[float, float, int]:
    host, _, port = url.rpartition(":")
    wire = GrpcWire(host, int(port), MODEL_INFER, 30.0)
    await wire.connect(30.0)
    body = framed(message)

    def send(answered: Callable[[bool], None]) -> None:
        wire.call(body, lambda code, _details, _response: answered(code == OK))

    try:
        return await closed_loop(send, calls, in_flight)
    finally:
        wire.close()


async def with_grpc_aio(
    url: str, message: bytes, calls: int, in_flight: int
) -> tuple[float, float, int]:
    channel = grpc.aio.insecure_channel(url)
    method = channel.unary_unary(MODEL_INFER)
    await method(message, timeout=30)

    def send(answered: Callable[[bool], None]) -> None:
        call = method(message, timeout=30)
        # The status is read as the grpcio load path reads it (no await in a done callback).
        call.add_done_callback(lambda c: answered(call_status(c) == (grpc.StatusCode.OK, "")))

    try:
        return await closed_loop(send, calls, in_flight)
    finally:
        await channel.close()


async def with_h2(url: str, message: bytes, calls: int, in_flight: int) -> tuple[float, float, int]:
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    host, _, port = url.rpartition(":")
    config = h2.config.H2Configuration(client_side=True, header_encoding=None)
    connection = h2.connection.H2Connection(config)
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", MODEL_INFER.encode()),
        (b":authority", url.encode()),
        (b"te", b"trailers"),
        (b"content-type", b"application/grpc"),
        (b"grpc-timeout", b"30S"),
    ]
    waiting: dict[int, Callable[[bool], None]] = {}
    statuses: dict[int, bool] = {}
    body = framed(message)

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            connection.initiate_connection()
            connection.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
            connection.increment_flow_control_window(2**31 - 1 - 65_535)
            transport.write(connection.data_to_send())  # type: ignore[attr-defined]

        def data_received(self, data: bytes) -> None:
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.TrailersReceived):
                    statuses[event.stream_id] = (b"grpc-status", b"0") in event.headers
                elif isinstance(event, h2.events.StreamEnded):
                    waiting.pop(event.stream_id)(statuses.pop(event.stream_id, False))
            self.transport.write(connection.data_to_send())  # type: ignore[attr-defined]

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(Protocol, host, int(port))

    def send(answered: Callable[[bool], None]) -> None:
        stream = connection.get_next_available_stream_id()
        connection.send_headers(stream, headers)
        connection.send_data(stream, body, end_stream=True)
        waiting[stream] = answered
        transport.write(connection.data_to_send())

    try:
        return await closed_loop(send, calls, in_flight)
    finally:
        transport.close()


Client = Callable[[str, bytes, int, int], Coroutine[Any, Any, tuple[float, float, int]]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    add_output_arguments(parser, "grpc-clients-benchmark")
    args = parser.parse_args()
    output = claim_output(parser, args.output, args.force, "grpc-clients-benchmark")
    out = Output()
    header(out, "grpc_clients.py", os.cpu_count() or 1)
    clients: dict[str, Client] = {"wire": with_wire, "grpc.aio": with_grpc_aio}
    try:
        import h2  # noqa: F401

        clients["h2"] = with_h2
    except ImportError:
        out("h2 not installed (pip install h2): its column is skipped")
    out(f"closed loop, {args.in_flight} in flight, {args.calls} calls per round, tiny on Triton")
    try:
        measure_all(args, clients, out)
    finally:
        footer(out)
        out.write(output)


def measure_all(args: argparse.Namespace, clients: dict[str, Client], out: Output) -> None:
    """Every client, round by round, then each one's median and its ratio to the wire client's."""
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
    with tempfile.TemporaryDirectory() as tmp:
        build_repository(Path(tmp), ["tiny"])
        with EmbeddedTriton(Path(tmp), models=["tiny"]) as server:
            message = timing.run(request_bytes(server.grpc_url))
            for round_ in range(1, args.rounds + 1):
                for name, client in clients.items():
                    rate, cpu, failed = timing.run(
                        client(server.grpc_url, message, args.calls, args.in_flight)
                    )
                    results[name].append((rate, cpu))
                    out(f"round {round_} {name:9} {rate:8.0f} calls/s {cpu:6.0f} µs CPU/call"
                        f"  failed {failed}")  # fmt: skip
    out(f"load average {os.getloadavg()[0]:.2f} at the end")
    wire_cpu = statistics.median(cpu for _, cpu in results["wire"])
    wire_rate = statistics.median(rate for rate, _ in results["wire"])
    out("\nmedian of the rounds      calls/s  µs CPU/call  CPU vs wire  calls/s vs wire")
    for name, rows in results.items():
        rate = statistics.median(r for r, _ in rows)
        cpu = statistics.median(c for _, c in rows)
        out(f"{name:22} {rate:10.0f} {cpu:12.0f} {cpu / wire_cpu:11.2f}× "
            f"{rate / wire_rate:15.2f}×")  # fmt: skip


if __name__ == "__main__":
    main()
