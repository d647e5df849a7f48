"""Triton's HTTP `generate_stream`: a streamed (decoupled, LLM) answer as server-sent events.

The other way into a decoupled model besides gRPC ModelStreamInfer (docs/STREAMING.md, with
sources). Each query is one `POST /v2/models/<m>/generate_stream` with a JSON body built once per
sample: every input tensor as a JSON field of its own name (Triton maps a field that names a model
input to that tensor), e.g. `{"text_input": "...", "max_tokens": 12, "stream": true}`. The answer
is `text/event-stream`: one `data: {...}` event per model response. Per query, each event is a
`Parts.part` (the first marks the first token), the `num_output_tokens` of every event summed is
the final count (None = no count from the server), and the end of the body ends the query.

Triton sets the HTTP status from the *first* response, so an error after it arrives as an event
`data: {"error": "..."}` under a 200 (extension_generate.md): every event is checked, and such
an answer is a failed query ("http stream: ..."), never a short success.

The lean path: aiohttp's keep-alive pool (no cap on connections: an open-loop burst is never
throttled), the body read as it arrives in whole network chunks and split on the blank line that
ends an event (bytes.split, no per-byte Python), one json.loads per event. --timeout cancels the
query's task, which closes its response (and its connection) and counts a timeout.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import aiohttp
import numpy as np
from tritonclient.utils import InferenceServerException

from loadtest.core.records import TIMEOUT
from loadtest.core.target import (
    ModelSpec,
    Parts,
    Sample,
    Written,
)
from loadtest.errors import TargetError
from loadtest.targets.transport import (
    AUTH_KIND_BY_HTTP_STATUS,
    http_client,
    ssl_context,
)
from loadtest.targets.triton_common import (
    DEFAULT_HTTP_PORT,
    StreamingTargetBase,
    error_kind,
    http_error_message,
    is_decoupled,
    model_spec_from_config,
)

TOKEN_COUNT_FIELD = "num_output_tokens"
_EVENT_END = b"\n\n"
_CLOSED = "http stream: closed"


def json_value(tensor: np.ndarray) -> Any:
    """A sample tensor as the JSON value generate_stream maps to that input: a scalar for one
    element (text decoded as UTF-8), else a flat list."""
    values = [v.decode() if isinstance(v, bytes) else v for v in tensor.reshape(-1).tolist()]
    return values[0] if len(values) == 1 else values


def request_body(sample: Sample, server_timeout_us: int | None = None) -> bytes:
    """The generate_stream JSON body of one sample (Triton's "timeout" parameter if given)."""
    body: dict[str, Any] = {name: json_value(tensor) for name, tensor in sample.items()}
    if server_timeout_us is not None:
        body["parameters"] = {"timeout": server_timeout_us}
    return json.dumps(body, separators=(",", ":")).encode()


def event_tokens(event: dict[str, Any]) -> int | None:
    """The `num_output_tokens` one event carries (a number or a list, summed); None if none."""
    value = event.get(TOKEN_COUNT_FIELD)
    if value is None:
        return None
    if isinstance(value, list):
        return int(sum(value))
    return int(value)


class SseAnswer:
    """One answer's events as they arrive: fed the body in network chunks, reports to `parts`.

    `feed` returns the error kind of an error event (the query has failed), else None; `count`
    is the summed token count so far (None while no event carried one), `events` the data
    events seen. Separate from the I/O so the parsing can be tested, and measured, alone.
    """

    __slots__ = ("_rest", "count", "events", "parts")

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.count: int | None = None
        self.events = 0
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
        """The body is over: an unterminated last event still counts."""
        rest, self._rest = self._rest.strip(), b""
        return self._event(rest) if rest else None

    def _event(self, event: bytes) -> str | None:
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue  # comments (":"), "event:", "id:", "retry:" carry no response
            payload = line[5:].strip()
            tokens = _fast_tokens(payload)
            if tokens == _SLOW:
                error, tokens = _parsed(payload)
                if error is not None:
                    return error
            self.events += 1
            self.parts.part()
            if tokens is not None:
                self.count = (self.count or 0) + tokens
        return None


_SLOW = -1  # _fast_tokens: this event needs json.loads
_COUNT_KEY = b'"num_output_tokens":'


def _fast_tokens(payload: bytes) -> int | None:
    """An event's token count without json.loads, or _SLOW when it must be parsed.

    The fast path takes only what it can read safely: a JSON object (braces) without the bytes
    `"error"` anywhere (an error object, or a text that merely says it, goes to json.loads) and
    with `"num_output_tokens":` followed by digits or a flat list of them. A key pattern with its
    quotes cannot occur inside a JSON string (a quote there is escaped), so a match is the key.
    """
    if not (payload.startswith(b"{") and payload.endswith(b"}")) or b'"error"' in payload:
        return _SLOW
    at = payload.find(_COUNT_KEY)
    if at < 0:
        return _SLOW if b'"num_output_tokens"' in payload else None
    at += len(_COUNT_KEY)
    end = at
    while payload[end : end + 1].isdigit():
        end += 1
    if end > at:
        return int(payload[at:end])
    if payload[at : at + 1] == b"[":
        close = payload.find(b"]", at)
        try:
            return sum(int(v) for v in payload[at + 1 : close].split(b",") if v.strip())
        except ValueError:
            return _SLOW
    return _SLOW


def _parsed(payload: bytes) -> tuple[str | None, int | None]:
    """(error kind, token count) of an event, by json.loads: the error object's message, or
    the count."""
    try:
        event = json.loads(payload)
    except ValueError:
        return "http stream: an event that is not JSON", None
    if not isinstance(event, dict):
        return "http stream: an event that is not a JSON object", None
    if "error" in event:
        return error_kind("http stream", str(event["error"])), None
    return None, event_tokens(event)


class TritonSseTarget(StreamingTargetBase):
    """Triton HTTP generate_stream (SSE): one request and one streamed response per query."""

    _DEFAULT_PORT = DEFAULT_HTTP_PORT

    _STATS_PROTOCOL = "http"
    _STREAM = "HTTP stream"
    _LABEL = "http-stream"

    def _init_own(self) -> None:
        """This target's own state, after the settings every Triton target takes."""
        scheme = "https" if self.credentials.tls is not None else "http"
        version_path = f"/versions/{self.version}" if self.version else ""
        self._endpoint = (
            f"{scheme}://{self.url}/v2/models/{self.model}{version_path}/generate_stream"
        )
        self._headers = {"Content-Type": "application/json", **self.credentials.header_dict()}
        self._session: aiohttp.ClientSession | None = None
        self._bodies: list[bytes] = []  # the load path's, with the server timeout if any
        self._plain: list[bytes] = []  # without it: warm-up and infer_outputs
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> ModelSpec:
        client = http_client(self.url, self.credentials, conn_timeout=self.setup_timeout_s)
        try:
            metadata = await client.get_server_metadata()
            self._server_version = str(metadata.get("version", ""))
            config = await client.get_model_config(self.model, self.version)
            ready = await client.is_model_ready(self.model, self.version)
        except InferenceServerException as exc:
            raise TargetError(
                f"model {self.model!r} at {self.url} (HTTP stream): {exc.message()}"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TargetError(f"cannot reach {self.url} (HTTP stream): {exc}") from None
        finally:
            await client.close()
        if not ready:
            raise TargetError(f"model {self.model!r} at {self.url} is not ready")
        self.decoupled = is_decoupled(config)
        self._spec = model_spec_from_config(config, self.version)
        tls = self.credentials.tls
        connector = aiohttp.TCPConnector(
            limit=0, ssl=ssl_context(tls) if tls is not None else False
        )
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return self._spec

    async def prepare(self, samples: Sequence[Sample]) -> None:
        assert self._spec is not None, "open() first"
        self._plain = [request_body(sample) for sample in samples]
        self._bodies = (
            self._plain
            if self.server_timeout_us is None
            else [request_body(sample, self.server_timeout_us) for sample in samples]
        )
        if self._plain:
            try:
                await self.infer_outputs(0)
            except ValueError as exc:
                raise TargetError(f"model {self.model!r} rejected the inputs: {exc}") from None

    # -- one query ------------------------------------------------------------------------------
    def start_parts(self, sample_index: int, parts: Parts, written: Written | None = None) -> None:
        self._start(self._bodies[sample_index], parts)

    def _start(self, body: bytes, parts: Parts) -> None:
        task = asyncio.get_running_loop().create_task(self._query(body, parts))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self.timeout_s > 0:
            deadline = asyncio.get_running_loop().call_later(self.timeout_s, _expire, task, parts)
            task.add_done_callback(lambda _: deadline.cancel())

    async def _query(self, body: bytes, parts: Parts) -> None:
        assert self._session is not None, "open() first"
        answer = SseAnswer(parts)
        try:
            async with self._session.post(
                self._endpoint, data=body, headers=self._headers
            ) as response:
                if response.status != 200:
                    parts.done(_status_kind(response.status, await response.read()))
                    return
                async for data in response.content.iter_any():
                    error = answer.feed(data)
                    if error is not None:
                        parts.done(error)
                        return
                error = answer.end()
        except asyncio.CancelledError:
            parts.done(_CLOSED)  # a no-op after a timeout: `_expire` ended the query first
            raise
        except (aiohttp.ClientError, OSError) as exc:
            parts.done(error_kind("http stream", str(exc) or type(exc).__name__))
            return
        if error is None and answer.events == 0:
            error = "http stream: no response"
        if error is None:
            parts.final(answer.count)
        parts.done(error)

    def _start_whole(self, sample_index: int, parts: Parts) -> None:
        self._start(self._plain[sample_index], parts)  # without the server timeout

    async def close(self) -> None:
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None


def _expire(task: asyncio.Task[None], parts: Parts) -> None:
    """--timeout: the query is a timeout, and its task is cancelled, which closes the response
    (aiohttp drops a connection whose body was not read to the end)."""
    parts.done(TIMEOUT)
    task.cancel()


def _status_kind(status: int, body: bytes) -> str:
    """The error kind of a refused request (before the stream began): auth, else its message."""
    auth = AUTH_KIND_BY_HTTP_STATUS.get(status)
    if auth is not None:
        return auth
    return error_kind(f"http stream {status}", http_error_message(body))
