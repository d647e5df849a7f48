"""Triton's HTTP `generate_stream`: a streamed (decoupled, LLM) answer as server-sent events.

The other way into a decoupled model besides gRPC ModelStreamInfer (docs/STREAMING.md, with
sources). Each query is one `POST /v2/models/<m>/generate_stream` with a JSON body built once per
sample: every input tensor as a JSON field of its own name (Triton maps a field that names a model
input to that tensor), e.g. `{"text_input": "...", "max_tokens": 12, "stream": true}`. The answer
is `text/event-stream`: one `data: {...}` event per model response. Per query, each event is a
part (the first marks the first token; a read's parts are reported together), the
`num_output_tokens` of every event summed is the final count (None = no count from the
server), and the end of the body ends the query.

Triton sets the HTTP status from the *first* response, so an error after it arrives as an event
`data: {"error": "..."}` under a 200 (extension_generate.md): every event is checked, and such
an answer is a failed query ("http stream: ..."), never a short success.

The lean path is targets/sse_client.py's, shared with the OpenAI target: wire/http_wire.py's
keep-alive pool, the body split into events a network read at once; here each event's count and
error check are read without json.loads when that is safe (`_fast_tokens`). --timeout counts a
timeout and closes the query's connection. (The setup calls go through tritonclient's aiohttp
client.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import aiohttp
from tritonclient.utils import InferenceServerException

from loadtest.core.sessions import Message
from loadtest.core.target import (
    ModelSpec,
    Parts,
    Sample,
    TargetCapabilities,
    Written,
)
from loadtest.errors import TargetError
from loadtest.targets.sse_client import SseEvents, SseQueries, json_value
from loadtest.targets.transport import http_client
from loadtest.targets.triton_common import (
    DEFAULT_HTTP_PORT,
    StreamingTargetBase,
    error_kind,
    http_error_message,
    is_decoupled,
    model_spec_from_config,
    turn_sample,
)

TOKEN_COUNT_FIELD = "num_output_tokens"


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


class SseAnswer(SseEvents):
    """One generate_stream answer's events as they arrive (see SseEvents): each `data:` event
    is a part, its `num_output_tokens` summed into `count` (None while no event carried one);
    `events` counts the data events seen. The end of the body ends the answer."""

    __slots__ = ("events",)

    def __init__(self, parts: Parts) -> None:
        super().__init__(parts)
        self.events = 0

    def _data(self, payload: bytes) -> str | None:
        tokens = _fast_tokens(payload)
        if tokens == _SLOW:
            error, tokens = _parsed(payload)
            if error is not None:
                return error
        self.events += 1
        self.new_parts += 1
        if tokens is not None:
            self.count = (self.count or 0) + tokens
        return None

    def _ended(self) -> str | None:
        return None if self.events else "http stream: no response"


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
        self._queries = SseQueries(
            "http stream", self._endpoint, self.credentials, self.timeout_s, http_error_message
        )
        self._requests: list[bytes] = []  # the load path's, with the server timeout if any
        self._plain: list[bytes] = []  # without it: warm-up and infer_outputs
        self._samples: Sequence[Sample] = ()  # their other inputs, for a session's turns

    @property
    def capabilities(self) -> TargetCapabilities:
        """The streaming targets' own, a session's turns (a body built per turn), and the
        pool's waits for a free connection."""
        return replace(super().capabilities, plays_turns=True, counts_connection_waits=True)

    @property
    def connection_waits(self) -> int:
        return self._queries.connection_waits

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
        return self._spec

    async def prepare(self, samples: Sequence[Sample]) -> None:
        assert self._spec is not None, "open() first"
        self._samples = samples
        self._plain = [self._queries.request(request_body(sample)) for sample in samples]
        self._requests = (
            self._plain
            if self.server_timeout_us is None
            else [
                self._queries.request(request_body(sample, self.server_timeout_us))
                for sample in samples
            ]
        )
        try:
            await self._queries.warm()
        except OSError as exc:
            raise TargetError(f"cannot reach {self.url} (HTTP stream): {exc}") from None
        if self._plain:
            try:
                await self.infer_outputs(0)
            except ValueError as exc:
                raise TargetError(f"model {self.model!r} rejected the inputs: {exc}") from None

    # -- one query ------------------------------------------------------------------------------
    def start_parts(self, sample_index: int, parts: Parts, written: Written | None = None) -> None:
        self._queries.start(self._requests[sample_index], SseAnswer(parts), written)

    def _start_whole(self, sample_index: int, parts: Parts) -> None:
        # without the server timeout
        self._queries.start(self._plain[sample_index], SseAnswer(parts))

    def start_turn(
        self, sample_index: int, conversation: Sequence[Message], max_tokens: int, parts: Parts
    ) -> None:
        """One turn: the sample's inputs with the conversation and the turn's max_tokens."""
        sample = turn_sample(self._samples[sample_index], conversation, max_tokens)
        body = request_body(sample, self.server_timeout_us)
        self._queries.start(self._queries.request(body), SseAnswer(parts))

    async def close(self) -> None:
        await self._queries.close()
