"""The stub's OpenAI side: streamed /v1/completions and /v1/chat/completions, and /v1/models.

What an OpenAI-compatible server (vLLM's shape) sends for `"stream": true`: a 200 with
`text/event-stream`, one `data: {...}` chunk per token (`choices[0].text`; chat:
`choices[0].delta.content`, after an opening chunk with the role and empty content), then,
with `"stream_options": {"include_usage": true}`, a chunk with empty `choices` and the `usage`
of the whole request, then `data: [DONE]`. Token times come from the same plan as the
generate_stream side (stub/sse.py `TokenPlan`, the model's StreamLaw: llm_known's a + b·words of
the prompt, then one every c), so the known answer is identical over both APIs.

The models served are the repository's (`Catalog.served`); another name is a 404 in OpenAI's
error shape, as is a request without `"stream": true` (400: the stub answers streams only).
For tests, `stub_error_after: k` sends k tokens and then an error event, followed by
`data: [DONE]` as vLLM does; `stub_without_done: true` ends the body as a cut stream would:
without `data: [DONE]` and without a `finish_reason`.
"""

from __future__ import annotations

import json
import time
from typing import Any

from loadtest.stub.catalog import Catalog, StubModel
from loadtest.stub.sse import (
    ERROR_AFTER_FIELD,
    LAST_CHUNK,
    MID_STREAM_ERROR,
    SsePlan,
    data_event,
    json_event,
)

COMPLETIONS_PATH = "/v1/completions"
CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
POST_PATHS = (COMPLETIONS_PATH, CHAT_PATH)
WITHOUT_DONE_FIELD = "stub_without_done"
_DONE = data_event(b"[DONE]")
_TOKEN = "@token@"  # where each chunk's text goes in its template


def error_body(message: str, kind: str, code: int) -> dict[str, Any]:
    """OpenAI's error object (vLLM's ErrorResponse)."""
    return {"error": {"message": message, "type": kind, "code": code}}


def models_json(catalog: Catalog) -> dict[str, Any]:
    """GET /v1/models: the repository's models."""
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "loadtest-stub"}
            for name in catalog.served
        ],
    }


def _prompt_text(request: dict[str, Any], chat: bool) -> str:
    """The words the law counts: the prompt, or every message's text content."""
    if not chat:
        prompt = request.get("prompt", "")
        return " ".join(map(str, prompt)) if isinstance(prompt, list) else str(prompt)
    messages = request.get("messages")
    if not isinstance(messages, list):
        return ""
    texts = [m.get("content") for m in messages if isinstance(m, dict)]
    return " ".join(t for t in texts if isinstance(t, str))


def _choice(chat: bool, text: str, finish: str | None) -> dict[str, Any]:
    if chat:
        return {"index": 0, "delta": {"content": text}, "finish_reason": finish}
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}


def _token_events(
    envelope: dict[str, Any], chat: bool, tokens: int, finish: str | None
) -> list[bytes]:
    """One chunk per token ("t0 ", "t1 ", ...), from a byte template (json.dumps twice per
    answer, not per token: the stub must cost less than the client); the last one says why the
    answer ended (`finish`)."""
    templates = []
    for reason in (None, finish):
        chunk = {**envelope, "choices": [_choice(chat, _TOKEN, reason)]}
        before, after = json.dumps(chunk, separators=(",", ":")).encode().split(_TOKEN.encode())
        templates.append((before, after))
    events = []
    for k in range(tokens):
        before, after = templates[k == tokens - 1]
        events.append(data_event(b"%st%d %s" % (before, k, after)))
    return events


class OpenAiPlan(SsePlan):
    """One streamed completion's answer: its chunks, each token's due time (TokenPlan)."""

    def __init__(self, model: StubModel, request: dict[str, Any], chat: bool) -> None:
        prompt = _prompt_text(request, chat)
        max_tokens = request.get("max_tokens", request.get("max_completion_tokens"))
        error_after = request.get(ERROR_AFTER_FIELD)
        super().__init__(
            model,
            {
                "text_input": prompt,
                "max_tokens": max_tokens,
                "ignore_eos": request.get("ignore_eos"),  # vLLM's extension
                ERROR_AFTER_FIELD: error_after,
            },
        )
        envelope = {
            "id": "chatcmpl-stub" if chat else "cmpl-stub",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": model.name,
        }
        failing = self.error_after is not None
        cut = request.get(WITHOUT_DONE_FIELD) is True  # a stream cut mid-answer: no end at all
        finish = None if failing or cut else ("stop" if self.eos else "length")
        self.events = _token_events(envelope, chat, self.tokens, finish)
        if chat:  # the role first, with empty content, as vLLM opens a chat stream
            opening = {"index": 0, "delta": {"role": "assistant", "content": ""}}
            self.head = json_event({**envelope, "choices": [{**opening, "finish_reason": None}]})
        done = b"" if cut else _DONE
        if failing:
            error = json_event(error_body(MID_STREAM_ERROR, "InternalServerError", 500))
            self.tail = error + done + LAST_CHUNK
            return
        options = request.get("stream_options")
        usage = b""
        if isinstance(options, dict) and options.get("include_usage") is True:
            words = len(prompt.split())
            counts = {
                "prompt_tokens": words,
                "completion_tokens": self.tokens,
                "total_tokens": words + self.tokens,
            }
            usage = json_event({**envelope, "choices": [], "usage": counts})
        self.tail = usage + done + LAST_CHUNK


def openai_answer(
    catalog: Catalog, path: str, body: bytes
) -> OpenAiPlan | tuple[int, dict[str, Any]]:
    """The plan of a POST to `path`, or (status, error body) for a request the stub refuses."""
    try:
        request = json.loads(body) if body else None
    except ValueError:
        request = None
    if not isinstance(request, dict):
        return 400, error_body("the body is not a JSON object", "BadRequestError", 400)
    name = request.get("model")
    if not isinstance(name, str) or name not in catalog.served:
        message = f"The model `{name}` does not exist."
        return 404, error_body(message, "NotFoundError", 404)
    if request.get("stream") is not True:
        message = 'the loadtest stub answers streamed requests only ("stream": true)'
        return 400, error_body(message, "BadRequestError", 400)
    return OpenAiPlan(catalog.model(name), request, chat=path == CHAT_PATH)
