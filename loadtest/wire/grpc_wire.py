"""A lean gRPC client for the inference path: unary and streaming calls on one HTTP/2
connection, no tasks.

Why not grpc.aio here (docs/grpc-load-path.md has the profile): each grpc.aio call builds a call
object and a task of its own, and its answer comes from gRPC's poller thread through the event
loop's self-pipe, so a send leaves one loop turn after the issuer asked for it and costs about
100 µs of CPU even in a closed loop. This client writes the request on the event loop's own
socket at the moment it is asked (the send is stamped when it is written, not a turn later),
parses answers in `data_received`, and completes each call with a plain callback: about a third
of grpc.aio's CPU per request against the same Triton (benchmarks/grpc_clients.py).

It speaks the same protocol to the same server endpoint: gRPC over HTTP/2 (RFC 9113), one unary
`ModelInfer` call per query on one connection, as grpc.aio does. What is written by hand is the
small part of HTTP/2 a unary client needs, in http2.py (shared with the stub's gRPC server);
HPACK (header compression, with its stateful decoding table) is the `hpack` library's, the one
python-hyper's h2 uses:

- requests: one HEADERS frame (a header block built once: every field a "never indexed" literal
  or a static-table entry, so it touches no compression state and is reused as is) and the
  message in DATA frames of at most the server's SETTINGS_MAX_FRAME_SIZE;
- flow control both ways: sends wait for the server's connection and stream windows (a stream
  blocked there is written as soon as WINDOW_UPDATE allows); the client grants itself the
  largest windows HTTP/2 allows and tops the connection window up as answers arrive;
- SETTINGS (acknowledged; window, frame-size and concurrent-stream limits applied), PING
  (answered; optionally sent as a keepalive), GOAWAY (streams the server did not take are sent
  again, on a new connection: grpc-core's transparent retry, gRFC A6, but within the call's
  deadline rather than once, see `_retry`; later calls go to a new
  connection), RST_STREAM (the gRPC status gRPC's own clients give for it; REFUSED_STREAM: sent
  again likewise), CONTINUATION; SETTINGS_MAX_HEADER_LIST_SIZE both ways (an
  answer's header list over the client's fails that call only; a call's over the server's is
  not sent);
- compression: `grpc-accept-encoding: identity,deflate,gzip`, gzip and deflate answers decoded,
  requests compressed if asked;
- a call that would exceed the server's SETTINGS_MAX_CONCURRENT_STREAMS, or that comes while
  the connection is being (re)opened, waits in a FIFO; `written()` then runs when it is written.

Streaming calls (`open_call`, what ModelStreamInfer needs: one long-lived stream carrying many
requests and their responses) go on the same connection: each message sent is written at once
within the windows, each response message is handed over whole as the DATA frames bring it, and
`after_read` runs once each network read is parsed, so a reader can report what one read brought
together. Such a call has no deadline of its own (its requests keep theirs, outside).

Every unary call has a deadline (`timeout_s` from the call): it is sent as `grpc-timeout`, so
the server gives up too, and a sweep every SWEEP_FRACTION of it (1 ms to 0.5 s, one timer for the
whole client) cancels what is still unanswered past it (RST_STREAM CANCEL) and reports
DEADLINE_EXCEEDED, as gRPC's clients do. The answer to a call is its gRPC status code, the
status message, and, when asked, the response message itself.

tests/test_grpc_wire.py and tests/test_grpc_wire_stream.py check all of this against an
independent HTTP/2 server (python-hyper's h2, whose state machine rejects any flow-control,
frame-size or stream-limit violation); tests/test_proxies.py runs it through nginx.
"""

from __future__ import annotations

import asyncio
import math
import os
import ssl as ssl_module
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import cast
from urllib.parse import unquote

from hpack import Encoder

from loadtest.wire.http2 import (
    CANCEL_CODE,
    CONTINUATION,
    DATA,
    ENABLE_PUSH,
    END_HEADERS,
    END_STREAM,
    FLOW_CONTROL_ERROR_CODE,
    GRANT_LARGEST_CONNECTION_WINDOW,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_HEADER_LIST_SIZE,
    MAX_STREAM_ID,
    MAX_WINDOW,
    PING,
    PREFACE,
    REFUSED_STREAM_CODE,
    RST_STREAM,
    Http2Connection,
    frame,
    header_list_size,
    settings_frame,
    unpadded,
)

# On done: (gRPC status code, status message, response message or b"").
Answer = Callable[[int, str, bytes], None]
Written = Callable[[], None]
# A streaming call's answer: each response message as it arrives, then the call's status.
OnMessage = Callable[[bytes], None]
Ended = Callable[[int, str], None]

OK = 0
CANCELLED = 1
UNKNOWN = 2
DEADLINE_EXCEEDED = 4
PERMISSION_DENIED = 7
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14
UNAUTHENTICATED = 16

SWEEP_FRACTION = 0.125  # the deadline sweep runs every 1/8 of the timeout ...
MIN_SWEEP_S = 0.001  # ... but at most once a millisecond
MAX_SWEEP_S = 0.5  # ... and at least twice a second

# Answers may come compressed with these (grpc-accept-encoding, as grpc-core advertises them);
# requests are compressed with one of them when asked.
ACCEPT_ENCODING = "identity,deflate,gzip"
COMPRESSIONS = ("gzip", "deflate")
_WBITS = {b"gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}  # gRPC's deflate is zlib
MAX_MESSAGE = 2**31 - 1  # the largest message gRPC carries: a compressed answer may not exceed it

# How many times a call the server never processed is sent again after a refusal that came
# with no progress: a REFUSED_STREAM, or a GOAWAY from a connection that processed nothing.
# A GOAWAY from a connection that did process calls (a proxy rotating it every N requests) is
# not counted: however large the burst, each new connection takes N more, so every call gets
# through; the call's deadline bounds those re-sends.
MAX_TRANSPARENT_RESENDS = 5

# What gRPC's clients report for a stream the server reset, by HTTP/2 error code (the rest:
# INTERNAL; grpc/doc/http-grpc-status-mapping).
_RESET_TO_GRPC = {
    REFUSED_STREAM_CODE: UNAVAILABLE,
    CANCEL_CODE: CANCELLED,
    0xB: RESOURCE_EXHAUSTED,  # ENHANCE_YOUR_CALM
    0xC: PERMISSION_DENIED,  # INADEQUATE_SECURITY
}

# What gRPC's clients report for an HTTP status that is not 200 (grpc/doc/http-grpc-status-mapping).
_HTTP_TO_GRPC = {
    400: INTERNAL,
    401: UNAUTHENTICATED,
    403: PERMISSION_DENIED,
    404: UNIMPLEMENTED,
    429: UNAVAILABLE,
    502: UNAVAILABLE,
    503: UNAVAILABLE,
    504: UNAVAILABLE,
}


def grpc_timeout(timeout_s: float) -> str:
    """The `grpc-timeout` header value: at most 8 digits and a unit, rounded up."""
    for unit, per_second in (("m", 1_000), ("S", 1), ("M", 1 / 60), ("H", 1 / 3600)):
        value = -int(-timeout_s * per_second // 1)
        if value < 100_000_000:
            return f"{max(1, value)}{unit}"
    return "99999999H"


def _sweep_interval(timeout_s: float) -> float:
    return min(MAX_SWEEP_S, max(MIN_SWEEP_S, SWEEP_FRACTION * timeout_s))


def framed(message: bytes, compression: str | None = None) -> bytes:
    """A gRPC length-prefixed message, built once per sample: as it is, or compressed (its
    flag 1) with `compression` ("gzip" or "deflate", the client's own `compression`)."""
    if compression is None:
        return b"\x00" + len(message).to_bytes(4, "big") + message
    if compression == "gzip":
        packed = zlib.compress(message, wbits=16 + zlib.MAX_WBITS)
    elif compression == "deflate":
        packed = zlib.compress(message)
    else:
        raise ValueError(f"gRPC compression {compression!r}: use one of {', '.join(COMPRESSIONS)}")
    return b"\x01" + len(packed).to_bytes(4, "big") + packed


def _tell(on_done: Answer, code: int, details: str, message: bytes) -> None:
    """Complete a call. A callback that raises is reported to the loop's exception handler and
    goes no further: it must not break the connection, the other calls or the deadline sweep."""
    try:
        on_done(code, details, message)
    except Exception as exc:  # whatever the caller's callback raised
        _report(exc, "a gRPC call's completion callback raised")


def _report(exc: Exception, message: str) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop running (closed from outside one): the caller sees it
        raise exc from None
    loop.call_exception_handler({"message": message, "exception": exc})


class _Stream:
    """One call in flight: who to tell, by when, and what has come back so far."""

    __slots__ = (
        "block",
        "body",
        "call",
        "chunks",
        "deadline",
        "details",
        "encoding",
        "http_status",
        "inbox",
        "keep",
        "on_done",
        "open_ended",
        "resends",
        "rest",
        "status",
        "window",
    )

    def __init__(
        self,
        block: bytes,
        body: bytes,
        on_done: Answer,
        deadline: float,
        keep: bool,
        resends: int,
        window: int,
        call: StreamingCall | None = None,
    ) -> None:
        self.block = block  # the request, kept for transparent retries
        self.body = body
        self.on_done = on_done
        self.deadline = deadline
        self.keep = keep
        # times sent again after a refusal with no progress (MAX_TRANSPARENT_RESENDS at most)
        self.resends = resends
        self.encoding = b""  # grpc-encoding of the answer
        self.chunks: list[bytes] = []
        self.status = -1  # grpc-status, once a header block has carried it
        self.details = ""
        self.http_status = 0
        self.window = window  # what the server lets this stream send
        self.rest = memoryview(b"")  # request bytes still to write (flow control)
        # A streaming call (`GrpcWire.open_call`): its messages, each handed over as it is
        # whole; `open_ended` until the client closes its side.
        self.call = call
        self.open_ended = call is not None
        self.inbox = b""  # the start of a response message whose rest has not come yet


class _GrpcClientConnection(Http2Connection[_Stream]):
    """One HTTP/2 connection: writes calls as streams, reads their answers (http2.py keeps the
    frames, windows and header blocks)."""

    def __init__(self, client: GrpcWire) -> None:
        super().__init__()
        self.client = client
        self.next_id = 1
        self.max_streams = MAX_STREAM_ID
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.going_away = False  # GOAWAY seen, or the connection is gone: no new streams
        self.peer_max_header_list = MAX_WINDOW  # the server's SETTINGS_MAX_HEADER_LIST_SIZE
        self.ping_due: bytes | None = None  # the keepalive PING not yet acknowledged

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(
            PREFACE
            + settings_frame(
                (
                    (ENABLE_PUSH, 0),
                    (INITIAL_WINDOW_SIZE, MAX_WINDOW),
                    (MAX_HEADER_LIST_SIZE, self.max_header_list),
                )
            )
            + GRANT_LARGEST_CONNECTION_WINDOW
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.going_away = True
        self.ping_due = None
        reason = f"connection lost: {exc}" if exc else "connection closed by the server"
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
        self.fail_all(UNAVAILABLE, reason)
        self.client.connection_gone(self, lost=True)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        after_read = self.client.after_read
        if after_read is not None:
            try:
                after_read()
            except Exception as exc:  # the caller's callback
                _report(exc, "a gRPC client's after-read callback raised")

    # --- frames in (http2.Http2Connection's hooks)
    def _data(self, stream_id: int, flags: int, payload: bytes) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            if stream.call is not None:
                self._messages_in(stream_id, stream, unpadded(payload, flags))
            elif stream.keep:
                stream.chunks.append(unpadded(payload, flags))
            if flags & END_STREAM and stream_id in self.streams:
                self._end(stream_id)

    def _messages_in(self, stream_id: int, stream: _Stream, data: bytes) -> None:
        """A streaming call's DATA: each whole length-prefixed message to its `on_message`, in
        order; the start of one cut across frames waits in `inbox` for the rest."""
        if stream.inbox:
            data = stream.inbox + data
        size, at = len(data), 0
        assert stream.call is not None
        on_message = stream.call.on_message
        while size - at >= 5:
            end = at + 5 + int.from_bytes(data[at + 1 : at + 5], "big")
            if end > size:
                break
            if data[at] == 0:
                message = data[at + 5 : end]
            else:
                message, problem = _unpacked(data[at : at + 1], data[at + 5 : end], stream.encoding)
                if problem:
                    self._cancel(stream_id, INTERNAL, problem)
                    return
            at = end
            try:
                on_message(message)
            except Exception as exc:  # the caller's callback: the call goes on
                _report(exc, "a gRPC streaming call's message callback raised")
        stream.inbox = data[at:] if at < size else b""

    def _headers(self, stream_id: int, flags: int, fields: list[tuple[bytes, bytes]]) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if stream.call is not None:
            stream.call.replay = None  # the server took the call: never sent again
        for name, value in fields:
            if name == b"grpc-status":
                # Not a number: this call fails UNKNOWN, as gRPC's clients fail it; the
                # connection and the other calls on it are fine.
                if value.isdigit():
                    stream.status = int(value)
                else:
                    stream.status, stream.details = UNKNOWN, "a grpc-status that is not a number"
            elif name == b"grpc-message":
                stream.details = unquote(value.decode("utf-8", "replace"))
            elif name == b":status":
                stream.http_status = int(value) if value.isdigit() else 0
            elif name == b"grpc-encoding":
                stream.encoding = value
        if flags & END_STREAM:
            self._end(stream_id)

    def _header_list_too_large(self, stream_id: int, flags: int, size: int) -> None:
        """Fails that call only (RESOURCE_EXHAUSTED, as grpc-core): the block was decoded, so
        the connection's HPACK table is in step and the other calls carry on."""
        if stream_id not in self.streams:
            return
        if not flags & END_STREAM and self.transport is not None:
            self.transport.write(frame(RST_STREAM, 0, stream_id, CANCEL_CODE.to_bytes(4, "big")))
        self._finish(
            stream_id,
            RESOURCE_EXHAUSTED,
            f"the server's header list is {size} bytes, over the {self.max_header_list} "
            "this client accepts (SETTINGS_MAX_HEADER_LIST_SIZE)",
        )

    def _setting(self, key: int, value: int) -> None:
        if key == MAX_CONCURRENT_STREAMS:
            self.max_streams = value
        elif key == MAX_HEADER_LIST_SIZE:
            self.peer_max_header_list = value

    def _settings_received(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)
        self.client.slots_freed()

    def _stream_window_overflow(self, stream_id: int) -> None:
        self._reset(stream_id, "WINDOW_UPDATE past the largest window")

    def _reset_by_peer(self, stream_id: int, code: int) -> None:
        details = f"stream reset by the server (HTTP/2 error {code})"
        if code == REFUSED_STREAM_CODE:
            self._retry([stream_id], details)  # never processed: sent again
            return
        self._finish(stream_id, _RESET_TO_GRPC.get(code, INTERNAL), details)

    def _goaway(self, last_stream_id: int) -> None:
        self.going_away = True
        # The streams above last_stream_id were never processed: sent again (gRFC A6). A
        # connection that processed some (last_stream_id > 0) made progress: not counted.
        self._retry(
            [s for s in self.streams if s > last_stream_id],
            "the server is going away (GOAWAY)",
            counted=last_stream_id == 0,
        )
        self.client.connection_gone(self)
        self._close_when_idle()

    def _retry(self, stream_ids: list[int], details: str, counted: bool = True) -> None:
        """Streams the server says it never processed (REFUSED_STREAM, above a GOAWAY's
        last-stream-id) go back to the front of the client's queue, as grpc-core's transparent
        retry sends them (gRFC A6): on a new stream, here or on a new connection.

        grpc-core sends such a call again exactly once (retry_filter_legacy_call_data.cc: "If
        sent on wire but not seen by server, retry exactly once"), so behind nginx with a low
        keepalive_requests a burst larger than one connection takes fails there even with
        grpcio: the re-sent calls are refused again by the next rotating connection. Each
        refusal is the server's word that nothing was processed, so re-sending is safe. This
        client sends again within the call's deadline, and up to MAX_TRANSPARENT_RESENDS
        times for `counted` refusals (those with no progress: a server refusing everything
        still ends each call), then fails UNAVAILABLE. A GOAWAY from a connection that took
        calls is not counted: behind nginx's keepalive_requests a client stall's burst of any
        size gets through, N calls a connection."""
        again = []
        now = time.monotonic()
        for stream_id in stream_ids:
            stream = self.streams.get(stream_id)
            if stream is None:
                continue
            if stream.deadline < now:
                self._finish(stream_id, DEADLINE_EXCEEDED, "deadline exceeded (client)")
            elif stream.call is not None and stream.call.replay is None:
                # A streaming call the server answered, or whose messages outgrew the replay
                # buffer, cannot be sent again: it fails, as grpc-core fails a call it cannot
                # replay.
                self._finish(stream_id, UNAVAILABLE, details)
            elif counted and stream.resends >= MAX_TRANSPARENT_RESENDS:
                self._finish(
                    stream_id,
                    UNAVAILABLE,
                    f"{details}; refused {stream.resends + 1} times with nothing processed",
                )
            else:
                del self.streams[stream_id]
                if counted:
                    stream.resends += 1
                if stream.call is not None:
                    stream.call.rewind()
                again.append(stream)
        if again:
            self.client.send_again(again)

    def _malformed(self, reason: str) -> None:
        self._broken(f"malformed HTTP/2 from the server: {reason}")

    def _end(self, stream_id: int) -> None:
        """The server ended the stream: the call's status is what its headers said."""
        stream = self.streams[stream_id]
        if (stream.rest or stream.open_ended) and self.transport is not None:
            # Answered before flow control let the whole request out: the rest is dropped, so
            # the stream is reset, or the server would hold it open (half-closed) and count it
            # against its SETTINGS_MAX_CONCURRENT_STREAMS for the connection's life. (A
            # streaming call the server ended before the client closed its side likewise.)
            self.transport.write(frame(RST_STREAM, 0, stream_id, CANCEL_CODE.to_bytes(4, "big")))
        if stream.http_status != 200:
            code = _HTTP_TO_GRPC.get(stream.http_status, UNKNOWN)
            self._finish(stream_id, code, f"HTTP status {stream.http_status} from the server")
        elif stream.status < 0:
            self._finish(stream_id, UNKNOWN, "the server ended the call without a grpc-status")
        elif stream.inbox and stream.status == OK:
            self._finish(stream_id, INTERNAL, "the server ended the call inside a message")
        else:
            self._finish(stream_id, stream.status, stream.details)

    def _finish(self, stream_id: int, code: int, details: str) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        message = b""
        if stream.keep and code == OK:
            message, problem = _message(b"".join(stream.chunks), stream.encoding)
            if problem:
                code, details = INTERNAL, problem
        _tell(stream.on_done, code, details, message)
        self.client.slots_freed()
        if self.going_away:
            self._close_when_idle()

    # --- calls out
    def has_room(self) -> bool:
        return (
            not self.going_away
            and self.ready.done()
            and len(self.streams) < self.max_streams
            and self.next_id <= MAX_STREAM_ID
        )

    def open_stream(
        self,
        block: bytes,
        body: bytes,
        on_done: Answer,
        deadline: float,
        keep: bool,
        resends: int = 0,
        call: StreamingCall | None = None,
    ) -> None:
        """Write one call: its header block, then as much of its message as the windows allow
        (a streaming `call`: then the messages sent to it while it waited)."""
        assert self.transport is not None
        if self.peer_max_header_list < self.client.largest_header_list:
            size = header_list_size(self.client.fields_of[block])
            if size > self.peer_max_header_list:
                _tell(
                    on_done,
                    RESOURCE_EXHAUSTED,
                    f"the call's header list is {size} bytes, over the "
                    f"{self.peer_max_header_list} the server accepts",
                    b"",
                )
                return
        stream_id = self.next_id
        self.next_id += 2
        stream = _Stream(block, body, on_done, deadline, keep, resends, self.initial_window, call)
        self.streams[stream_id] = stream
        out = self.out
        if len(block) <= self.max_frame:
            out.append(frame(HEADERS, END_HEADERS, stream_id, block))
        else:
            out.extend(self._header_frames(stream_id, block))
        size = len(body)
        if call is not None:
            call.attach(self, stream_id)
        elif size <= self.max_frame and size <= self.send_window and size <= stream.window:
            out.append(frame(DATA, END_STREAM, stream_id, body))  # the usual case: all at once
            self.send_window -= size
            stream.window -= size
        else:
            stream.rest = memoryview(body)
            self._data_frames(stream_id, stream)
            if stream.rest:
                self.blocked.append(stream_id)
        self.flush()
        if self.next_id > MAX_STREAM_ID:
            # Stream ids are never reused: this connection takes no new calls (it closes once
            # idle), and the next call opens another instead of waiting here until its deadline.
            self.going_away = True
            self.client.connection_gone(self)

    # --- a streaming call's messages out
    def send_message(self, stream_id: int, message: bytes) -> None:
        """One more framed message on a streaming call, written now as far as the windows allow
        (the rest when WINDOW_UPDATE does, before any later message)."""
        stream = self.streams.get(stream_id)
        if stream is None or not stream.open_ended:
            return  # the call is over, or its side closed: nothing more goes out
        self._more_data(stream_id, stream, message)
        self.flush()

    def close_sending(self, stream_id: int) -> None:
        """The client's side of a streaming call ends: END_STREAM on its last DATA frame (an
        empty one when nothing is waiting for a window)."""
        stream = self.streams.get(stream_id)
        if stream is None or not stream.open_ended:
            return
        stream.open_ended = False
        if not stream.rest:
            self.out.append(frame(DATA, END_STREAM, stream_id))
            self.flush()

    def cancel_stream(self, stream_id: int) -> None:
        """The client gives the call up: RST_STREAM CANCEL, which the server sees as cancelled
        (Triton cancels a cancelled stream's requests), and the call ends CANCELLED."""
        self._cancel(stream_id, CANCELLED, "cancelled by the client")

    def _cancel(self, stream_id: int, code: int, details: str) -> None:
        if stream_id not in self.streams:
            return
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(RST_STREAM, 0, stream_id, CANCEL_CODE.to_bytes(4, "big")))
        self._finish(stream_id, code, details)

    def _data_ends(self, stream: _Stream) -> bool:
        return not stream.open_ended

    def _header_frames(self, stream_id: int, block: bytes) -> list[bytes]:
        """A header block larger than the server's frame size: HEADERS, then CONTINUATIONs."""
        first, rest = block[: self.max_frame], block[self.max_frame :]
        frames = [frame(HEADERS, 0, stream_id, first)]
        while rest:
            piece, rest = rest[: self.max_frame], rest[self.max_frame :]
            frames.append(frame(CONTINUATION, 0 if rest else END_HEADERS, stream_id, piece))
        return frames

    def expire(self, now: float) -> None:
        """Cancel the calls past their deadline. Every stream is looked at, not only the oldest:
        a call's own `timeout_s` can end before those of calls opened earlier."""
        expired = [stream_id for stream_id, stream in self.streams.items() if stream.deadline < now]
        if not expired:
            return
        if self.transport is not None and not self.transport.is_closing():
            code = CANCEL_CODE.to_bytes(4, "big")
            self.transport.write(b"".join(frame(RST_STREAM, 0, s, code) for s in expired))
        for stream_id in expired:
            self._finish(stream_id, DEADLINE_EXCEEDED, "deadline exceeded (client)")

    def _reset(self, stream_id: int, reason: str) -> None:
        """A stream error: reset that stream (FLOW_CONTROL_ERROR) and fail its call only."""
        if self.transport is not None and not self.transport.is_closing():
            code = FLOW_CONTROL_ERROR_CODE.to_bytes(4, "big")
            self.transport.write(frame(RST_STREAM, 0, stream_id, code))
        self._finish(stream_id, INTERNAL, reason)

    def fail_all(self, code: int, details: str) -> None:
        for stream_id in list(self.streams):
            self._finish(stream_id, code, details)

    def _broken(self, reason: str) -> None:
        self.going_away = True
        self.fail_all(INTERNAL, reason)
        if self.transport is not None:
            self.transport.close()
        self.client.connection_gone(self)

    def _close_when_idle(self) -> None:
        if not self.streams and self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # --- keepalive
    def ping(self, timeout_s: float) -> None:
        """A keepalive PING; unacknowledged after `timeout_s`, the connection is dead."""
        if self.ping_due is not None or self.transport is None or self.transport.is_closing():
            return
        self.ping_due = payload = os.urandom(8)
        self.transport.write(frame(PING, 0, 0, payload))
        asyncio.get_running_loop().call_later(timeout_s, self._ping_expired, payload, timeout_s)

    def _ping_acknowledged(self, payload: bytes) -> None:
        if payload == self.ping_due:
            self.ping_due = None

    def _ping_expired(self, payload: bytes, timeout_s: float) -> None:
        if self.ping_due != payload or self.transport is None:
            return
        # Its calls fail now, and the next calls go to a new connection; abort, not close:
        # nothing buffered for a dead peer is worth waiting for.
        self.going_away = True
        self.fail_all(
            UNAVAILABLE,
            f"keepalive PING unanswered for {timeout_s:g} s: the connection is dead",
        )
        self.transport.abort()
        self.client.connection_gone(self)


def _message(body: bytes, encoding: bytes = b"") -> tuple[bytes, str]:
    """The one message of a unary answer's body (decompressed if it came compressed), or what
    is wrong with the body."""
    if len(body) < 5:
        return b"", "the server answered OK without a response message"
    size = int.from_bytes(body[1:5], "big")
    if len(body) != 5 + size:
        return b"", f"the response message is {len(body) - 5} bytes, its prefix says {size}"
    if body[0] == 0:
        return body[5:], ""
    return _unpacked(body[:1], body[5:], encoding)


def _unpacked(flag: bytes, packed: bytes, encoding: bytes) -> tuple[bytes, str]:
    """A message whose compressed-flag byte is not 0, decompressed by its `grpc-encoding`."""
    wbits = _WBITS.get(encoding)
    if flag != b"\x01" or wbits is None:
        said = encoding.decode("ascii", "replace") or "none"
        return b"", f"a compressed response message whose grpc-encoding is {said}"
    unpacker = zlib.decompressobj(wbits)
    try:
        message = unpacker.decompress(packed, MAX_MESSAGE)
    except zlib.error as exc:
        return b"", f"a {encoding.decode()} response message that does not decompress: {exc}"
    if unpacker.unconsumed_tail or not unpacker.eof:
        return b"", f"a {encoding.decode()} response message cut short or over {MAX_MESSAGE} bytes"
    return message, ""


class GrpcWire:
    """Unary calls to one method at host:port; `call` never blocks and never raises.

    Calls go on one HTTP/2 connection (as grpc.aio's channel does). When it is lost or the server
    sends GOAWAY, the next call opens another; calls made meanwhile wait, in order. Calls the
    server never processed (REFUSED_STREAM, above a GOAWAY's last-stream-id) are sent again,
    as grpc-core does but within their deadline, which stays the first send's (refusals with
    no progress: MAX_TRANSPARENT_RESENDS at most; `transparent_retries` counts every re-send).

    `compression` ("gzip", "deflate"): the requests say `grpc-encoding` (their messages must be
    `framed(message, compression)`). `keepalive_s`: a PING every so often while calls are in
    flight; one unanswered for `keepalive_timeout_s` fails the connection's calls (UNAVAILABLE)
    and the next calls open a new one (grpc-core's keepalive_time / keepalive_timeout).
    """

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        timeout_s: float,
        metadata: Sequence[tuple[str, str]] = (),
        ssl: ssl_module.SSLContext | None = None,
        compression: str | None = None,
        keepalive_s: float = 0.0,
        keepalive_timeout_s: float = 20.0,
    ) -> None:
        if compression is not None and compression not in COMPRESSIONS:
            raise ValueError(f"gRPC compression {compression!r}: use one of {COMPRESSIONS}")
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.ssl = ssl
        self.compression = compression
        self.keepalive_s = keepalive_s
        self.keepalive_timeout_s = keepalive_timeout_s
        self.sweep_s = _sweep_interval(timeout_s)
        self.waited = 0  # calls that had to wait before they were written
        self.transparent_retries = 0  # calls sent again: the server never processed them
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._fields = [
            (":method", "POST"),
            (":scheme", "https" if ssl is not None else "http"),
            (":path", path),
            (":authority", authority),
            ("te", "trailers"),
            ("content-type", "application/grpc"),
            ("user-agent", "loadtest-grpc-wire"),
            ("grpc-accept-encoding", ACCEPT_ENCODING),
            *([("grpc-encoding", compression)] if compression else []),
            *metadata,
        ]
        self._blocks: dict[float | None, bytes] = {}
        self.fields_of: dict[bytes, list[tuple[bytes, bytes]]] = {}  # each block's fields
        self.largest_header_list = 0  # of the blocks built: a server limit below it is checked
        self.block = self._block(timeout_s)
        self._connection: _GrpcClientConnection | None = None  # where new calls go
        # with it, those still finishing calls
        self._open_connections: set[_GrpcClientConnection] = set()
        self._opening: asyncio.Task[None] | None = None
        # (header block, message, on_done, keep, deadline, written, resends, streaming call),
        # oldest first
        self._waiting: deque[
            tuple[bytes, bytes, Answer, bool, float, Written | None, int, StreamingCall | None]
        ] = deque()
        # Runs after each network read is parsed: a streaming call's reader can report what one
        # read brought together (one clock reading for all of it).
        self.after_read: Callable[[], None] | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._closed = False

    def _block(self, timeout_s: float | None) -> bytes:
        """The header block of a call with this deadline (None: a streaming call, which has
        none). Never-indexed literals: it changes no compression state, so it is built once and
        reused as is (and credentials in it are marked never to be indexed by any
        intermediary)."""
        block = self._blocks.get(timeout_s)
        if block is None:
            deadline = [] if timeout_s is None else [("grpc-timeout", grpc_timeout(timeout_s))]
            fields = [*self._fields, *deadline]
            block = Encoder().encode([(n, v, True) for n, v in fields], huffman=True)
            self._blocks[timeout_s] = block
            raw = [(n.encode(), v.encode()) for n, v in fields]
            self.fields_of[block] = raw
            self.largest_header_list = max(self.largest_header_list, header_list_size(raw))
        return block

    async def connect(self, timeout_s: float) -> None:
        """Open the connection and wait for the server's SETTINGS (raises OSError, TimeoutError)."""
        await asyncio.wait_for(self._open(), timeout_s)
        self._schedule_sweep()
        self._schedule_keepalive()

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        if self.ssl is None:
            _, protocol = await loop.create_connection(
                lambda: _GrpcClientConnection(self), self.host, self.port
            )
        else:
            transport, protocol = await loop.create_connection(
                lambda: _GrpcClientConnection(self),
                self.host,
                self.port,
                ssl=self.ssl,
                server_hostname=self.host,
                ssl_handshake_timeout=max(self.timeout_s, 5.0),
            )
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
                protocol.ready.cancel()  # nobody will await it: no "never retrieved" warning
                transport.close()
                raise ConnectionError("the server did not agree to HTTP/2 (ALPN h2) over TLS")
        self._open_connections.add(protocol)
        try:
            await protocol.ready
        except BaseException:
            # No SETTINGS from the server (timed out, cancelled, closed): the socket goes now,
            # not at close(), or each reconnect that times out would leave one open.
            self._open_connections.discard(protocol)
            if protocol.transport is not None:
                protocol.transport.close()
            raise
        if protocol.going_away:
            # SETTINGS, then GOAWAY or a closed socket at once (a proxy at its connection limit):
            # adopting it would leave the waiting calls with nowhere to go until their deadline.
            self._open_connections.discard(protocol)
            raise ConnectionError("the server closed the connection as it opened it")
        self._connection = protocol
        self.slots_freed()
        self._schedule_keepalive()

    def call(
        self,
        message: bytes,
        on_done: Answer,
        keep: bool = False,
        written: Written | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """Send one framed message (see `framed`); `on_done(code, details, response)` follows.
        `written()` runs if the call had to wait and is written later (not if written at once).
        The deadline is the client's `timeout_s` from now unless `timeout_s` is given."""
        if self._closed:
            _tell(on_done, CANCELLED, "client closed", b"")
            return
        if timeout_s is None:
            timeout_s, block = self.timeout_s, self.block
        else:
            block = self._block(timeout_s)
            self._sweep_at_least_every(_sweep_interval(timeout_s))
        deadline = time.monotonic() + timeout_s
        connection = self._connection
        if not self._waiting and connection is not None and connection.has_room():
            connection.open_stream(block, message, on_done, deadline, keep)
            return
        self.waited += 1
        self._waiting.append((block, message, on_done, keep, deadline, written, 0, None))
        self._reopen_if_needed()

    def open_call(self, on_message: OnMessage, on_done: Ended) -> StreamingCall:
        """A streaming call (client and server streaming, as ModelStreamInfer is) to the
        client's method, with no deadline of its own: `send` messages on it as they come,
        `on_message(message)` gets each response message in order, `on_done(code, details)` the
        end. Opened now when the connection has room, else in turn (its messages wait with it;
        their `written()` runs as they go). Until the server answers its first headers, its
        messages are kept (up to REPLAY_BUFFER bytes, grpc-core's per-call retry buffer): a
        GOAWAY or REFUSED_STREAM that says the server did not take it sends the call again, all
        of its messages, as grpc-core's transparent retry does; after that it fails
        UNAVAILABLE."""
        call = StreamingCall(on_message, on_done)
        if self._closed:
            call.ended(CANCELLED, "client closed", b"")
            return call
        block = self._block(None)
        connection = self._connection
        if not self._waiting and connection is not None and connection.has_room():
            connection.open_stream(block, b"", call.ended, math.inf, False, call=call)
            return call
        self.waited += 1
        self._waiting.append((block, b"", call.ended, False, math.inf, None, 0, call))
        self._reopen_if_needed()
        return call

    async def unary(
        self, message: bytes, keep: bool = False, timeout_s: float | None = None
    ) -> tuple[int, str, bytes]:
        """One call, awaited: (code, details, response message if `keep`)."""
        answer: asyncio.Future[tuple[int, str, bytes]] = asyncio.get_running_loop().create_future()

        def settle(code: int, details: str, response: bytes) -> None:
            if not answer.done():
                answer.set_result((code, details, response))

        self.call(message, settle, keep, None, timeout_s)
        return await answer

    # --- used by the connection
    def slots_freed(self) -> None:
        """A stream ended or limits changed: write waiting calls while there is room."""
        connection = self._connection
        while self._waiting and connection is not None and connection.has_room():
            block, message, on_done, keep, deadline, written, resends, call = (
                self._waiting.popleft()
            )
            if call is not None and call.over:
                continue  # cancelled while it waited
            if written is not None:
                try:
                    written()
                except Exception as exc:  # the caller's callback
                    _report(exc, "a gRPC call's written callback raised")
            connection.open_stream(block, message, on_done, deadline, keep, resends, call)

    def send_again(self, streams: list[_Stream]) -> None:
        """Calls the server never processed, oldest first: sent again ahead of the calls
        waiting, on the current connection if it has room, else on the next one."""
        if self._closed:
            for stream in streams:
                _tell(stream.on_done, CANCELLED, "client closed", b"")
            return
        self.transparent_retries += len(streams)
        self._waiting.extendleft(
            (s.block, s.body, s.on_done, s.keep, s.deadline, None, s.resends, s.call)
            for s in reversed(streams)
        )
        self.slots_freed()
        self._reopen_if_needed()

    def connection_gone(self, connection: _GrpcClientConnection, lost: bool = False) -> None:
        """No new calls on `connection` (GOAWAY, broken, lost); `lost`: no calls at all."""
        if lost:
            self._open_connections.discard(connection)
        if self._connection is connection:
            self._connection = None
        self._reopen_if_needed()

    def _reopen_if_needed(self) -> None:
        usable = self._connection is not None and not self._connection.going_away
        if self._waiting and not usable and self._opening is None and not self._closed:
            self._opening = asyncio.get_running_loop().create_task(self._reopen())
            self._schedule_sweep()  # deadlines hold for calls made without connect() first

    async def _reopen(self) -> None:
        try:
            await asyncio.wait_for(self._open(), max(self.timeout_s, 5.0))
        except (OSError, asyncio.TimeoutError, ConnectionError) as exc:
            reason = f"cannot connect: {getattr(exc, 'strerror', None) or exc or 'timed out'}"
            while self._waiting:  # nothing can be sent while connecting fails
                _tell(self._waiting.popleft()[2], UNAVAILABLE, reason, b"")
        finally:
            self._opening = None

    # --- deadlines
    def _sweep_at_least_every(self, sweep_s: float) -> None:
        """A call's own shorter timeout: sweep as often as it needs (from now on), or it would
        expire on the client timeout's slower sweep, up to 0.5 s late."""
        if sweep_s < self.sweep_s:
            self.sweep_s = sweep_s
            if self._sweeper is not None:
                self._sweeper.cancel()
                self._sweeper = None
                self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        if not self._closed and self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self.sweep_s, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = time.monotonic()
        for connection in list(self._open_connections):
            connection.expire(now)
        # The whole queue, not only its front: a call's own `timeout_s` can end first.
        expired = [waiting for waiting in self._waiting if waiting[4] < now]
        if expired:
            self._waiting = deque(waiting for waiting in self._waiting if waiting[4] >= now)
            for waiting in expired:
                _tell(waiting[2], DEADLINE_EXCEEDED, "deadline exceeded (client)", b"")
        self._schedule_sweep()

    # --- keepalive
    def _schedule_keepalive(self) -> None:
        if self.keepalive_s > 0 and not self._closed and self._keepalive is None:
            self._keepalive = asyncio.get_running_loop().call_later(
                self.keepalive_s, self._ping_busy_connections
            )

    def _ping_busy_connections(self) -> None:
        """A PING on each connection with calls in flight (grpc-core's default: no PINGs on an
        idle connection, which servers count as abuse)."""
        self._keepalive = None
        for connection in list(self._open_connections):
            if connection.streams:
                connection.ping(self.keepalive_timeout_s)
        self._schedule_keepalive()

    def close(self) -> None:
        """Fail what is outstanding (CANCELLED) and close the connection."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        if self._opening is not None:
            self._opening.cancel()
        while self._waiting:
            _tell(self._waiting.popleft()[2], CANCELLED, "client closed", b"")
        self._connection = None
        for connection in list(self._open_connections):
            connection.going_away = True
            connection.fail_all(CANCELLED, "client closed")
            if connection.transport is not None:
                connection.transport.close()


# A streaming call's messages are kept for a transparent retry until the server answers, up to
# this many bytes (grpc-core's default GRPC_ARG_PER_RPC_RETRY_BUFFER_SIZE, 256 KiB:
# kDefaultPerRpcRetryBufferSize in src/core/client_channel/retry_filter.cc); past it the call is
# committed and a refusal fails it.
REPLAY_BUFFER = 256 * 1024


class StreamingCall:
    """One streaming call (`GrpcWire.open_call`): `send` messages, `close_sending`, `cancel`.

    Messages sent before the stream is open wait here, in order, and go (each `written()` run)
    as it opens. Until the server's first headers they are also kept in `replay`, to send the
    call again if the server says it never took it. Once the call is over (`over`), sends are
    dropped."""

    __slots__ = (
        "backlog",
        "connection",
        "on_done",
        "on_message",
        "over",
        "replay",
        "replay_size",
        "sending",
        "stream_id",
    )

    def __init__(self, on_message: OnMessage, on_done: Ended) -> None:
        self.on_message = on_message
        self.on_done = on_done
        self.connection: _GrpcClientConnection | None = None
        self.stream_id = 0
        self.backlog: list[tuple[bytes, Written | None]] = []
        self.sending = True  # the client's side is open
        self.over = False
        # every message so far, until the server answers (None: committed, never sent again)
        self.replay: list[bytes] | None = []
        self.replay_size = 0

    def send(self, message: bytes, written: Written | None = None) -> None:
        """One framed message (see `framed`), written now if the stream is open; `written()`
        runs only if it had to wait for the stream to open."""
        if self.over or not self.sending:
            return
        replay = self.replay
        if replay is not None:
            self.replay_size += len(message)
            if self.replay_size > REPLAY_BUFFER:
                self.replay = None
            else:
                replay.append(message)
        if self.connection is None:
            self.backlog.append((message, written))
            return
        self.connection.send_message(self.stream_id, message)

    def rewind(self) -> None:
        """The server never took the stream: every message goes again on the next one."""
        assert self.replay is not None
        self.connection = None
        self.backlog = [(message, None) for message in self.replay]

    def close_sending(self) -> None:
        """No more messages from the client (half-close); the server's answers go on."""
        if self.sending:
            self.sending = False
            if self.connection is not None:
                self.connection.close_sending(self.stream_id)

    def cancel(self) -> None:
        """Give the call up: RST_STREAM CANCEL once open; `on_done(CANCELLED, ...)` now."""
        if self.over:
            return
        if self.connection is not None:
            self.connection.cancel_stream(self.stream_id)
        else:
            self.ended(CANCELLED, "cancelled by the client", b"")

    def attach(self, connection: _GrpcClientConnection, stream_id: int) -> None:
        """The stream is open (its HEADERS in the connection's `out`): what waited goes now."""
        self.connection, self.stream_id = connection, stream_id
        backlog, self.backlog = self.backlog, []
        for message, written in backlog:
            if written is not None:
                try:
                    written()
                except Exception as exc:  # the caller's callback
                    _report(exc, "a gRPC call's written callback raised")
            connection.send_message(stream_id, message)
        if not self.sending:
            connection.close_sending(stream_id)

    def ended(self, code: int, details: str, _message: bytes) -> None:
        """The call's end, once (the connection's completion of its stream)."""
        if self.over:
            return
        self.over = True
        self.connection = None
        self.backlog = []
        try:
            self.on_done(code, details)
        except Exception as exc:  # the caller's callback
            _report(exc, "a gRPC streaming call's completion callback raised")
