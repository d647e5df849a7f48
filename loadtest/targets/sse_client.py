"""The lean server-sent-events path both HTTP streaming targets share (Triton's generate_stream,
targets/triton_sse.py; an OpenAI-compatible server, targets/openai_sse.py).

Per query one POST, its answer read as it arrives: the lean HTTP/1.1 pool of the inference path
(wire/http_wire.py: keep-alive connections with no cap, callbacks and no task per query, llhttp
parsing), its body handed over once per network read and split on the blank line that ends an
event (bytes.split, no per-byte Python). aiohttp did this before, at about half the client's CPU
per token (benchmarks/stream_client.py). What an event *means* is each protocol's own: a subclass
of `SseEvents` reads each `data:` payload, counts the parts it carries, and says when the answer
failed or is complete; the parts of one read are reported together (`Parts.part(count)`).

A query ends (`Parts.done`) at the first of: an event that is an error (the query failed, even
under the 200 already sent); an event that completes the answer (`SseEvents.complete`, OpenAI's
`data: [DONE]`), whose final count is reported at once and the rest of the body read quietly so
the connection stays reusable; the end of the body (`SseEvents.end` says whether that is an
error); a refusal before the stream (status ≠ 200); a broken connection; --timeout, a deadline
from the send (the pool fails the query as a timeout and closes its connection).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np

from loadtest.core.records import TIMEOUT
from loadtest.core.target import Parts, Written
from loadtest.targets.transport import AUTH_KIND_BY_HTTP_STATUS, Credentials, ssl_context
from loadtest.targets.triton_common import error_kind
from loadtest.wire.http_wire import WirePool, build_request

_EVENT_END = b"\n\n"

# A network read larger than this is parsed in slices of it, the loop given a turn whenever
# SLICE_S of parsing has gone by (a tenth of a send's 1 ms late threshold, and a few slices).
SLICE_BYTES = 4096
SLICE_S = 100e-6
WARM_CONNECTIONS = 8  # opened before the run, as the HTTP inference target's pool


def json_value(tensor: np.ndarray) -> Any:
    """A sample tensor as a JSON field's value: a scalar for one element (text decoded as
    UTF-8), else a flat list. How both APIs take a sample's inputs."""
    values = [v.decode() if isinstance(v, bytes) else v for v in tensor.reshape(-1).tolist()]
    return values[0] if len(values) == 1 else values


class SseEvents:
    """One answer's events as they arrive: `feed` takes the body in network chunks, hands each
    `data:` payload to `_data`, and returns the error kind of a failing event (else None).

    Separate from the I/O so each protocol's parsing can be tested, and measured, alone.
    Subclasses set `count` (the final token count, None = none sent), `prompt_count` (the
    prompt's tokens, where the server reports them) and `complete` (the answer said it is over
    before the body ended), and add the parts an event carries to `new_parts`: they are reported
    together once the piece of body fed is parsed (`Parts.part(count)`: one clock reading for
    what one network read brought, not one per event)."""

    __slots__ = ("_rest", "complete", "count", "new_parts", "parts", "prompt_count")

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.count: int | None = None
        self.prompt_count: int | None = None
        self.complete = False
        self.new_parts = 0
        self._rest = b""

    def feed(self, data: bytes) -> str | None:
        if self._rest:
            data = self._rest + data
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        events = data.split(_EVENT_END)
        self._rest = events.pop()
        error = None
        for event in events:
            if event.startswith(b"data:") and b"\n" not in event:  # the usual one-line event
                error = self._data(event[5:].strip())
            else:
                error = self._event(event)
            if error is not None:
                break
        self._report_parts()
        return error

    def end(self) -> str | None:
        """The body is over: an unterminated last event still counts; then whether an answer
        that ends here is a failure (`_ended`)."""
        rest, self._rest = self._rest.strip(), b""
        error = self._event(rest) if rest else None
        self._report_parts()
        return error if error is not None else self._ended()

    def _report_parts(self) -> None:
        if self.new_parts:
            self.parts.part(self.new_parts)
            self.new_parts = 0

    def _event(self, event: bytes) -> str | None:
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue  # comments (":"), "event:", "id:", "retry:" carry no response
            error = self._data(line[5:].strip())
            if error is not None:
                return error
        return None

    def _data(self, payload: bytes) -> str | None:
        """One `data:` payload: report it, return the error kind if it is an error."""
        raise NotImplementedError

    def _ended(self) -> str | None:
        """The error kind of an answer whose body ended now (after every event was read)."""
        raise NotImplementedError


class SseQueries:
    """One target's streamed queries to one endpoint: the POSTs on the lean pool, their
    answers' events.

    `label` names the stream in error kinds ("http stream: ..."); `message_of` reads a refusal's
    body (before the stream: status ≠ 200) into its message. A request is built once per sample
    (`request`) and written as is for every query (`start`). `open` also gives an aiohttp
    session for the setup calls (an OpenAI server's model list), which are not on the load path.
    """

    def __init__(
        self,
        label: str,
        endpoint: str,
        credentials: Credentials,
        timeout_s: float,
        message_of: Callable[[bytes], str],
    ) -> None:
        self.label = label
        self.credentials = credentials
        self.timeout_s = timeout_s
        self.message_of = message_of
        self.headers = {"Content-Type": "application/json", **credentials.header_dict()}
        self.session: aiohttp.ClientSession | None = None
        self._pool: WirePool | None = None
        where = urlsplit(endpoint)
        self._address = (
            where.hostname or "",
            where.port or (443 if where.scheme == "https" else 80),
        )
        self._host = where.netloc.rpartition("@")[2]  # never credentials in the Host header
        self._path = where.path + (f"?{where.query}" if where.query else "")

    def open(self) -> aiohttp.ClientSession:
        """The setup calls' session (an OpenAI server's model list), over TLS when the
        credentials say so; the queries never use it."""
        if self.session is None:
            tls = self.credentials.tls
            connector = aiohttp.TCPConnector(
                limit=0, ssl=ssl_context(tls) if tls is not None else False
            )
            self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return self.session

    def _pool_now(self) -> WirePool:
        """The keep-alive pool to the endpoint's server, opened on first use."""
        if self._pool is None:
            tls = self.credentials.tls
            self._pool = WirePool(
                *self._address,
                self.timeout_s if self.timeout_s > 0 else 1e9,
                ssl=ssl_context(tls) if tls is not None else None,
            )
        return self._pool

    def request(self, body: bytes) -> bytes:
        """The whole POST of a JSON body to the endpoint, ready to write."""
        return build_request(self._host, self._path, body, self.headers)

    async def warm(self, connections: int = WARM_CONNECTIONS) -> None:
        """Open connections before the run, so its first queries pay for no handshake. Raises
        OSError when the server cannot be reached."""
        await self._pool_now().warm(connections)

    @property
    def connection_waits(self) -> int:
        """Queries that found no idle connection (they waited for one to free or open)."""
        return self._pool.waited if self._pool is not None else 0

    def start(self, request: bytes, answer: SseEvents, written: Written | None = None) -> None:
        """Send one query (`request()`'s bytes) now, or, with no idle connection, once one is
        free (`written()` then); its events go to `answer.parts`, `done` last."""
        query = _StreamedQuery(self, answer)
        self._pool_now().submit(request, query.answered, written=written, on_body=query.body)

    def status_kind(self, status: int, body: bytes) -> str:
        """The error kind of a refused request (before the stream began): auth, else its
        message."""
        auth = AUTH_KIND_BY_HTTP_STATUS.get(status)
        if auth is not None:
            return auth
        return error_kind(f"{self.label} {status}", self.message_of(body))

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self.session is not None:
            await self.session.close()
            self.session = None


class _StreamedQuery:
    """One query's answer between the pool and its `SseEvents`: the body fed as it comes (a
    large read in slices, the loop given a turn between them), then the end.

    A read of more than SLICE_BYTES is queued and fed a slice at a time, yielding to the loop
    whenever SLICE_S of parsing has gone by: the issuer's next send is never held longer than
    that behind one answer's events (a 256-token answer read in one go held the loop ~2 ms, and
    sends were late by as much: benchmarks/stream_client.py). The pool's end of the answer
    waits for the queue to be fed.
    """

    __slots__ = ("answer", "backlog", "ending", "over", "queries")

    def __init__(self, queries: SseQueries, answer: SseEvents) -> None:
        self.queries = queries
        self.answer = answer
        self.backlog: deque[bytes] = deque()  # slices not yet fed
        self.ending: tuple[int, bytes, str | None] | None = None  # the pool's end, once fed
        self.over = False  # done was reported

    def body(self, data: bytes) -> None:
        if self.over:
            return  # after an error or [DONE]: read quietly, so the connection stays reusable
        if not self.backlog and len(data) <= SLICE_BYTES:
            self._feed(data)
            return
        draining = bool(self.backlog)
        self.backlog.extend(data[k : k + SLICE_BYTES] for k in range(0, len(data), SLICE_BYTES))
        if not draining:
            self._drain()

    def _drain(self) -> None:
        started = time.perf_counter()
        while self.backlog and not self.over:
            self._feed(self.backlog.popleft())
            if self.backlog and time.perf_counter() - started > SLICE_S:
                asyncio.get_running_loop().call_soon(self._drain)
                return
        self.backlog.clear()
        if self.ending is not None:
            self._end(*self.ending)

    def _feed(self, data: bytes) -> None:
        answer = self.answer
        error = answer.feed(data)
        if error is not None:
            self._finish(error)
        elif answer.complete:
            answer.parts.final(answer.count, answer.prompt_count)
            self._finish(None)

    def _finish(self, error: str | None) -> None:
        self.over = True
        self.backlog.clear()
        self.answer.parts.done(error)

    def answered(
        self, status: int, body: bytes, error: str | None, _headers: dict[bytes, bytes]
    ) -> None:
        """The pool's end of the answer: after the body (once it is all fed), or a failure."""
        if self.backlog and error is None:
            self.ending = (status, body, error)
            return
        self._end(status, body, error)

    def _end(self, status: int, body: bytes, error: str | None) -> None:
        if self.over:
            return
        queries = self.queries
        if error is not None:
            self._finish(error if error == TIMEOUT else error_kind(queries.label, error))
        elif status != 200:
            self._finish(queries.status_kind(status, body))
        else:
            answer = self.answer
            ended = answer.end()
            if ended is None:
                answer.parts.final(answer.count, answer.prompt_count)
            self._finish(ended)
