"""A lean HTTP/1.1 client for the inference path: prebuilt request bytes, callbacks, no tasks.

Why not aiohttp here: its per-request machinery (a task, a response object, header dicts, a
timeout context) costs hundreds of µs of CPU, so at a few thousand requests per second the client
itself becomes the bottleneck it is supposed to measure. This pool writes a request prepared once
per sample onto an idle keep-alive connection and parses the answer with httptools (llhttp, the
parser uvloop's ecosystem uses); completion is a plain callback. One request is outstanding per
connection (no pipelining, so one slow answer never delays another); the pool opens connections
as the open-loop load needs them, never capping concurrency (a cap would quietly close the loop).

A request may ask for its answer's body as it arrives (`on_body`: server-sent events, read
event by event while the answer goes on); an answer other than 200 still comes whole, so its
error message can be read. The body must be chunked or have a Content-Length (as HTTP/1.1
servers send; one that ends by closing the connection is a lost connection here).

Every request has a deadline (`timeout_s` from its submission: the moment the runner sent it,
waiting for a free connection included). An answer that arrives after it is a "timeout", however
it arrives, so the error count is exact; and a sweep every SWEEP_FRACTION of the timeout (1 ms to
0.5 s) fails what is still unanswered past its deadline and closes that connection, so a query is
never held much beyond its deadline. One sweep per interval for the whole pool is cheaper than a
timer per request, and the completion path pays one clock read.
With an ssl context the connections are TLS (the event loop's SSL transport; the server's name
is checked), opened and warmed the same way, so the handshakes happen before the run, not during
it.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import time
from collections import deque
from collections.abc import Callable
from typing import cast

import httptools

from loadtest.core.records import TIMEOUT

# on_done(status, body, error, headers): status 0 and an error text when no HTTP answer arrived;
# headers (lower-case names) only when the request asked to keep them.
HttpAnswer = Callable[[int, bytes, str | None, dict[bytes, bytes]], None]
# on_body(data): a streamed answer's body as it arrives (a 200 to a request that asked for it),
# once per network read, everything that read brought; `on_done` then comes with an empty body.
StreamedBody = Callable[[bytes], None]
_NO_HEADERS: dict[bytes, bytes] = {}
SWEEP_FRACTION = 0.125  # the sweep runs every 1/8 of the timeout ...
MIN_SWEEP_S = 0.001  # ... but at most once a millisecond
MAX_SWEEP_S = 0.5  # ... and at least twice a second


def build_request(host: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The complete bytes of one POST, built once and written as is for every query."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{key}: {value}" for key, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class _KeepAliveConnection(asyncio.Protocol):
    """One keep-alive connection with at most one request outstanding."""

    def __init__(self, pool: WirePool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.on_done: HttpAnswer | None = None
        self.deadline = 0.0  # time.monotonic() by which the outstanding request must be answered
        self.chunks: list[bytes] = []
        self.headers: dict[bytes, bytes] = {}
        self.keep_headers = False
        self.body_sink: StreamedBody | None = None  # the request asked for its body as it comes
        self.streaming = False  # ... and the answer is a 200: its body goes there

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail(f"malformed HTTP response: {exc}")
            return
        if self.streaming and self.chunks:
            self._stream_body()

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.forget(self)
        self.fail(f"connection lost: {exc}" if exc else "connection closed by the server")

    # --- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if self.keep_headers:
            self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.streaming = self.body_sink is not None and self.parser.get_status_code() == 200

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def _stream_body(self) -> None:
        """What this read brought of a streamed body, in one piece (llhttp hands each chunk of
        a chunked body apart: one call per read, not per chunk)."""
        chunks, self.chunks = self.chunks, []
        assert self.body_sink is not None
        self.body_sink(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def on_message_complete(self) -> None:
        if self.streaming and self.chunks:
            self._stream_body()
        self.streaming, self.body_sink = False, None
        on_done, self.on_done = self.on_done, None
        body = b"".join(self.chunks)
        self.chunks = []
        headers = self.headers if self.keep_headers else _NO_HEADERS
        self.headers = {}
        status = self.parser.get_status_code()
        late = time.monotonic() > self.deadline
        if self.parser.should_keep_alive():
            self.pool.release(self)
        elif self.transport is not None:
            self.transport.close()
        if on_done is not None:
            if late:  # answered, but after the deadline: the client had given up on it
                on_done(0, b"", TIMEOUT, _NO_HEADERS)
            else:
                on_done(status, body, None, headers)

    # --- used by the pool
    def send(
        self,
        request: bytes,
        on_done: HttpAnswer,
        deadline: float,
        on_body: StreamedBody | None = None,
    ) -> None:
        assert self.transport is not None
        self.on_done = on_done
        self.body_sink = on_body
        self.deadline = deadline
        self.transport.write(request)

    def fail(self, error: str) -> None:
        self.streaming, self.body_sink, self.chunks = False, None, []
        on_done, self.on_done = self.on_done, None
        if self.transport is not None:
            self.transport.close()
        if on_done is not None:
            on_done(0, b"", error, _NO_HEADERS)


class WirePool:
    """Keep-alive connections to one host:port; `submit` never blocks and never raises.

    With no idle connection, a request waits in a FIFO for the first connection to come free or
    to open, and a new connection is opened only while fewer than MAX_CONNECTING are opening:
    after a stall of the client, a burst of due queries must not open a connection each (a
    storm of handshakes that makes the client fall further behind). The wait counts in the
    query's latency, and `waited` counts the queries that had to wait.
    """

    MAX_CONNECTING = 4

    def __init__(
        self, host: str, port: int, timeout_s: float, ssl: ssl_module.SSLContext | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.ssl = ssl
        self.sweep_s = min(MAX_SWEEP_S, max(MIN_SWEEP_S, SWEEP_FRACTION * timeout_s))
        self.waited = 0
        self._idle: list[_KeepAliveConnection] = []
        self._all: set[_KeepAliveConnection] = set()
        # (request, on_done, keep_headers, deadline, written, on_body), oldest first
        self._waiting: deque[
            tuple[bytes, HttpAnswer, bool, float, Callable[[], None] | None, StreamedBody | None]
        ] = deque()
        self._connecting = 0
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def warm(self, connections: int) -> None:
        """Open connections ahead of the run so the first queries do not pay for a handshake."""
        opened = await asyncio.gather(*(self._open() for _ in range(connections)))
        self._idle.extend(opened)
        self._schedule_sweep()

    async def _open(self) -> _KeepAliveConnection:
        loop = asyncio.get_running_loop()
        if self.ssl is None:
            _, protocol = await loop.create_connection(
                lambda: _KeepAliveConnection(self), self.host, self.port
            )
        else:
            _, protocol = await loop.create_connection(
                lambda: _KeepAliveConnection(self),
                self.host,
                self.port,
                ssl=self.ssl,
                server_hostname=self.host,
                ssl_handshake_timeout=self.timeout_s,
            )
        self._all.add(protocol)
        return protocol

    def submit(
        self,
        request: bytes,
        on_done: HttpAnswer,
        keep_headers: bool = False,
        timeout_s: float | None = None,
        written: Callable[[], None] | None = None,
        on_body: StreamedBody | None = None,
    ) -> None:
        """Send on an idle connection, or queue until one is free or newly open; the request's
        deadline is `timeout_s` (default: the pool's) from now. `written()` runs when a queued
        request is finally written (not for one written at once). With `on_body`, a 200's body
        goes there as it arrives."""
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        if self._idle:
            connection = self._idle.pop()
            connection.keep_headers = keep_headers
            connection.send(request, on_done, deadline, on_body)
            return
        self.waited += 1
        self._waiting.append((request, on_done, keep_headers, deadline, written, on_body))
        self._maybe_grow()

    def _maybe_grow(self) -> None:
        if self._waiting and self._connecting < self.MAX_CONNECTING and not self._closed:
            self._connecting += 1
            asyncio.get_running_loop().create_task(self._grow())

    async def _grow(self) -> None:
        try:
            connection = await self._open()
        except OSError as exc:
            error = f"cannot connect: {exc.strerror or exc}"
            while self._waiting:  # nothing can be sent while connecting fails
                on_done = self._waiting.popleft()[1]
                on_done(0, b"", error, _NO_HEADERS)
            return
        finally:
            self._connecting -= 1
        self.release(connection)

    def release(self, connection: _KeepAliveConnection) -> None:
        """A connection came free: it takes the oldest waiting request, else goes idle."""
        if self._closed:
            return
        if self._waiting:
            request, on_done, keep_headers, deadline, written, on_body = self._waiting.popleft()
            connection.keep_headers = keep_headers
            if written is not None:
                written()
            connection.send(request, on_done, deadline, on_body)
        else:
            self._idle.append(connection)

    def forget(self, connection: _KeepAliveConnection) -> None:
        self._all.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)
        self._maybe_grow()

    def _schedule_sweep(self) -> None:
        if not self._closed and self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self.sweep_s, self._sweep)

    def _sweep(self) -> None:
        """Fail what is past its deadline: on a connection (closed: its answer, if it ever comes,
        is no longer wanted) or still waiting for one."""
        self._sweeper = None
        now = time.monotonic()
        for connection in list(self._all):
            if connection.on_done is not None and connection.deadline < now:
                connection.fail(TIMEOUT)
        while self._waiting and self._waiting[0][3] < now:
            on_done = self._waiting.popleft()[1]
            on_done(0, b"", TIMEOUT, _NO_HEADERS)
        self._schedule_sweep()

    def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connection in list(self._all):
            connection.fail("client closed")
        while self._waiting:
            on_done = self._waiting.popleft()[1]
            on_done(0, b"", "client closed", _NO_HEADERS)
        self._idle.clear()
