"""The lean server-sent-events path both HTTP streaming targets share (Triton's generate_stream,
targets/triton_sse.py; an OpenAI-compatible server, targets/openai_sse.py).

Per query one POST with a body built once per sample, its answer read as it arrives: aiohttp's
keep-alive pool with no cap on connections (an open-loop burst is never throttled), the body taken
in whole network chunks and split on the blank line that ends an event (bytes.split, no per-byte
Python). What an event *means* is each protocol's own: a subclass of `SseEvents` reads each
`data:` payload, reports to the query's `Parts`, and says when the answer failed or is complete.

A query ends (`Parts.done`) at the first of: an event that is an error (the query failed, even
under the 200 already sent); an event that completes the answer (`SseEvents.complete`, OpenAI's
`data: [DONE]`), whose final count is reported at once and the rest of the body read quietly so
the connection stays reusable; the end of the body (`SseEvents.end` says whether that is an
error); a refusal before the stream (status ≠ 200); a broken connection; --timeout, which counts
a timeout and cancels the query's task, closing its response and connection (aiohttp never
reuses a connection whose body was not read to the end).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np

from loadtest.core.records import TIMEOUT
from loadtest.core.target import Parts
from loadtest.targets.transport import AUTH_KIND_BY_HTTP_STATUS, Credentials, ssl_context
from loadtest.targets.triton_common import error_kind

_EVENT_END = b"\n\n"

# A network chunk larger than this is parsed in slices of it, the loop given a turn whenever
# SLICE_S of parsing has gone by (a tenth of a send's 1 ms late threshold, and a few slices).
SLICE_BYTES = 4096
SLICE_S = 100e-6


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
    before the body ended)."""

    __slots__ = ("_rest", "complete", "count", "parts", "prompt_count")

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.count: int | None = None
        self.prompt_count: int | None = None
        self.complete = False
        self._rest = b""

    def feed(self, data: bytes) -> str | None:
        if self._rest:
            data = self._rest + data
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        events = data.split(_EVENT_END)
        self._rest = events.pop()
        for event in events:
            error = self._event(event)
            if error is not None:
                return error
        return None

    def end(self) -> str | None:
        """The body is over: an unterminated last event still counts; then whether an answer
        that ends here is a failure (`_ended`)."""
        rest, self._rest = self._rest.strip(), b""
        error = self._event(rest) if rest else None
        return error if error is not None else self._ended()

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
    """One target's streamed queries: the POSTs, their tasks and deadlines, the session.

    `label` names the stream in error kinds ("http stream: ..."); `message_of` reads a refusal's
    body (before the stream: status ≠ 200) into its message.
    """

    def __init__(
        self,
        label: str,
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
        self._tasks: set[asyncio.Task[None]] = set()

    def open(self) -> aiohttp.ClientSession:
        """The keep-alive pool (no cap on connections), over TLS when the credentials say so."""
        if self.session is None:
            tls = self.credentials.tls
            connector = aiohttp.TCPConnector(
                limit=0, ssl=ssl_context(tls) if tls is not None else False
            )
            self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return self.session

    def start(self, endpoint: str, body: bytes, answer: SseEvents) -> None:
        """Send one query now; its events go to `answer.parts`, `done` last."""
        task = asyncio.get_running_loop().create_task(self._query(endpoint, body, answer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self.timeout_s > 0:
            deadline = asyncio.get_running_loop().call_later(
                self.timeout_s, _expire, task, answer.parts
            )
            task.add_done_callback(lambda _: deadline.cancel())

    async def _query(self, endpoint: str, body: bytes, answer: SseEvents) -> None:
        assert self.session is not None, "open() first"
        parts = answer.parts
        try:
            async with self.session.post(endpoint, data=body, headers=self.headers) as response:
                if response.status != 200:
                    parts.done(self.status_kind(response.status, await response.read()))
                    return
                async for data in response.content.iter_any():
                    if answer.complete:
                        continue  # read to the end, so the connection is reused
                    if len(data) <= SLICE_BYTES:
                        error = answer.feed(data)
                    else:
                        error = await _feed_in_slices(answer, data)
                    if error is not None:
                        parts.done(error)
                        return
                    if answer.complete:
                        parts.final(answer.count, answer.prompt_count)
                        parts.done(None)
                if answer.complete:
                    return
                error = answer.end()
        except asyncio.CancelledError:
            parts.done(f"{self.label}: closed")  # a no-op after a timeout: `_expire` ended it
            raise
        except (aiohttp.ClientError, OSError) as exc:
            parts.done(error_kind(self.label, str(exc) or type(exc).__name__))
            return
        if error is None:
            parts.final(answer.count, answer.prompt_count)
        parts.done(error)

    def status_kind(self, status: int, body: bytes) -> str:
        """The error kind of a refused request (before the stream began): auth, else its
        message."""
        auth = AUTH_KIND_BY_HTTP_STATUS.get(status)
        if auth is not None:
            return auth
        return error_kind(f"{self.label} {status}", self.message_of(body))

    async def close(self) -> None:
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.session is not None:
            await self.session.close()
            self.session = None


async def _feed_in_slices(answer: SseEvents, data: bytes) -> str | None:
    """A large network chunk (a server that sends a whole answer at once) fed a slice at a
    time, yielding to the loop whenever SLICE_S of parsing has gone by: the issuer's next send
    is never held longer than that behind one answer's events. (A 256-token answer read in one
    go held the loop ~2 ms, and sends were late by as much: benchmarks/stream_client.py.)"""
    started = time.perf_counter()
    for offset in range(0, len(data), SLICE_BYTES):
        error = answer.feed(data[offset : offset + SLICE_BYTES])
        if error is not None or answer.complete:
            return error
        if time.perf_counter() - started > SLICE_S:
            await asyncio.sleep(0)
            started = time.perf_counter()
    return None


def _expire(task: asyncio.Task[None], parts: Parts) -> None:
    """--timeout: the query is a timeout, and its task is cancelled, which closes the response
    (aiohttp drops a connection whose body was not read to the end)."""
    parts.done(TIMEOUT)
    task.cancel()
