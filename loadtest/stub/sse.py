"""The stub's generate_stream answer: server-sent events on a chunked HTTP/1.1 response.

Also what every streamed answer of the stub shares, whatever its API (generate_stream here, the
OpenAI side in openai_sse.py): the token plan (`TokenPlan`: how many tokens, when each is due)
and the writer (`stream_answer`) of an `SsePlan`'s head, token events and tail.

What Triton's HTTP generate extension sends for a decoupled model (docs/STREAMING.md): a 200 with
`Content-Type: text/event-stream; charset=utf-8`, one `data: {...}` event per model response, each
carrying the output fields (`text_output`, `num_output_tokens` = 1 here: one token per event).
Tokens follow the model's StreamLaw (catalog.py): llm_known's a + b·words, then one every c; with
no law every token is written at once, in one write, so the stub costs the client as little as a
server can. Token times are absolute from the request's arrival (no drift).

For tests, a request field `stub_error_after: k` makes the answer send k tokens and then an error
event under the 200 already sent, as Triton does when a response fails mid-stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from loadtest.stub.catalog import StubModel

ERROR_AFTER_FIELD = "stub_error_after"
MID_STREAM_ERROR = "stub: the model failed mid-stream"
DEFAULT_TOKENS = 16
_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream; charset=utf-8\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
LAST_CHUNK = b"0\r\n\r\n"  # ends a chunked body


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def data_event(data: bytes) -> bytes:
    """One `data:` event as a chunk of the chunked body."""
    return _chunk(b"data: " + data + b"\n\n")


def json_event(fields: dict[str, Any]) -> bytes:
    return data_event(json.dumps(fields, separators=(",", ":")).encode())


def _number(value: Any, default: int) -> int:
    if isinstance(value, list):
        value = value[0] if value else default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _truthy(value: Any) -> bool:
    """A request's boolean field, however it came (JSON true, a one-element list, 1)."""
    if isinstance(value, list):
        value = value[0] if value else False
    return value is True or value == 1


class TokenPlan:
    """One streamed request's answer, whatever the protocol: how many tokens (max_tokens, or
    fewer where the model's `stub_eos_after` stops it and the request did not ask ignore_eos),
    when each is due after the arrival (seconds), and whether an error follows them
    (`stub_error_after`)."""

    def __init__(self, model: StubModel, request: dict[str, Any]) -> None:
        text = request.get("text_input", "")
        if isinstance(text, list):
            text = " ".join(str(t) for t in text)
        words = len(str(text).split())
        tokens = max(_number(request.get("max_tokens"), DEFAULT_TOKENS), 0)
        error_after = request.get(ERROR_AFTER_FIELD)
        self.error_after = None if error_after is None else _number(error_after, 0)
        law = model.stream_law
        self.instant = law.a_ms == 0 and law.b_ms == 0 and law.c_ms == 0
        self.eos = bool(law.eos_after) and not _truthy(request.get("ignore_eos"))
        self.eos = self.eos and law.eos_after < tokens  # the model's end-of-sequence token
        if self.eos:
            tokens = law.eos_after
        self.tokens = tokens if self.error_after is None else min(tokens, self.error_after)
        self.due_s = [law.token_due_s(words, k) for k in range(self.tokens)]


class SsePlan(TokenPlan):
    """A streamed answer as written: `head` with the HTTP head (before any token), one event
    per token (`events`, each at its due time), then `tail` (which ends the chunked body)."""

    head = b""
    events: list[bytes]
    tail: bytes


class StreamPlan(SsePlan):
    """One generate_stream request's answer: its SSE events, each token's due time."""

    def __init__(self, model: StubModel, body: bytes) -> None:
        try:
            request = json.loads(body) if body else {}
        except ValueError:
            request = {}
        super().__init__(model, request if isinstance(request, dict) else {})
        sent = self.tokens
        base = {"model_name": model.name, "model_version": "1"}
        self.events = [
            json_event({**base, "text_output": f"t{k} ", "num_output_tokens": 1})
            for k in range(sent)
        ]
        self.tail = (
            LAST_CHUNK
            if self.error_after is None
            else json_event({"error": MID_STREAM_ERROR}) + LAST_CHUNK
        )


def stream_answer(
    plan: SsePlan, write: Callable[[bytes], None], finished: Callable[[], None]
) -> None:
    """Write the plan's answer through `write` as its tokens fall due, then call `finished`
    (the connection may take its next request). `write` must drop data once the peer is gone."""
    if plan.instant or not plan.events:
        write(_HEAD + plan.head + b"".join(plan.events) + plan.tail)
        finished()
        return
    loop = asyncio.get_running_loop()
    start = loop.time()
    write(_HEAD + plan.head)

    def token(k: int) -> None:
        write(plan.events[k])
        if k + 1 < len(plan.events):
            loop.call_at(start + plan.due_s[k + 1], token, k + 1)
            return
        write(plan.tail)
        finished()

    loop.call_at(start + plan.due_s[0], token, 0)
