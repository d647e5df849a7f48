"""Protocol tests of the wire gRPC client's streaming calls (GrpcWire.open_call, what the
grpc-stream target's ModelStreamInfer rides on) against an independent HTTP/2 server: python-hyper's
h2 (h2_grpc_server.py), which fails the test if h2 rejected anything the client sent.

A call is one long-lived stream: its requests go out as they are sent, each a length-prefixed
message in DATA frames within the server's windows, none of them ending the stream until the
client closes its side; its responses come back as whole messages however the server frames them.
"""

from __future__ import annotations

import zlib
from typing import Any

import pytest
from h2.errors import ErrorCodes
from h2.events import PingReceived, StreamEnded, StreamReset
from h2.settings import SettingCodes
from h2_grpc_server import RESPONSE_HEADERS, Request, Server, prefixed, run, until
from hyperframe.frame import GoAwayFrame

from loadtest.wire import grpc_wire
from loadtest.wire.grpc_wire import GrpcWire, StreamingCall

STREAM_PATH = "/inference.GRPCInferenceService/ModelStreamInfer"


def messages(body: bytes | bytearray) -> tuple[list[bytes], int]:
    """The whole gRPC messages at the start of `body`, and where the rest begins: parsed here
    independently of the client."""
    found, at = [], 0
    while len(body) - at >= 5:
        size = int.from_bytes(body[at + 1 : at + 5], "big")
        if len(body) - at - 5 < size:
            break
        assert body[at] == 0
        found.append(bytes(body[at + 5 : at + 5 + size]))
        at += 5 + size
    return found, at


class EchoStream:
    """The server's side of a streaming call: each request message answered at once by
    `replies(message)` (a list of response messages), sent `per_frame` to a DATA frame; OK
    trailers once the client has closed its side."""

    def __init__(self, replies: Any = None, per_frame: int = 1, pad: int = 0) -> None:
        self.replies = replies or (lambda message: [b"echo:" + message])
        self.per_frame = per_frame
        self.pad = pad
        self.read: dict[int, int] = {}  # stream -> body bytes already answered
        self.received: dict[int, list[bytes]] = {}

    def on_data(self, request: Request) -> None:
        stream_id = request.stream_id
        start = self.read.get(stream_id, 0)
        found, used = messages(request.body[start:])
        if not found:
            return
        if stream_id not in self.read:
            request.connection.h2.send_headers(stream_id, RESPONSE_HEADERS)
        self.read[stream_id] = start + used
        self.received.setdefault(stream_id, []).extend(found)
        out = [prefixed(reply) for message in found for reply in self.replies(message)]
        for k in range(0, len(out), self.per_frame):
            request.connection.send_body(stream_id, b"".join(out[k : k + self.per_frame]), self.pad)
        request.connection.flush()

    def on_request(self, request: Request) -> None:
        if request.stream_id not in self.read:
            request.connection.h2.send_headers(request.stream_id, RESPONSE_HEADERS)
        request.connection.send_headers(request.stream_id, [("grpc-status", "0")], end=True)

    def server(self, **options: Any) -> Server:
        return Server(on_request=self.on_request, on_data=self.on_data, **options)


class Answers:
    """What one streaming call got: its response messages and its end."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.ends: list[tuple[int, str]] = []

    def message(self, message: bytes) -> None:
        self.messages.append(message)

    def ended(self, code: int, details: str) -> None:
        self.ends.append((code, details))

    def open(self, wire: GrpcWire) -> StreamingCall:
        return wire.open_call(self.message, self.ended)


def client(server: Server, **options: Any) -> GrpcWire:
    return GrpcWire("127.0.0.1", server.port, STREAM_PATH, 2.0, **options)


def test_a_call_is_one_stream_its_requests_and_answers_whole_and_in_order():
    echo = EchoStream()

    async def scenario() -> None:
        async with echo.server() as server:
            wire = client(server, metadata=[("authorization", "Bearer t")])
            await wire.connect(1.0)
            answers = Answers()
            call = answers.open(wire)
            for k in range(5):
                call.send(prefixed(b"m%d" % k))
            await until(lambda: len(answers.messages) == 5)
            assert not server.seen(StreamEnded)  # nothing ended the stream yet
            call.close_sending()
            await until(lambda: answers.ends)
            (request,) = server.requests
            assert request.header(":path") == STREAM_PATH
            assert request.header("authorization") == "Bearer t"
            assert all(name != b"grpc-timeout" for name, _ in request.headers)  # no deadline
            assert echo.received[request.stream_id] == [b"m%d" % k for k in range(5)]
            assert answers.messages == [b"echo:m%d" % k for k in range(5)]
            assert answers.ends == [(grpc_wire.OK, "")]
            call.send(prefixed(b"late"))  # the call is over: dropped, nothing breaks
            wire.close()

    run(scenario())


@pytest.mark.parametrize("per_frame, pad", [(1, 0), (7, 0), (3, 9)], ids=["one", "seven", "padded"])
def test_answers_however_framed_reach_the_caller_as_whole_messages(per_frame: int, pad: int):
    """One message per DATA frame, several in one, padded; and messages over the frame size,
    cut across frames."""
    sizes = [0, 1, 5, 300, 40_000, 7, 16_384, 3]
    echo = EchoStream(
        lambda message: [bytes([k % 251]) * size for k, size in enumerate(sizes)],
        per_frame,
        pad,
    )

    async def scenario() -> None:
        async with echo.server() as server:
            wire = client(server)
            await wire.connect(1.0)
            answers = Answers()
            call = answers.open(wire)
            call.send(prefixed(b"go"))
            call.close_sending()
            await until(lambda: answers.ends)
            assert answers.messages == [bytes([k % 251]) * size for k, size in enumerate(sizes)]
            assert answers.ends == [(grpc_wire.OK, "")]
            wire.close()

    run(scenario())


def test_requests_wait_for_the_servers_windows_and_stay_in_order():
    """A stream window of 100 bytes and a frame size of 16 KiB: a 50 kB request goes out as the
    server's WINDOW_UPDATEs allow, the small ones sent after it go after it, and the client's
    close rides on the last frame of what waited."""
    echo = EchoStream(lambda message: [len(message).to_bytes(4, "big")])
    sent = [b"a" * 50_000, b"b", b"c" * 20_000, b"d"]

    async def scenario() -> None:
        async with echo.server(settings={SettingCodes.INITIAL_WINDOW_SIZE: 100}) as server:
            wire = client(server)
            await wire.connect(1.0)
            answers = Answers()
            call = answers.open(wire)
            for message in sent:
                call.send(prefixed(message))
            call.close_sending()
            await until(lambda: answers.ends, 2.0)
            (request,) = server.requests
            assert echo.received[request.stream_id] == sent
            assert max(request.frame_sizes) <= 100
            assert answers.messages == [len(m).to_bytes(4, "big") for m in sent]
            assert answers.ends == [(grpc_wire.OK, "")]
            wire.close()

    run(scenario())


def test_a_call_opened_before_its_connection_sends_what_waited_in_order():
    echo = EchoStream()
    written: list[int] = []

    async def scenario() -> None:
        async with echo.server() as server:
            wire = client(server)  # no connect(): the call opens the connection
            answers = Answers()
            call = answers.open(wire)
            for k in range(3):
                call.send(prefixed(b"w%d" % k), written=lambda k=k: written.append(k))
            call.close_sending()
            await until(lambda: answers.ends)
            assert written == [0, 1, 2]
            assert answers.messages == [b"echo:w0", b"echo:w1", b"echo:w2"]
            assert answers.ends == [(grpc_wire.OK, "")]
            assert wire.waited == 1
            wire.close()

    run(scenario())


def test_many_calls_share_one_connection_each_with_its_own_answers():
    echo = EchoStream(lambda message: [message] * 3)

    async def scenario() -> None:
        async with echo.server() as server:
            wire = client(server)
            await wire.connect(1.0)
            calls = [(Answers(), k) for k in range(4)]
            opened = [(answers.open(wire), answers, k) for answers, k in calls]
            for call, _, k in opened:
                call.send(prefixed(b"c%d" % k))
            for call, _, _ in opened:
                call.close_sending()
            await until(lambda: all(answers.ends for answers, _ in calls))
            for answers, k in calls:
                assert answers.messages == [b"c%d" % k] * 3
            assert len(server.connections) == 1
            wire.close()

    run(scenario())


def test_cancel_resets_the_stream_and_ends_the_call_cancelled():
    echo = EchoStream()

    async def scenario() -> None:
        async with echo.server() as server:
            wire = client(server)
            await wire.connect(1.0)
            answers = Answers()
            call = answers.open(wire)
            call.send(prefixed(b"x"))
            await until(lambda: answers.messages)
            call.cancel()
            assert answers.ends == [(grpc_wire.CANCELLED, "cancelled by the client")]
            await until(lambda: server.seen(StreamReset))
            (reset,) = server.seen(StreamReset)
            assert reset.error_code == ErrorCodes.CANCEL
            call.send(prefixed(b"after"))  # dropped
            call.cancel()  # once only
            assert len(answers.ends) == 1
            later = Answers()  # the connection carries on
            second = later.open(wire)
            second.send(prefixed(b"y"))
            second.close_sending()
            await until(lambda: later.ends)
            assert later.messages == [b"echo:y"]
            wire.close()

    run(scenario())


def test_a_status_the_server_ends_with_mid_call_reaches_the_caller_after_its_answers():
    def fail_on_second(request: Request) -> None:
        found, _ = messages(request.body)
        if len(found) == 1:
            request.connection.h2.send_headers(request.stream_id, RESPONSE_HEADERS)
            request.connection.send_body(request.stream_id, prefixed(b"first"))
            request.connection.flush()
        elif len(found) == 2:
            trailers = [("grpc-status", "13"), ("grpc-message", "model%20failed")]
            request.connection.send_headers(request.stream_id, trailers, end=True)

    async def scenario() -> None:
        async with Server(on_data=fail_on_second) as server:
            wire = client(server)
            await wire.connect(1.0)
            answers = Answers()
            call = answers.open(wire)
            call.send(prefixed(b"1"))
            await until(lambda: answers.messages)
            call.send(prefixed(b"2"))
            await until(lambda: answers.ends)
            assert answers.messages == [b"first"]
            assert answers.ends == [(grpc_wire.INTERNAL, "model failed")]
            # The client had not closed its side: the stream is reset, not left half-open.
            await until(lambda: server.seen(StreamReset))
            wire.close()

    run(scenario())


def test_a_message_cut_short_by_the_end_of_the_call_is_an_error():
    def cut(request: Request) -> None:
        request.connection.h2.send_headers(request.stream_id, RESPONSE_HEADERS)
        request.connection.send_body(request.stream_id, prefixed(b"whole") + prefixed(b"cut")[:4])
        request.connection.send_headers(request.stream_id, [("grpc-status", "0")], end=True)

    async def scenario() -> None:
        async with Server(on_request=cut) as server:
            wire = client(server)
            await wire.connect(1.0)
            answers = Answers()
            call = answers.open(wire)
            call.send(prefixed(b"go"))
            call.close_sending()
            await until(lambda: answers.ends)
            assert answers.messages == [b"whole"]
            assert answers.ends == [
                (grpc_wire.INTERNAL, "the server ended the call inside a message")
            ]
            wire.close()

    run(scenario())


def test_a_call_the_server_did_not_take_is_sent_again_whole_on_a_new_connection():
    """GOAWAY below the call's stream (last-stream-id 0: nothing processed), as nginx sends when
    it rotates a connection: the call goes again on the next connection, every message sent so
    far with it, as grpc-core's transparent retry replays a streaming call it had not committed."""
    echo = EchoStream()

    def on_first_connection_go_away(request: Request) -> None:
        """Written raw (h2 would hold itself to its own GOAWAY)."""
        if len(request.connection.server.connections) == 1:
            request.connection.raw(GoAwayFrame(last_stream_id=0, error_code=0))
        else:
            echo.on_data(request)

    async def scenario() -> None:
        async with Server(
            on_data=on_first_connection_go_away, on_request=echo.on_request
        ) as server:
            wire = client(server)
            await wire.connect(1.0)
            answers = Answers()
            call = answers.open(wire)
            call.send(prefixed(b"x"))
            call.send(prefixed(b"y"))
            await until(lambda: len(answers.messages) == 2)
            call.send(prefixed(b"z"))
            call.close_sending()
            await until(lambda: answers.ends)
            assert answers.messages == [b"echo:x", b"echo:y", b"echo:z"]
            assert answers.ends == [(grpc_wire.OK, "")]
            assert wire.transparent_retries == 1 and len(server.connections) == 2
            assert echo.received[server.requests[-1].stream_id] == [b"x", b"y", b"z"]
            wire.close()

    run(scenario())


def test_a_call_the_server_answered_is_never_sent_again():
    """Refused after the server's headers and a message: the server took it, so the call fails
    UNAVAILABLE rather than run twice; the next call opens a stream of its own."""

    def answer_then_refuse(request: Request) -> None:
        if request.stream_id == 1:
            request.connection.h2.send_headers(1, RESPONSE_HEADERS)
            request.connection.send_body(1, prefixed(b"took it"))
            request.connection.flush()
            request.connection.reset(1, ErrorCodes.REFUSED_STREAM)
        else:
            EchoStream().on_data(request)

    async def scenario() -> None:
        async with Server(on_data=answer_then_refuse, on_request=lambda request: None) as server:
            wire = client(server)
            await wire.connect(1.0)
            answers = Answers()
            call = answers.open(wire)
            call.send(prefixed(b"x"))
            await until(lambda: answers.ends)
            assert answers.messages == [b"took it"]
            assert answers.ends[0][0] == grpc_wire.UNAVAILABLE
            assert wire.transparent_retries == 0 and len(server.requests) == 1
            wire.close()

    run(scenario())


def test_a_call_past_the_replay_buffer_fails_when_refused():
    """Over REPLAY_BUFFER bytes sent before any answer: the call is committed, as grpc-core's
    is past its retry buffer, and a refusal fails it instead of sending it again."""

    refused: set[int] = set()

    def refuse_once_it_is_big(request: Request) -> None:
        if len(request.body) > grpc_wire.REPLAY_BUFFER and request.stream_id not in refused:
            refused.add(request.stream_id)
            request.connection.reset(request.stream_id, ErrorCodes.REFUSED_STREAM)

    async def scenario() -> None:
        async with Server(on_data=refuse_once_it_is_big, on_request=lambda r: None) as server:
            wire = client(server)
            await wire.connect(1.0)
            answers = Answers()
            call = answers.open(wire)
            for _ in range(5):
                call.send(prefixed(bytes(60_000)))
            await until(lambda: answers.ends)
            assert answers.ends[0][0] == grpc_wire.UNAVAILABLE
            assert wire.transparent_retries == 0
            wire.close()

    run(scenario())


def test_compressed_answers_are_decoded_message_by_message():
    def gzip_replies(request: Request) -> None:
        found, _ = messages(request.body)
        if not found:
            return
        headers = [*RESPONSE_HEADERS, ("grpc-encoding", "gzip")]
        request.connection.h2.send_headers(request.stream_id, headers)
        body = b""
        for text in (b"one", b"two" * 1000, b""):
            packed = zlib.compress(text, wbits=16 + zlib.MAX_WBITS)
            body += b"\x01" + len(packed).to_bytes(4, "big") + packed
        body += prefixed(b"plain")  # flag 0 within a compressed call: as it is
        request.connection.send_body(request.stream_id, body)
        request.connection.send_headers(request.stream_id, [("grpc-status", "0")], end=True)

    async def scenario() -> None:
        async with Server(on_data=gzip_replies, on_request=lambda request: None) as server:
            wire = client(server)
            await wire.connect(1.0)
            answers = Answers()
            call = answers.open(wire)
            call.send(prefixed(b"go"))
            await until(lambda: answers.ends)
            assert answers.messages == [b"one", b"two" * 1000, b"", b"plain"]
            wire.close()

    run(scenario())


def test_after_read_runs_once_each_read_is_parsed_with_its_messages_already_delivered():
    echo = EchoStream(lambda message: [message] * 4, per_frame=4)
    seen_at_read_end: list[int] = []

    async def scenario() -> None:
        async with echo.server() as server:
            wire = client(server)
            await wire.connect(1.0)
            answers = Answers()
            wire.after_read = lambda: seen_at_read_end.append(len(answers.messages))
            call = answers.open(wire)
            call.send(prefixed(b"r"))
            await until(lambda: len(answers.messages) == 4)
            assert 4 in seen_at_read_end  # the read that brought them ran the hook after them
            wire.close()

    run(scenario())


def test_requests_go_compressed_when_asked_and_keepalive_pings_a_call_in_flight():
    """`compression`: each message with the compressed flag, gzip inside, `grpc-encoding` sent;
    `keepalive_s`: PINGs while the call is open (the server answers them) and the call goes on."""
    received: list[bytes] = []

    def gunzip_and_echo(request: Request) -> None:
        """Each whole message (flag 1 checked) gunzipped and echoed as it is."""
        body, at = request.body, 0
        while len(body) - at >= 5:
            size = int.from_bytes(body[at + 1 : at + 5], "big")
            if len(body) - at - 5 < size:
                break
            assert body[at] == 1
            message = zlib.decompress(bytes(body[at + 5 : at + 5 + size]), 16 + zlib.MAX_WBITS)
            if not received:
                request.connection.h2.send_headers(request.stream_id, RESPONSE_HEADERS)
            received.append(message)
            request.connection.send_body(request.stream_id, prefixed(message))
            at += 5 + size
        del body[:at]
        request.connection.flush()

    def trailers(request: Request) -> None:
        request.connection.send_headers(request.stream_id, [("grpc-status", "0")], end=True)

    async def scenario() -> None:
        async with Server(on_data=gunzip_and_echo, on_request=trailers) as server:
            wire = client(server, compression="gzip", keepalive_s=0.02)
            await wire.connect(1.0)
            answers = Answers()
            call = answers.open(wire)
            call.send(grpc_wire.framed(b"first", "gzip"))
            await until(lambda: answers.messages)
            await until(lambda: len(server.seen(PingReceived)) >= 2)  # pings while it is open
            call.send(grpc_wire.framed(b"second" * 100, "gzip"))
            call.close_sending()
            await until(lambda: answers.ends)
            (request,) = server.requests
            assert request.header("grpc-encoding") == "gzip"
            assert received == [b"first", b"second" * 100]
            assert answers.messages == received and answers.ends == [(grpc_wire.OK, "")]
            wire.close()

    run(scenario())
