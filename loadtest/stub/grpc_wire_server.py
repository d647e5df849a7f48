"""The stub's gRPC side: Triton's GRPCInferenceService over a lean HTTP/2 server end.

Why not grpc.aio: serving one call in Python through grpc.aio costs ~200 µs of CPU, so the stub
answered 4.5-5k calls/s, less than the wire client sends from one worker; the stub's gRPC rows
then measured the stub, not the client (docs/grpc-load-path.md). Here `ModelInfer` is answered
in `data_received` from bytes built once per model, all the answers of one read in one write,
which is what the stub's HTTP side does too.

The HTTP/2 is wire/http2.py, shared with the wire client (wire/grpc_wire.py), here as
the server end, for any gRPC client (grpcio's, tritonclient's, the wire client): the client's
preface; SETTINGS (answered; the client's window and frame-size settings applied to answers);
PING (answered); flow control both ways (answers wait for the client's windows; the server grants
itself the largest windows and tops the connection's up); HEADERS with CONTINUATION and padding,
decoded by `hpack` through the cached `HeaderBlocks`; RST_STREAM (that call is dropped, a
delayed answer too); GOAWAY (closed once idle). Answers are headers, the message and trailers,
or trailers alone for an error, with header blocks of never-indexed literals (no encoder state).

Methods: `ModelInfer` (the stub's Behaviour: a delay, Triton's "timeout" parameter), the other
unary methods through the same servicer as grpc_server.py, decoded and encoded with
tritonclient's protobufs, and the streaming `ModelStreamInfer` (grpc_wire_stream.py: each
request's tokens as they fall due, its answers written as flow control allows, trailers once the
client has closed its side and every answer is out); an unknown method gets UNIMPLEMENTED. With a
TokenGate every call without the token is UNAUTHENTICATED, as the grpc.aio side's interceptor
does.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, cast
from urllib.parse import quote

from google.protobuf.message import DecodeError, Message
from hpack import Encoder
from tritonclient.grpc import service_pb2 as pb

from loadtest.core.units import us_to_s
from loadtest.stub.access import TokenGate
from loadtest.stub.catalog import TIMEOUT_EXPIRED, Behaviour, Catalog
from loadtest.stub.grpc_server import Servicer
from loadtest.stub.grpc_wire_stream import StreamCall, StreamMessages
from loadtest.wire.grpc_wire import (
    INTERNAL,
    UNAUTHENTICATED,
    UNAVAILABLE,
    UNIMPLEMENTED,
    framed,
)
from loadtest.wire.http2 import (
    DATA,
    END_HEADERS,
    END_STREAM,
    FLOW_CONTROL_ERROR_CODE,
    GOAWAY,
    GRANT_LARGEST_CONNECTION_WINDOW,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_WINDOW,
    NO_ERROR_CODE,
    PREFACE,
    PROTOCOL_ERROR_CODE,
    RST_STREAM,
    Http2Connection,
    frame,
    settings_frame,
    unpadded,
)

SERVICE = "/inference.GRPCInferenceService/"
STREAM_METHOD = "ModelStreamInfer"
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
# grpc-message is percent-encoded: every byte outside printable ASCII, and "%" itself.
_MESSAGE_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def _block(fields: list[tuple[str, str]]) -> bytes:
    """A header block of never-indexed literals: it changes no compression state, so blocks
    can be built once and sent as they are."""
    return bytes(Encoder().encode([(name, value, True) for name, value in fields], huffman=True))


RESPONSE_BLOCK = _block([(":status", "200"), ("content-type", "application/grpc")])
OK_TRAILERS = _block([("grpc-status", "0")])
# Trailers-only OK: a streaming call that ended without a single answer.
OK_ONLY = _block([(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "0")])


def _error_block(code: int, details: str, headers_sent: bool = False) -> bytes:
    """Trailers-only: the whole answer to a call that failed; or, after a streaming call's
    response headers, its trailers."""
    head = [] if headers_sent else [(":status", "200"), ("content-type", "application/grpc")]
    return _block(
        [
            *head,
            ("grpc-status", str(code)),
            ("grpc-message", quote(details, safe=_MESSAGE_SAFE)),
        ]
    )


class _Call:
    """One incoming stream: what it asked for, and its answer while flow control holds it."""

    __slots__ = (
        "body",
        "half_closed",
        "handle",
        "headers_sent",
        "method",
        "rest",
        "stream",
        "trailers",
        "window",
    )

    def __init__(self, method: str, window: int) -> None:
        self.method = method  # "ModelInfer", or a name in _UNARY
        self.body = bytearray()
        self.half_closed = False  # the client has sent all of its request
        self.window = window  # what the client lets this stream's answer send
        self.rest = memoryview(b"")  # answer bytes still to write
        self.trailers = b""  # written after `rest`
        self.handle: asyncio.TimerHandle | asyncio.Task[None] | None = None  # a later answer
        self.stream: StreamCall | None = None  # a ModelStreamInfer call's requests and answers
        self.headers_sent = False  # a streaming answer's response headers are out


class _GrpcServerConnection(Http2Connection[_Call]):
    """One client connection: answers its calls, one write per read (http2.py keeps the frames,
    windows and header blocks)."""

    DATA_ENDS_STREAM = False  # trailers follow an answer's message

    def __init__(self, server: WireGrpcServer) -> None:
        super().__init__()
        self.server = server
        self.preface_seen = False
        self.going_away = False
        self.reading = False  # inside data_received: what is written goes out at its end

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections.add(self)
        self.transport.write(
            settings_frame(((INITIAL_WINDOW_SIZE, MAX_WINDOW),)) + GRANT_LARGEST_CONNECTION_WINDOW
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        for call in self.streams.values():
            if call.handle is not None:
                call.handle.cancel()
            if call.stream is not None:
                call.stream.cancel()
        self.streams.clear()

    def data_received(self, data: bytes) -> None:
        self.reading = True
        try:
            super().data_received(data)
        finally:
            self.reading = False

    def close(self, code: int) -> None:
        """GOAWAY with this error code, and the socket closed."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(GOAWAY, 0, 0, bytes(4) + code.to_bytes(4, "big")))
            self.transport.close()

    # --- frames in (http2.Http2Connection's hooks)
    def _preface(self, buffer: bytes) -> int:
        if self.preface_seen:
            return 0
        if not (buffer.startswith(PREFACE) or PREFACE.startswith(buffer)):
            self.close(PROTOCOL_ERROR_CODE)  # not HTTP/2
            return -1
        if len(buffer) < len(PREFACE):
            self.pending = buffer
            return -1
        self.preface_seen = True
        return len(PREFACE)

    def _data(self, stream_id: int, flags: int, payload: bytes) -> None:
        call = self.streams.get(stream_id)
        if call is None:
            return
        if call.stream is not None:
            problem = call.stream.data(unpadded(payload, flags))
            if problem:
                call.stream.cancel()
                self._fail(stream_id, INTERNAL, problem)
            elif flags & END_STREAM:
                call.half_closed = True
                call.stream.half_close()
            return
        call.body += unpadded(payload, flags)
        if flags & END_STREAM:
            self._dispatch(stream_id, call)

    def _stream_window_overflow(self, stream_id: int) -> None:
        self.out.append(frame(RST_STREAM, 0, stream_id, FLOW_CONTROL_ERROR_CODE.to_bytes(4, "big")))
        self._forget(stream_id)

    def _reset_by_peer(self, stream_id: int, code: int) -> None:
        self._forget(stream_id)

    def _goaway(self, last_stream_id: int) -> None:
        self.going_away = True
        self._close_when_idle()

    def _malformed(self, reason: str) -> None:
        self.close(PROTOCOL_ERROR_CODE)

    def _headers(self, stream_id: int, flags: int, fields: list[tuple[bytes, bytes]]) -> None:
        if self.going_away:
            return  # no new calls after the client's GOAWAY
        known = self.streams.get(stream_id)
        if known is not None:  # trailers from the client (gRPC's send none): the request ends
            if flags & END_STREAM and known.stream is not None:
                known.half_closed = True
                known.stream.half_close()
            elif flags & END_STREAM:
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
        self.streams[stream_id] = call
        # Refused before its message is read, as grpc.aio's interceptor and method lookup do; a
        # streaming method (ModelStreamInfer) ends here too, so its client is not left waiting.
        gate = self.server.gate
        if gate is not None and not gate.admits(authorization):
            self._fail(stream_id, UNAUTHENTICATED, "missing or wrong token")
        elif method == STREAM_METHOD:
            call.stream = StreamCall(
                self.server.servicer.catalog,
                self.server.behaviour,
                self.server.stream_messages,
                lambda data: self._stream_out(stream_id, data),
                lambda: self._stream_finished(stream_id),
            )
            if call.half_closed:
                call.stream.half_close()
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
        self.flush()

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
                us_to_s(timeout_us), self._later_failure, stream_id, UNAVAILABLE, TIMEOUT_EXPIRED
            )
        else:
            call.handle = loop.call_later(behaviour.hold_s(), self._later_answer, stream_id, answer)

    def _later_answer(self, stream_id: int, message: bytes) -> None:
        self._answer(stream_id, message)
        self.flush()

    def _later_failure(self, stream_id: int, code: int, details: str) -> None:
        self._fail(stream_id, code, details)
        self.flush()

    # --- a streaming call's answers out
    def _stream_out(self, stream_id: int, data: bytes) -> None:
        """Answer messages of a ModelStreamInfer call: the response headers before the first,
        then DATA as the windows allow (the rest, in order, when WINDOW_UPDATE does). Written at
        the end of the read, or now when a token's timer wrote them."""
        call = self.streams.get(stream_id)
        if call is None:
            return
        if not call.headers_sent:
            call.headers_sent = True
            self.out.append(frame(HEADERS, END_HEADERS, stream_id, RESPONSE_BLOCK))
        self._more_data(stream_id, call, data)
        if not self.reading:
            self.flush()

    def _stream_finished(self, stream_id: int) -> None:
        """Every answer is out (or waits for a window) and the client is done sending: the
        trailers, after the last byte of the answers."""
        call = self.streams.get(stream_id)
        if call is None:
            return
        if not call.headers_sent:  # no answer at all: trailers-only
            self.out.append(frame(HEADERS, END_HEADERS | END_STREAM, stream_id, OK_ONLY))
            self._done(stream_id)
        elif call.rest:
            call.trailers = OK_TRAILERS  # written by `_all_written` once the rest is out
        else:
            self.out.append(frame(HEADERS, END_HEADERS | END_STREAM, stream_id, OK_TRAILERS))
            self._done(stream_id)
        if not self.reading:
            self.flush()

    # --- answers out
    def _answer(self, stream_id: int, message: bytes) -> None:
        call = self.streams.get(stream_id)
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
        call = self.streams.get(stream_id)
        if call is None:
            return
        call.handle = None
        block = _error_block(code, details, call.headers_sent)
        self.out.append(frame(HEADERS, END_HEADERS | END_STREAM, stream_id, block))
        self._done(stream_id)

    def _all_written(self, stream_id: int, call: _Call) -> None:
        if not call.trailers:
            return  # a streaming call's answers so far are out; more may follow
        self.out.append(frame(HEADERS, END_HEADERS | END_STREAM, stream_id, call.trailers))
        self._done(stream_id)

    def _done(self, stream_id: int) -> None:
        """The answer is written in full. A client still sending (it had not half-closed) is
        told to stop, as gRPC servers do."""
        call = self.streams.pop(stream_id)
        if call.handle is not None:
            call.handle.cancel()
        if call.stream is not None:
            call.stream.cancel()
        if not call.half_closed:
            self.out.append(frame(RST_STREAM, 0, stream_id, NO_ERROR_CODE.to_bytes(4, "big")))
        if self.going_away:
            self._close_when_idle()

    def _forget(self, stream_id: int) -> None:
        call = self.streams.pop(stream_id, None)
        if call is not None and call.handle is not None:
            call.handle.cancel()
        if call is not None and call.stream is not None:
            call.stream.cancel()
        if self.going_away:
            self._close_when_idle()

    def _close_when_idle(self) -> None:
        if not self.streams and self.transport is not None and not self.transport.is_closing():
            self.flush()
            self.transport.close()


class WireGrpcServer:
    """Serves the stub's gRPC side on one listener; `stop()` ends every connection."""

    def __init__(
        self, catalog: Catalog, behaviour: Behaviour, gate: TokenGate | None = None
    ) -> None:
        self.servicer = Servicer(catalog, behaviour)
        self.behaviour = behaviour
        self.gate = gate
        self.connections: set[_GrpcServerConnection] = set()
        self.held_answers = 0  # answers that waited for the client's flow-control windows
        self.stream_messages = StreamMessages()
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
            lambda: _GrpcServerConnection(self), host, port, ssl=context, reuse_address=True
        )
        return int(self._listener.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        for connection in list(self.connections):
            connection.close(NO_ERROR_CODE)
        if self._listener is not None:
            await self._listener.wait_closed()
