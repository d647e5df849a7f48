"""The stub's lean gRPC server (loadtest/stub/grpc_wire_server.py) against grpcio's own client.

grpcio's client is strict HTTP/2 (it fails a call on any flow-control or framing violation), so
each test drives the server in process, on 127.0.0.1 (port chosen by the OS), with grpc.aio
calls on the same event loop, and compares what comes back with what the grpc.aio stub servicer
(grpc_server.py) answers. The wire client (wire/grpc_wire.py) is checked against it too.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from hpack import Encoder
from stream_law import law_repository
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from loadtest.models import build_repository
from loadtest.stub.access import TokenGate
from loadtest.stub.catalog import TIMEOUT_EXPIRED, Behaviour, Catalog
from loadtest.stub.grpc_server import Servicer
from loadtest.stub.grpc_stream import model_stream_infer
from loadtest.stub.grpc_wire_server import WireGrpcServer
from loadtest.wire import grpc_wire
from loadtest.wire.grpc_wire import GrpcWire, framed
from loadtest.wire.http2 import HeaderBlocks

Scenario = Callable[[pb_grpc.GRPCInferenceServiceStub, WireGrpcServer, int], Awaitable[None]]


def serve(
    scenario: Scenario,
    catalog: Catalog | None = None,
    behaviour: Behaviour | None = None,
    gate: TokenGate | None = None,
    limit_s: float = 10.0,
    options: tuple[tuple[str, Any], ...] = (),
) -> None:
    """Run `scenario(stub, server, port)` against a started server; an exception that escaped
    into the event loop fails the test."""
    escaped: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: escaped.append(context))
        server = WireGrpcServer(catalog or Catalog(), behaviour or Behaviour(), gate)
        port = await server.start("127.0.0.1", 0, None)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options) as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                await asyncio.wait_for(scenario(stub, server, port), limit_s)
        finally:
            await server.stop()

    asyncio.run(main())
    ours = [context for context in escaped if not _grpc_poller_of_a_closed_loop(context)]
    assert not ours, ours


def _grpc_poller_of_a_closed_loop(context: dict[str, Any]) -> bool:
    """grpc.aio's own completion-queue poller (the client side of these tests, not the server
    under test) sometimes fires a callback bound to an event loop an earlier asyncio.run already
    closed, when one process runs many of them (pytest; grpc/grpc PR #22758 on the poller's
    shutdown race). Seen once in a CI run of 2386 tests: not an exception of the stub's."""
    handle = repr(context.get("handle", ""))
    error = context.get("exception")
    return (
        "PollerCompletionQueue._handle_events" in handle
        and isinstance(error, RuntimeError)
        and str(error) == "Event loop is closed"
    )


def test_every_unary_method_answers_as_the_grpc_aio_stub_does():
    catalog = Catalog()
    reference = Servicer(catalog, Behaviour())

    async def scenario(stub: Any, server: WireGrpcServer, port: int) -> None:
        calls = [
            ("ServerLive", pb.ServerLiveRequest()),
            ("ServerReady", pb.ServerReadyRequest()),
            ("ModelReady", pb.ModelReadyRequest(name="tiny")),
            ("ServerMetadata", pb.ServerMetadataRequest()),
            ("ModelMetadata", pb.ModelMetadataRequest(name="tiny")),
            ("ModelConfig", pb.ModelConfigRequest(name="tiny")),
            ("ModelStatistics", pb.ModelStatisticsRequest(name="tiny")),
            ("ModelInfer", pb.ModelInferRequest(model_name="tiny")),
        ]
        for method, request in calls:
            got = await getattr(stub, method)(request)
            expected = await getattr(reference, method)(request, None)
            assert got == expected, method
        assert server.behaviour.infer_count == 1

    serve(scenario, catalog)


def test_a_large_answer_waits_for_the_clients_flow_control_windows(tmp_path: Path):
    """An answer of 1 MB, where grpcio's client opens with 64 KiB windows: it must go out as
    grpcio's WINDOW_UPDATEs allow (three at once share the connection's window), or grpcio
    fails the call."""
    config = tmp_path / "big" / "config.pbtxt"
    config.parent.mkdir()
    config.write_text(
        'name: "big"\nmax_batch_size: 0\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 262144 ] } ]\n'
    )
    catalog = Catalog(tmp_path)

    async def scenario(stub: Any, server: WireGrpcServer, port: int) -> None:
        answers = await asyncio.gather(
            *(stub.ModelInfer(pb.ModelInferRequest(model_name="big")) for _ in range(3))
        )
        for answer in answers:
            assert answer.raw_output_contents[0] == bytes(4 * 262144)
            assert list(answer.outputs[0].shape) == [262144]
        assert server.held_answers == 3

    # Without BDP probing grpcio keeps the windows it opened with (64 KiB), as it would not on
    # its own; with it, it grows them past 1 MB at once and nothing here would wait.
    serve(scenario, catalog, options=(("grpc.http2.bdp_probe", 0),))


def test_an_unknown_method_is_unimplemented_at_once():
    async def scenario(stub: Any, server: WireGrpcServer, port: int) -> None:
        started = time.monotonic()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        unknown = channel.stream_stream("/inference.GRPCInferenceService/NoSuchStream")
        call = unknown()  # the client never half-closes: no waiting for it
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call.read()
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
        unknown_unary = channel.unary_unary("/inference.GRPCInferenceService/NoSuchThing")
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await unknown_unary(b"")
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "NoSuchThing" in (raised.value.details() or "")
        await channel.close()
        assert time.monotonic() - started < 2.0
        assert await stub.ServerLive(pb.ServerLiveRequest()) == pb.ServerLiveResponse(live=True)

    serve(scenario)


# --- ModelStreamInfer


def stream_request(
    request_id: str, max_tokens: int, text: str = "one two three", **numbers: int
) -> pb.ModelInferRequest:
    """A streamed request as a client builds it: text_input (BYTES), max_tokens and any other
    INT32 inputs (stub_error_after, ...)."""
    request = pb.ModelInferRequest(model_name="llm_known", id=request_id)
    raw = text.encode()
    request.inputs.add(name="text_input", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(len(raw).to_bytes(4, "little") + raw)
    for name, value in {"max_tokens": max_tokens, **numbers}.items():
        request.inputs.add(name=name, datatype="INT32", shape=[1])
        request.raw_input_contents.append(value.to_bytes(4, "little", signed=True))
    return request


async def requests_then_close(
    requests: list[pb.ModelInferRequest],
) -> AsyncIterator[pb.ModelInferRequest]:
    for request in requests:
        yield request


def by_id(responses: list[pb.ModelStreamInferResponse]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = {}
    for response in responses:
        grouped.setdefault(response.infer_response.id, []).append(response)
    return grouped


@pytest.mark.parametrize("law_ms", [(0.0, 0.0, 0.0), (2.0, 0.0, 1.0)], ids=["at-once", "timed"])
def test_model_stream_infer_answers_as_the_grpc_aio_stub_does(
    tmp_path: Path, law_ms: tuple[float, float, float]
):
    """Each request's tokens, in order, each echoing its id, the last FINAL; a request with
    no tokens or a mid-stream failure gets an error response: response for response what the
    grpc.aio side (grpc_stream.py) answers, read by grpcio's client."""
    catalog = Catalog(law_repository(tmp_path, law_ms))
    requests = [
        stream_request("a", 5),
        stream_request("b", 1),
        stream_request("c", 0),
        stream_request("d", 4, stub_error_after=2),
        stream_request("e", 3, text="x " * 50),
    ]

    async def scenario(stub: Any, server: WireGrpcServer, port: int) -> None:
        got = [r async for r in stub.ModelStreamInfer(requests_then_close(requests))]
        reference = [
            r async for r in model_stream_infer(catalog, Behaviour(), requests_then_close(requests))
        ]
        assert by_id(got) == by_id(reference)
        assert [len(by_id(got)[k]) for k in "abcde"] == [5, 1, 1, 3, 3]
        final = [r.infer_response.parameters["triton_final_response"].bool_param for r in got]
        assert sum(final) == 3  # a, b and e end FINAL; c and d end with their error
        assert server.behaviour.infer_count == len(requests)

    serve(scenario, catalog)


def test_a_stream_cancelled_by_the_client_stops_its_answers(tmp_path: Path):
    """RST_STREAM from the client (grpc.aio's cancel): no more tokens are due on the server,
    as a model honouring cancellation stops."""
    catalog = Catalog(law_repository(tmp_path, (0.0, 0.0, 20.0)))

    async def scenario(stub: Any, server: WireGrpcServer, port: int) -> None:
        call = stub.ModelStreamInfer()
        await call.write(stream_request("long", 200))
        first = await call.read()
        assert first.infer_response.id == "long"
        (connection,) = server.connections
        (served,) = connection.streams.values()
        assert served.stream is not None and served.stream.timers
        timers = list(served.stream.timers.values())
        call.cancel()
        await until(lambda: not connection.streams)
        assert all(timer.cancelled() for timer in timers)

    serve(scenario, catalog)


def test_streamed_answers_wait_for_the_clients_flow_control_windows(tmp_path: Path):
    """Three answers of 2000 tokens (~230 KB each) where grpcio's client opens with 64 KiB
    windows: they go out as its WINDOW_UPDATEs allow, every token intact and in order."""
    catalog = Catalog(law_repository(tmp_path, (0.0, 0.0, 0.0)))
    requests = [stream_request(str(k), 2000) for k in range(3)]

    async def scenario(stub: Any, server: WireGrpcServer, port: int) -> None:
        got = by_id([r async for r in stub.ModelStreamInfer(requests_then_close(requests))])
        for k in range(3):
            texts = [r.infer_response.raw_output_contents[0][4:] for r in got[str(k)]]
            assert texts == [f"t{j} ".encode() for j in range(2000)]

    serve(scenario, catalog, options=(("grpc.http2.bdp_probe", 0),))


async def until(condition: Callable[[], object], limit_s: float = 2.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "not within the time limit"
        await asyncio.sleep(0.005)


def test_without_the_token_every_call_is_unauthenticated():
    async def scenario(stub: Any, server: WireGrpcServer, port: int) -> None:
        for method, request in (
            ("ServerLive", pb.ServerLiveRequest()),
            ("ModelInfer", pb.ModelInferRequest(model_name="tiny")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await getattr(stub, method)(request, metadata=[("authorization", "Bearer no")])
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert raised.value.details() == "missing or wrong token"
        answer = await stub.ModelInfer(
            pb.ModelInferRequest(model_name="tiny"), metadata=[("authorization", "Bearer s3cr3t")]
        )
        assert answer.model_name == "tiny"
        assert server.behaviour.infer_count == 1  # the refused one never reached inference

    serve(scenario, gate=TokenGate("s3cr3t"))


def test_a_delay_holds_answers_back_and_a_shorter_triton_timeout_is_rejected():
    def request(timeout_us: int = 0) -> pb.ModelInferRequest:
        message = pb.ModelInferRequest(model_name="tiny")
        if timeout_us:
            message.parameters["timeout"].int64_param = timeout_us
        return message

    async def scenario(stub: Any, server: WireGrpcServer, port: int) -> None:
        started = time.monotonic()
        answers = await asyncio.gather(*(stub.ModelInfer(request()) for _ in range(20)))
        took = time.monotonic() - started
        assert all(answer.model_name == "tiny" for answer in answers)
        assert 0.1 <= took < 1.0  # together, not one after another
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ModelInfer(request(timeout_us=20_000))
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert raised.value.details() == TIMEOUT_EXPIRED
        assert 0.02 <= time.monotonic() - started < 0.1

    serve(scenario, behaviour=Behaviour(delay_s=0.1))


def test_a_call_the_client_gives_up_is_dropped_and_the_connection_carries_on():
    async def scenario(stub: Any, server: WireGrpcServer, port: int) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ModelInfer(pb.ModelInferRequest(model_name="tiny"), timeout=0.05)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.sleep(0.3)  # past the delay: the dropped answer is not written
        (connection,) = server.connections
        assert not connection.streams
        answer = await stub.ModelInfer(pb.ModelInferRequest(model_name="tiny"))
        assert answer.model_name == "tiny"

    serve(scenario, behaviour=Behaviour(delay_s=0.2))


def test_the_wire_client_gets_a_thousand_answers_in_flight_at_once():
    async def scenario(stub: Any, server: WireGrpcServer, port: int) -> None:
        wire = GrpcWire("127.0.0.1", port, "/inference.GRPCInferenceService/ModelInfer", 5.0)
        await wire.connect(2.0)
        message = framed(pb.ModelInferRequest(model_name="tiny").SerializeToString())
        answers = await asyncio.gather(*(wire.unary(message, keep=True) for _ in range(1000)))
        expected = Servicer(Catalog(), Behaviour()).infer_response("tiny").SerializeToString()
        assert {answer for answer in answers} == {(grpc_wire.OK, "", expected)}
        assert server.behaviour.infer_count == 1000
        wire.close()

    serve(scenario)


def test_a_client_that_does_not_speak_http2_is_disconnected():
    async def scenario(stub: Any, server: WireGrpcServer, port: int) -> None:
        loop = asyncio.get_running_loop()
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            received = await loop.run_in_executor(None, _read_until_closed, sock)
        assert received[3] == 4  # the server's SETTINGS came first ...
        assert b"\x07\x00\x00\x00\x00\x00" in received  # ... then GOAWAY
        assert await stub.ServerLive(pb.ServerLiveRequest()) == pb.ServerLiveResponse(live=True)

    serve(scenario)


def _read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_answers_from_a_real_model_repository_have_its_output_shapes(tmp_path: Path):
    build_repository(tmp_path, ["tiny"])

    async def scenario(stub: Any, server: WireGrpcServer, port: int) -> None:
        metadata = await stub.ModelMetadata(pb.ModelMetadataRequest(name="tiny"))
        answer = await stub.ModelInfer(pb.ModelInferRequest(model_name="tiny"))
        assert [o.name for o in answer.outputs] == [o.name for o in metadata.outputs]

    serve(scenario, Catalog(tmp_path))


# --- HeaderBlocks: which decoded blocks may be cached


def test_header_blocks_that_leave_the_table_alone_are_cached_and_others_empty_the_cache():
    encoder = Encoder()
    blocks = HeaderBlocks()
    never_indexed = bytes(Encoder().encode([("grpc-status", "0", True)]))
    assert blocks.decode(never_indexed) == [(b"grpc-status", b"0")]
    assert never_indexed in blocks.cached  # a literal not indexed changes no state
    indexing = bytes(encoder.encode([("grpc-status", "5")]))  # inserted into the table
    assert blocks.decode(indexing) == [(b"grpc-status", b"5")]
    assert not blocks.cached
    indexed = bytes(encoder.encode([("grpc-status", "5")]))  # now the entry's index
    assert blocks.decode(indexed) == [(b"grpc-status", b"5")] and indexed in blocks.cached
    encoder.header_table_size = 0  # a size update at the start of the next block
    resized = bytes(encoder.encode([(":status", "200")]))
    assert blocks.decode(resized) == [(b":status", b"200")]
    assert not blocks.cached
