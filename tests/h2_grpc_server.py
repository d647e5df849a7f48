"""An independent gRPC server end for the wire client's protocol tests: python-hyper's h2.

h2's state machine rejects what a real server would (a DATA frame over a flow-control window or
over the frame size, a stream beyond SETTINGS_MAX_CONCURRENT_STREAMS, a bad stream id): every such
rejection is recorded, and leaving the server checks that there were none. Hooks make the server
answer late, split, padded, garbled, reset, going away or gone; frames h2 will not send are
written raw with hyperframe, h2's own frame layer. Everything is on 127.0.0.1, ports chosen by the
OS. Used by test_grpc_wire.py (unary calls) and test_grpc_wire_stream.py (streaming calls).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    DataReceived,
    Event,
    RequestReceived,
    StreamEnded,
)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import Frame

from loadtest.wire.grpc_wire import GrpcWire

PATH = "/inference.GRPCInferenceService/ModelInfer"
RESPONSE_HEADERS = [(":status", "200"), ("content-type", "application/grpc")]


def prefixed(message: bytes) -> bytes:
    """gRPC's length prefix, written here independently of `framed` (which is tested below)."""
    return bytes([0]) + len(message).to_bytes(4, "big") + message


# --- the test server


@dataclass
class Request:
    """One call as the server saw it."""

    connection: ServerConnection
    stream_id: int
    headers: list[tuple[bytes, bytes]]
    body: bytearray = field(default_factory=bytearray)
    frame_sizes: list[int] = field(default_factory=list)  # each DATA frame's payload

    def header(self, name: str) -> str:
        values = [value for key, value in self.headers if key == name.encode()]
        assert len(values) == 1, f"{name}: {values}"
        return values[0].decode()

    @property
    def message(self) -> bytes:
        """The gRPC message, its length prefix checked."""
        assert self.body[:1] == b"\x00"
        assert int.from_bytes(self.body[1:5], "big") == len(self.body) - 5
        return bytes(self.body[5:])

    def answer(
        self, message: bytes = b"", status: int = 0, details: str = "", pad: int = 0
    ) -> None:
        self.connection.answer(self.stream_id, message, status, details, pad)


Hook = Callable[[Request], None]


def echo(request: Request) -> None:
    request.answer(b"echo:" + request.message)


def hold(request: Request) -> None:
    """No answer: the test decides when, or whether, the call is answered."""


class Server:
    """A listener on 127.0.0.1 (port 0) with one h2 connection per client connection.

    `on_request` runs when a request is complete (its END_STREAM), `on_headers` as soon as its
    headers are in, `on_data` after each DATA frame (a streaming call's messages); any may
    answer. `settings` are those of the server's first SETTINGS
    frame (and h2 holds the client to them); `connection_window` is granted on top of the
    connection's initial 65 535 bytes (HTTP/2 has no setting for that window).
    """

    def __init__(
        self,
        on_request: Hook = echo,
        on_headers: Hook | None = None,
        settings: dict[SettingCodes, int] | None = None,
        connection_window: int = 0,
        on_data: Hook | None = None,
    ) -> None:
        self.on_request = on_request
        self.on_headers = on_headers
        self.on_data = on_data
        self.settings = settings or {}
        self.connection_window = connection_window
        self.connections: list[ServerConnection] = []
        self.requests: list[Request] = []
        self.events: list[Event] = []
        self.errors: list[Exception] = []  # what h2 rejected: the client broke the protocol
        self.most_open = 0  # the most streams open at once on one connection
        self.listener: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Server:
        loop = asyncio.get_running_loop()
        self.listener = await loop.create_server(lambda: ServerConnection(self), "127.0.0.1", 0)
        self.port = self.listener.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self.stop()
        if kind is None:
            assert not self.errors, f"h2 rejected what the client sent: {self.errors}"

    def stop(self) -> None:
        """The server is gone: no listener, no connections."""
        if self.listener is not None:
            self.listener.close()
        for connection in self.connections:
            connection.transport.close()

    def client(self, timeout_s: float = 2.0, **options: Any) -> GrpcWire:
        return GrpcWire("127.0.0.1", self.port, PATH, timeout_s, **options)

    def seen(self, kind: type[Event]) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]


class ServerConnection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.transport: asyncio.Transport
        self.requests: dict[int, Request] = {}
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections.append(self)
        if self.server.settings:  # h2's way to choose what its first SETTINGS frame says
            self.h2.local_settings = Settings(client=False, initial_values=self.server.settings)
            self.h2.max_inbound_frame_size = self.h2.local_settings.max_frame_size
        self.h2.initiate_connection()
        if self.server.connection_window:
            self.h2.increment_flow_control_window(self.server.connection_window)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as exc:
            self.server.errors.append(exc)
            self.transport.close()
            return
        for event in events:
            self.server.events.append(event)
            self.handle(event)
        self.flush()

    def handle(self, event: Event) -> None:
        if isinstance(event, RequestReceived):
            assert event.stream_id is not None and event.headers is not None
            request = Request(self, event.stream_id, list(event.headers))
            self.requests[event.stream_id] = request
            self.server.requests.append(request)
            self.server.most_open = max(self.server.most_open, self.h2.open_inbound_streams)
            if self.server.on_headers is not None:
                self.server.on_headers(request)
        elif isinstance(event, DataReceived):
            assert event.stream_id is not None and event.data is not None
            request = self.requests[event.stream_id]
            request.body += event.data
            request.frame_sizes.append(len(event.data))
            # Consumed at once: h2 sends WINDOW_UPDATEs as its windows empty.
            self.h2.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
            if self.server.on_data is not None:
                self.server.on_data(request)
        elif isinstance(event, StreamEnded):
            assert event.stream_id is not None
            self.server.on_request(self.requests[event.stream_id])

    def flush(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(self.h2.data_to_send())

    def answer(self, stream_id: int, message: bytes, status: int, details: str, pad: int) -> None:
        """A whole gRPC answer through h2: headers, the message (padded if asked), trailers."""
        self.h2.send_headers(stream_id, RESPONSE_HEADERS)
        self.send_body(stream_id, prefixed(message), pad)
        trailers = [("grpc-status", str(status))] + ([("grpc-message", details)] if details else [])
        self.h2.send_headers(stream_id, trailers, end_stream=True)
        self.flush()

    def send_body(self, stream_id: int, body: bytes, pad: int = 0) -> None:
        padding = pad + 1 if pad else 0
        while body:
            window = self.h2.local_flow_control_window(stream_id)
            size = min(self.h2.max_outbound_frame_size, window) - padding
            assert size > 0, "the client's flow-control window is closed"
            self.h2.send_data(stream_id, body[:size], pad_length=pad or None)
            body = body[size:]

    def send_headers(self, stream_id: int, headers: list[tuple[str, str]], end: bool) -> None:
        self.h2.send_headers(stream_id, headers, end_stream=end)
        self.flush()

    def reset(self, stream_id: int, code: ErrorCodes) -> None:
        self.h2.reset_stream(stream_id, code)
        self.flush()

    def header_block(self, headers: list[tuple[str, str]]) -> bytes:
        """Encoded by h2's own HPACK encoder, so the blocks h2 sends later stay decodable."""
        return bytes(self.h2.encoder.encode(headers))

    def raw(self, *frames: Frame) -> None:
        """Frames written as they are, behind h2's back."""
        self.flush()
        self.transport.write(b"".join(frame.serialize() for frame in frames))


# --- running a scenario


def run(scenario: Coroutine[Any, Any, None], limit_s: float = 3.0) -> None:
    """One scenario on a fresh event loop; an exception that escaped into the loop (a callback or
    `data_received` that raised, a future's exception nobody read) fails the test."""
    escaped: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: escaped.append(context))
        await asyncio.wait_for(scenario, limit_s)

    asyncio.run(main())
    assert not escaped, escaped


async def until(condition: Callable[[], object], limit_s: float = 1.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "not within the time limit"
        await asyncio.sleep(0.001)
