"""The stub's gRPC side: Triton's GRPCInferenceService over a lean HTTP/2 server end.

Why not grpc.aio: serving one call in Python through grpc.aio costs ~200 µs of CPU, so the stub
answered 4.5-5k calls/s, less than the wire client sends from one worker; the stub's gRPC rows
then measured the stub, not the client (docs/grpc-load-path.md). Here `ModelInfer` is answered
in `data_received` from bytes built once per model, all the answers of one read in one write,
which is what the stub's HTTP side does too.

The HTTP/2 written here is the server half of what targets/grpc_wire.py writes for the client,
for any gRPC client (grpcio's, tritonclient's, the wire client): the preface; SETTINGS (answered;
the client's window and frame-size settings applied to answers); PING (answered); flow control
both ways (answers wait for the client's windows; the server grants itself the largest windows
and tops the connection's up); HEADERS with CONTINUATION and padding, decoded by `hpack`
(targets.grpc_wire.HeaderBlocks, cached); RST_STREAM (that call is dropped, a delayed answer
too); GOAWAY (closed once idle). Answers are headers, the message and trailers, or trailers
alone for an error, with header blocks of never-indexed literals (no encoder state).

Methods: `ModelInfer` (the stub's Behaviour: a delay, Triton's "timeout" parameter), the other
unary methods through the same servicer as grpc_server.py, decoded and encoded with
tritonclient's protobufs; a streaming or unknown method gets UNIMPLEMENTED. With a TokenGate
every call without the token is UNAUTHENTICATED, as the grpc.aio side's interceptor does.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast
from urllib.parse import quote

from google.protobuf.message import DecodeError, Message
from hpack import Encoder
from hpack.exceptions import HPACKError
from tritonclient.grpc import service_pb2 as pb

from loadtest.stub.access import TokenGate
from loadtest.stub.catalog import TIMEOUT_EXPIRED, Behaviour, Catalog
from loadtest.stub.grpc_server import Servicer
from loadtest.targets.grpc_wire import (
    ACK,
    CONTINUATION,
    DATA,
    DEFAULT_FRAME_SIZE,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    INTERNAL,
    LARGEST_FRAME_SIZE,
    MAX_FRAME_SIZE,
    MAX_WINDOW,
    PING,
    PREFACE,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    REFILL_AT,
    RST_STREAM,
    SETTINGS,
    UNAUTHENTICATED,
    UNAVAILABLE,
    UNIMPLEMENTED,
    WINDOW_UPDATE,
    HeaderBlocks,
    frame,
    framed,
    unpadded,
)

SERVICE = "/inference.GRPCInferenceService/"
# The unary methods besides ModelInfer, by name (the servicer's coroutine of that name answers
# them), with their request types.
_UNARY: dict[str, type[Message]] = {
    "ServerLive": pb.ServerLiveRequest,
    "ServerReady": pb.ServerReadyRequest,
    "ModelReady": pb.ModelReadyRequest,
    "ServerMetadata": pb.ServerMetadataRequest,
    "ModelMetadata": pb.ModelMetadataRequest,
    "ModelConfig": pb.ModelConfigRequest,
    "ModelStatistics": pb.ModelStatisticsRequest,
}
NO_ERROR_CODE = 0x0
PROTOCOL_ERROR_CODE = 0x1
FLOW_CONTROL_ERROR_CODE = 0x3
# grpc-message is percent-encoded: every byte outside printable ASCII, and "%" itself.
_MESSAGE_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def _block(fields: list[tuple[str, str]]) -> bytes:
    """A header block of never-indexed literals: it changes no compression state, so blocks
    can be built once and sent as they are."""
    return bytes(Encoder().encode([(name, value, True) for name, value in fields], huffman=True))


RESPONSE_BLOCK = _block([(":status", "200"), ("content-type", "application/grpc")])
OK_TRAILERS = _block([("grpc-status", "0")])


def _error_block(code: int, details: str) -> bytes:
    """Trailers-only: the whole answer to a call that failed."""
    return _block(
        [
            (":status", "200"),
            ("content-type", "application/grpc"),
            ("grpc-status", str(code)),
            ("grpc-message", quote(details, safe=_MESSAGE_SAFE)),
        ]
    )


class _Call:
    """One incoming stream: what it asked for, and its answer while flow control holds it."""

    __slots__ = ("body", "half_closed", "handle", "method", "rest", "trailers", "window")

    def __init__(self, method: str, window: int) -> None:
        self.method = method  # "ModelInfer", or a name in _UNARY
        self.body = bytearray()
        self.half_closed = False  # the client has sent all of its request
        self.window = window  # what the client lets this stream's answer send
        self.rest = memoryview(b"")  # answer bytes still to write
        self.trailers = b""  # written after `rest`
        self.handle: asyncio.TimerHandle | asyncio.Task[None] | None = None  # a later answer


class _Connection(asyncio.Protocol):
    """One client connection: reads its frames, answers its calls, one write per read."""

    def __init__(self, server: WireGrpcServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.blocks = HeaderBlocks()
        self.pending = b""
        self.preface_seen = False
        self.calls: dict[int, _Call] = {}
        self.blocked: deque[int] = deque()
        self.send_window = DEFAULT_WINDOW
        self.initial_window = DEFAULT_WINDOW
        self.max_frame = DEFAULT_FRAME_SIZE
        self.received = 0
        self.header_block: tuple[int, int, list[bytes]] | None = None
        self.going_away = False
        self.out: list[bytes] = []  # frames to write at the end of this read

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections.add(self)
        settings = INITIAL_WINDOW_SIZE.to_bytes(2, "big") + MAX_WINDOW.to_bytes(4, "big")
        self.transport.write(
            frame(SETTINGS, 0, 0, settings)
            + frame(WINDOW_UPDATE, 0, 0, (MAX_WINDOW - DEFAULT_WINDOW).to_bytes(4, "big"))
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        for call in self.calls.values():
            if call.handle is not None:
                call.handle.cancel()
        self.calls.clear()

    def data_received(self, data: bytes) -> None:
        buffer = self.pending + data if self.pending else data
        position = 0
        if not self.preface_seen:
            if len(buffer) < len(PREFACE):
                self.pending = buffer
                return
            if not buffer.startswith(PREFACE):
                self._close(PROTOCOL_ERROR_CODE)
                return
            self.preface_seen = True
            position = len(PREFACE)
        size = len(buffer)
        try:
            while size - position >= 9:
                length = int.from_bytes(buffer[position : position + 3], "big")
                end = position + 9 + length
                if end > size:
                    break
                kind = buffer[position + 3]
                flags = buffer[position + 4]
                stream_id = int.from_bytes(buffer[position + 5 : position + 9], "big") & MAX_WINDOW
                self._frame_in(kind, flags, stream_id, buffer[position + 9 : end])
                position = end
        except (HPACKError, ValueError, IndexError):
            self._close(PROTOCOL_ERROR_CODE)
            return
        self.pending = buffer[position:]
        if self.received > REFILL_AT:
            self.out.append(frame(WINDOW_UPDATE, 0, 0, self.received.to_bytes(4, "big")))
            self.received = 0
        self._flush()

    def _flush(self) -> None:
        if self.out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def _close(self, code: int) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(GOAWAY, 0, 0, bytes(4) + code.to_bytes(4, "big")))
            self.transport.close()

    # --- frames in
    def _frame_in(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self.header_block is not None and kind != CONTINUATION:
            raise ValueError("a header block was interrupted by another frame")
        if kind == DATA:
            self.received += len(payload)
            call = self.calls.get(stream_id)
            if call is not None:
                call.body += unpadded(payload, flags)
                if flags & END_STREAM:
                    self._dispatch(stream_id, call)
        elif kind == HEADERS:
            payload = unpadded(payload, flags)
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            self.header_block = (stream_id, flags, [payload])
            if flags & END_HEADERS:
                self._headers_done()
        elif kind == CONTINUATION:
            if self.header_block is None or self.header_block[0] != stream_id:
                raise ValueError("CONTINUATION without its HEADERS")
            self.header_block[2].append(payload)
            if flags & END_HEADERS:
                self._headers_done()
        elif kind == SETTINGS:
            if not flags & ACK:
                self._settings(payload)
                self.out.append(frame(SETTINGS, ACK, 0))
        elif kind == WINDOW_UPDATE:
            increment = int.from_bytes(payload[:4], "big") & MAX_WINDOW
            if stream_id == 0:
                self.send_window += increment
                if self.send_window > MAX_WINDOW:
                    raise ValueError("connection window overflow")
            elif (call := self.calls.get(stream_id)) is not None:
                call.window += increment
                if call.window > MAX_WINDOW:
                    self._drop(stream_id, FLOW_CONTROL_ERROR_CODE)
            self._write_blocked()
        elif kind == PING:
            if not flags & ACK:
                self.out.append(frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            self._forget(stream_id)
        elif kind == GOAWAY:
            self.going_away = True
            self._close_when_idle()
        elif kind == PUSH_PROMISE:
            raise ValueError("PUSH_PROMISE from a client")
        # PRIORITY and unknown frame types are ignored, as HTTP/2 requires.

    def _settings(self, payload: bytes) -> None:
        for offset in range(0, len(payload) - len(payload) % 6, 6):
            key = int.from_bytes(payload[offset : offset + 2], "big")
            value = int.from_bytes(payload[offset + 2 : offset + 6], "big")
            if key == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ValueError("SETTINGS_INITIAL_WINDOW_SIZE too large")
                delta = value - self.initial_window
                self.initial_window = value
                for call in self.calls.values():
                    call.window += delta
            elif key == MAX_FRAME_SIZE:
                if not DEFAULT_FRAME_SIZE <= value <= LARGEST_FRAME_SIZE:
                    raise ValueError("SETTINGS_MAX_FRAME_SIZE out of range")
                self.max_frame = value
        self._write_blocked()

    def _headers_done(self) -> None:
        assert self.header_block is not None
        stream_id, flags, parts = self.header_block
        self.header_block = None
        fields = self.blocks.decode(parts[0] if len(parts) == 1 else b"".join(parts))
        if self.going_away:
            return  # no new calls after the client's GOAWAY
        known = self.calls.get(stream_id)
        if known is not None:  # trailers from the client (gRPC's send none): the request ends
            if flags & END_STREAM:
                self._dispatch(stream_id, known)
            return
        path = ""
        authorization: bytes | None = None
        for name, value in fields:
            if name == b":path":
                path = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value
        method = path.removeprefix(SERVICE) if path.startswith(SERVICE) else ""
        call = _Call(method, self.initial_window)
        call.half_closed = bool(flags & END_STREAM)
        self.calls[stream_id] = call
        # Refused before its message is read, as grpc.aio's interceptor and method lookup do; a
        # streaming method (ModelStreamInfer) ends here too, so its client is not left waiting.
        gate = self.server.gate
        if gate is not None and not gate.admits(authorization):
            self._fail(stream_id, UNAUTHENTICATED, "missing or wrong token")
        elif method != "ModelInfer" and method not in _UNARY:
            self._fail(stream_id, UNIMPLEMENTED, f"Method not found: {path}")
        elif call.half_closed:
            self._dispatch(stream_id, call)

    # --- calls
    def _dispatch(self, stream_id: int, call: _Call) -> None:
        """The request is whole: answer it now, or later (a delay, a servicer coroutine)."""
        call.half_closed = True
        body = bytes(call.body)
        if len(body) < 5 or body[0] != 0 or int.from_bytes(body[1:5], "big") != len(body) - 5:
            self._fail(stream_id, INTERNAL, "a request that is not one uncompressed message")
            return
        if call.method == "ModelInfer":
            self._infer(stream_id, call, body[5:])
            return
        try:
            request = _UNARY[call.method].FromString(body[5:])
        except DecodeError:
            self._fail(stream_id, INTERNAL, "the request does not parse")
            return
        method = getattr(self.server.servicer, call.method)
        loop = asyncio.get_running_loop()
        call.handle = loop.create_task(self._serve(stream_id, method, request))

    async def _serve(
        self, stream_id: int, method: Callable[[Any, Any], Awaitable[Message]], request: Message
    ) -> None:
        try:
            response = await method(request, None)
        except Exception as exc:  # a servicer bug is this call's error, not the connection's
            self._fail(stream_id, INTERNAL, f"{type(exc).__name__}: {exc}")
        else:
            self._answer(stream_id, framed(response.SerializeToString()))
        self._flush()

    def _infer(self, stream_id: int, call: _Call, message: bytes) -> None:
        try:
            request = pb.ModelInferRequest.FromString(message)
        except DecodeError:
            self._fail(stream_id, INTERNAL, "the request does not parse")
            return
        behaviour = self.server.behaviour
        behaviour.arrived()
        answer = self.server.infer_answer(request.model_name)
        if not behaviour.delay_s:
            self._answer(stream_id, answer)
            return
        parameters = request.parameters
        timeout_us = parameters["timeout"].int64_param if "timeout" in parameters else 0
        loop = asyncio.get_running_loop()
        if behaviour.rejects(timeout_us):
            call.handle = loop.call_later(
                timeout_us / 1e6, self._later_failure, stream_id, UNAVAILABLE, TIMEOUT_EXPIRED
            )
        else:
            call.handle = loop.call_later(behaviour.delay_s, self._later_answer, stream_id, answer)

    def _later_answer(self, stream_id: int, message: bytes) -> None:
        self._answer(stream_id, message)
        self._flush()

    def _later_failure(self, stream_id: int, code: int, details: str) -> None:
        self._fail(stream_id, code, details)
        self._flush()

    # --- answers out
    def _answer(self, stream_id: int, message: bytes) -> None:
        call = self.calls.get(stream_id)
        if call is None:
            return  # reset by the client meanwhile
        call.handle = None
        out = self.out
        out.append(frame(HEADERS, END_HEADERS, stream_id, RESPONSE_BLOCK))
        size = len(message)
        if size <= self.max_frame and size <= self.send_window and size <= call.window:
            out.append(frame(DATA, 0, stream_id, message))  # the usual case: all at once
            self.send_window -= size
            out.append(frame(HEADERS, END_HEADERS | END_STREAM, stream_id, OK_TRAILERS))
            self._done(stream_id)
            return
        call.rest = memoryview(message)
        call.trailers = OK_TRAILERS
        self._data_frames(stream_id, call)
        if call.rest:
            self.blocked.append(stream_id)
            self.server.held_answers += 1

    def _fail(self, stream_id: int, code: int, details: str) -> None:
        call = self.calls.get(stream_id)
        if call is None:
            return
        call.handle = None
        self.out.append(
            frame(HEADERS, END_HEADERS | END_STREAM, stream_id, _error_block(code, details))
        )
        self._done(stream_id)

    def _data_frames(self, stream_id: int, call: _Call) -> None:
        """Write as much of a held answer as the windows allow; its trailers once it is out."""
        while call.rest:
            size = min(len(call.rest), self.max_frame, self.send_window, call.window)
            if size <= 0:
                return
            piece, call.rest = call.rest[:size], call.rest[size:]
            self.out.append(frame(DATA, 0, stream_id, bytes(piece)))
            self.send_window -= size
            call.window -= size
        self.out.append(frame(HEADERS, END_HEADERS | END_STREAM, stream_id, call.trailers))
        self._done(stream_id)

    def _write_blocked(self) -> None:
        for _ in range(len(self.blocked)):
            stream_id = self.blocked.popleft()
            call = self.calls.get(stream_id)
            if call is None:
                continue
            self._data_frames(stream_id, call)
            if stream_id in self.calls:
                self.blocked.append(stream_id)

    def _done(self, stream_id: int) -> None:
        """The answer is written in full. A client still sending (it had not half-closed) is
        told to stop, as gRPC servers do."""
        call = self.calls.pop(stream_id)
        if call.handle is not None:
            call.handle.cancel()
        if not call.half_closed:
            self.out.append(frame(RST_STREAM, 0, stream_id, NO_ERROR_CODE.to_bytes(4, "big")))
        if self.going_away:
            self._close_when_idle()

    def _drop(self, stream_id: int, code: int) -> None:
        self.out.append(frame(RST_STREAM, 0, stream_id, code.to_bytes(4, "big")))
        self._forget(stream_id)

    def _forget(self, stream_id: int) -> None:
        call = self.calls.pop(stream_id, None)
        if call is not None and call.handle is not None:
            call.handle.cancel()
        if self.going_away:
            self._close_when_idle()

    def _close_when_idle(self) -> None:
        if not self.calls and self.transport is not None and not self.transport.is_closing():
            self._flush()
            self.transport.close()


class WireGrpcServer:
    """Serves the stub's gRPC side on one listener; `stop()` ends every connection."""

    def __init__(
        self, catalog: Catalog, behaviour: Behaviour, gate: TokenGate | None = None
    ) -> None:
        self.servicer = Servicer(catalog, behaviour)
        self.behaviour = behaviour
        self.gate = gate
        self.connections: set[_Connection] = set()
        self.held_answers = 0  # answers that waited for the client's flow-control windows
        self._answers: dict[str, bytes] = {}
        self._listener: asyncio.Server | None = None

    def infer_answer(self, model_name: str) -> bytes:
        """The framed ModelInferResponse for a model, built on its first request."""
        answer = self._answers.get(model_name)
        if answer is None:
            answer = framed(self.servicer.infer_response(model_name).SerializeToString())
            self._answers[model_name] = answer
        return answer

    async def start(self, host: str, port: int, context: ssl.SSLContext | None) -> int:
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            lambda: _Connection(self), host, port, ssl=context, reuse_address=True
        )
        return int(self._listener.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        for connection in list(self.connections):
            connection._close(NO_ERROR_CODE)
        if self._listener is not None:
            await self._listener.wait_closed()
