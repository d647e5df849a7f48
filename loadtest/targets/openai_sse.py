"""An OpenAI-compatible server's streamed completions: vLLM, trtllm-serve, Dynamo, Triton's own
OpenAI front end (from 2.52), the stub.

`--protocol openai` posts to `{url}/v1/completions` (`"prompt"`), `--protocol openai-chat` to
`{url}/v1/chat/completions` (`"messages": [{"role": "user", "content": prompt}]`), each body built
once per sample with `"model"`, `"max_tokens"`, `"stream": true` and `"stream_options":
{"include_usage": true}`; `--ignore-eos` adds `"ignore_eos": true` and `"min_tokens":
max_tokens` (vLLM's and trtllm-serve's extra sampling parameters), so an answer is exactly
max_tokens long. Any other input of a sample goes as a top-level field of its own name (how vLLM
takes extra parameters, and the stub its `stub_error_after`); the target's own fields win. A URL
may carry a path, the API's base behind a gateway; a trailing `/v1` is the API's own.

The model's identity is checked at `open` (GET /v1/models must list it). There is no Triton
config to read, so the target declares the model's inputs itself (`openai_model_spec`): a BYTES
prompt and an INT32 max_tokens with llm_known's sample ranges, which the sample library draws.

Per `data:` event (OpenAI's stream: one JSON chunk per event, `data: [DONE]` last): a choice
with text (`choices[].text`; chat: `choices[].delta.content`, or a reasoning model's
`reasoning_content`) is a `Parts.part`, the first marking the first token, so a chat's opening
role-only chunk is not one; the usage chunk's `usage.completion_tokens` is the final count
(rules/tokens.py labels its origin), its `usage.prompt_tokens` the server's count of the
prompt (rules/prompt_counts.py sets it beside the client tokenizer's); `[DONE]` ends the
query. No usage chunk: the count is None and the run's token figures count content chunks,
and say so. A failure is a failed query,
never a short success: an `{"error": ...}` event under the 200 (vLLM sends one, then `[DONE]`), a
body that ends without `[DONE]` before any choice said why it finished, a status other than 200
(401/403: the auth kinds). A body that ends without `[DONE]` after a choice's non-null
`finish_reason` is complete: Hugging Face's `transformers serve` never sends `[DONE]` (its last
event carries `finish_reason` and usage; tests/test_openai_server.py), while a stream cut
mid-answer has no finish reason.

The lean path is targets/sse_client.py's, shared with Triton's generate_stream. The content check
and usage are read without json.loads where that is safe (`_fast_parts`).

There is no Triton behind this API: no statistics, split or metrics are read, and the
capabilities say so (`unobserved`), for the report to say plainly.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np

from loadtest.core.secrets import Header
from loadtest.core.sessions import Message, conversation_text
from loadtest.core.settings import TlsSettings
from loadtest.core.target import (
    ModelSpec,
    Parts,
    Sample,
    TargetCapabilities,
    TensorSpec,
    Written,
)
from loadtest.errors import TargetError
from loadtest.targets.sse_client import SseEvents, SseQueries, json_value
from loadtest.targets.transport import (
    AUTH_KIND_BY_HTTP_STATUS,
    auth_refusal,
    explain_tls_failure_async,
    plaintext_hint,
)
from loadtest.targets.triton_common import (
    DEFAULT_HTTP_PORT,
    StreamingTargetBase,
    error_kind,
    host_port,
)

COMPLETIONS_PATH = "/v1/completions"
CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
LABEL = "openai stream"  # error kinds: "openai stream: <message>"
PROMPT_INPUT = "text_input"  # llm_known's names, so one sample serves both APIs
MAX_TOKENS_INPUT = "max_tokens"
# The sample ranges llm_known states (model_repository/llm_known/config.pbtxt): prompts of
# 20-200 characters, 8-16 output tokens (engine/samples.py reads "low,high", high exclusive).
SAMPLE_RANGES = {
    f"loadtest.range.{PROMPT_INPUT}": "20,200",
    f"loadtest.range.{MAX_TOKENS_INPUT}": "8,17",
}
UNOBSERVED = (
    "not observed: an OpenAI-compatible API has no Triton statistics, so no server-side "
    "split, server CPU or metrics are read; every figure here is the client's"
)
ANSWER_CHECK_S = 5.0  # the least deadline of GET /v1/models at open
_DONE = b"[DONE]"
_SLOW = -1  # _fast_parts: this event needs json.loads
_TEXT_KEY = b'"text":"'  # completions: choices[].text
_CONTENT_KEY = b'"content":"'  # chat: choices[].delta.content


def openai_model_spec(model: str) -> ModelSpec:
    """What the target sends, as a model description the sample library can draw from."""
    return ModelSpec(
        name=model,
        version="",
        max_batch_size=0,
        inputs=(
            TensorSpec(PROMPT_INPUT, "BYTES", (1,)),
            TensorSpec(MAX_TOKENS_INPUT, "INT32", (1,)),
        ),
        outputs=(),
        parameters=dict(SAMPLE_RANGES),
        platform="openai",
    )


def base_url(url: str, tls: bool) -> str:
    """'scheme://host:port[/path]' of the API, from --url (bare host:port, http(s)://, with
    `user:***@` or a path): no credentials, no trailing '/' or '/v1' (the paths add it)."""
    address = host_port(url, DEFAULT_HTTP_PORT)
    path = urlsplit(url if "://" in url else f"//{url}").path.rstrip("/")
    path = path.removesuffix("/v1")
    return f"{'https' if tls else 'http'}://{address}{path}"


def _text(tensor: np.ndarray) -> str:
    value = json_value(tensor)
    return " ".join(str(v) for v in value) if isinstance(value, list) else str(value)


def request_body(
    sample: Sample,
    model: str,
    chat: bool,
    ignore_eos: bool,
    conversation: Sequence[Message] | None = None,
) -> bytes:
    """One sample's request: its prompt, max_tokens and other inputs, streamed with usage; a
    session's turn sends `conversation` instead of the prompt (chat: the messages with their
    roles; completions: core.sessions.conversation_text)."""
    if PROMPT_INPUT not in sample:
        raise TargetError(
            f"the OpenAI target sends a sample's {PROMPT_INPUT!r} as the prompt; this sample has "
            f"only {', '.join(sorted(sample)) or 'nothing'}"
        )
    body: dict[str, Any] = {
        name: json_value(tensor)
        for name, tensor in sample.items()
        if name not in (PROMPT_INPUT, MAX_TOKENS_INPUT)
    }
    body["model"] = model
    prompt = _text(sample[PROMPT_INPUT])
    if chat:
        body["messages"] = (
            [{"role": "user", "content": prompt}]
            if conversation is None
            else [{"role": m.role, "content": m.text} for m in conversation]
        )
    else:
        body["prompt"] = prompt if conversation is None else conversation_text(conversation)
    max_tokens = (
        int(np.asarray(sample[MAX_TOKENS_INPUT]).reshape(-1)[0])
        if MAX_TOKENS_INPUT in sample
        else None
    )
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if ignore_eos:
        body["ignore_eos"] = True
        if max_tokens is not None:
            body["min_tokens"] = max_tokens
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    return json.dumps(body, separators=(",", ":")).encode()


def error_message(error: Any) -> str:
    """The message of an OpenAI error object (`{"message": ...}`), or the error as text."""
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


def openai_error_message(body: bytes) -> str:
    """The message of a refusal's body: OpenAI's `{"error": {...}}`, an older `{"message":
    ...}`, FastAPI's `{"detail": ...}`; else its first 200 bytes."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("error", "message", "detail"):
            if data.get(key):
                return error_message(data[key])
    return body[:200].decode(errors="replace")


class OpenAiAnswer(SseEvents):
    """One streamed completion's events as they arrive (see SseEvents): content chunks are
    parts (`chunks` counts them), the usage chunk's completion_tokens is `count`, `[DONE]`
    completes it; a body that ends before `[DONE]` is an error unless a choice had finished."""

    __slots__ = ("_chat", "_key", "chunks", "finished")

    def __init__(self, parts: Parts, chat: bool) -> None:
        super().__init__(parts)
        self._chat = chat
        self._key = _CONTENT_KEY if chat else _TEXT_KEY
        self.chunks = 0
        self.finished = False  # a choice's finish_reason was not null

    def _data(self, payload: bytes) -> str | None:
        if self.complete:
            return None  # after [DONE]: nothing more belongs to the answer
        if payload == _DONE:
            self.complete = True
            return None
        chunks = _fast_parts(payload, self._key)
        if chunks == _SLOW:
            error, chunks, tokens, finished, prompt = _parsed(payload, self._chat)
            if error is not None:
                return error
            if tokens is not None:
                self.count = tokens
            if prompt is not None:
                self.prompt_count = prompt
            self.finished = self.finished or finished
        self.new_parts += chunks
        self.chunks += chunks
        return None

    def _ended(self) -> str | None:
        if self.finished:
            return None
        return f"{LABEL}: the answer ended without data: [DONE] (and no finish_reason)"


def _fast_parts(payload: bytes, key: bytes) -> int:
    """An event's content chunks (0 or 1) without json.loads, or _SLOW when it must be parsed.

    Only a JSON object (braces) with no `"error"`, no usage other than `"usage":null` and no
    reasoning field, holding the content key with its opening quote (`"text":"` or
    `"content":"`) exactly once: one choice, whose text is empty when the next byte closes the
    string. A key pattern with its quotes cannot occur inside a JSON string (a quote there is
    escaped), so a match is the key. Anything else (the usage chunk, a null or absent content,
    several choices, spaces after the colon) goes through json.loads.
    """
    if not (payload.startswith(b"{") and payload.endswith(b"}")):
        return _SLOW
    if b'"error"' in payload or b'"reasoning' in payload:
        return _SLOW
    if b'"usage"' in payload and b'"usage":null' not in payload:
        return _SLOW
    if b'"finish_reason"' in payload and b'"finish_reason":null' not in payload:
        return _SLOW
    at = payload.find(key)
    if at < 0 or payload.find(key, at + len(key)) >= 0:
        return _SLOW
    at += len(key)
    return 0 if payload[at : at + 1] == b'"' else 1


def _has_content(choice: Any, chat: bool) -> bool:
    if not isinstance(choice, dict):
        return False
    if not chat:
        return isinstance(choice.get("text"), str) and bool(choice["text"])
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return False
    return any(
        isinstance(delta.get(key), str) and bool(delta[key])
        for key in ("content", "reasoning_content", "reasoning")
    )


def _count(usage: Any, key: str) -> int | None:
    value = usage.get(key) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _parsed(payload: bytes, chat: bool) -> tuple[str | None, int, int | None, bool, int | None]:
    """(error kind, content chunks, usage.completion_tokens, whether a choice finished,
    usage.prompt_tokens) of an event, by json.loads."""
    try:
        event = json.loads(payload)
    except ValueError:
        return f"{LABEL}: an event that is not JSON", 0, None, False, None
    if not isinstance(event, dict):
        return f"{LABEL}: an event that is not a JSON object", 0, None, False, None
    if event.get("error") is not None:
        return error_kind(LABEL, error_message(event["error"])), 0, None, False, None
    usage = event.get("usage")
    tokens, prompt = _count(usage, "completion_tokens"), _count(usage, "prompt_tokens")
    choices = event.get("choices")
    if not isinstance(choices, list):
        return None, 0, tokens, False, prompt
    chunks = sum(_has_content(c, chat) for c in choices)
    finished = any(isinstance(c, dict) and c.get("finish_reason") is not None for c in choices)
    return None, chunks, tokens, finished, prompt


def model_ids(body: bytes) -> list[str]:
    """The model ids of a GET /v1/models answer (`{"data": [{"id": ...}, ...]}`); ValueError
    for anything else."""
    data = json.loads(body)
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError("no 'data' list")
    return [str(e["id"]) for e in entries if isinstance(e, dict) and "id" in e]


class OpenAiSseTarget(StreamingTargetBase):
    """An OpenAI-compatible server: one streamed completion (chat with `chat`) per query."""

    _DEFAULT_PORT = DEFAULT_HTTP_PORT
    _STREAM = "OpenAI stream"

    def __init__(
        self,
        url: str,
        model: str,
        timeout_s: float = 30.0,
        *,
        chat: bool = False,
        ignore_eos: bool = False,
        tls: TlsSettings | None = None,
        headers: tuple[Header, ...] = (),
    ) -> None:
        super().__init__(url, model, "", timeout_s, 0.0, tls=tls, headers=headers)
        self.chat = chat
        self.ignore_eos = ignore_eos
        self.base = base_url(url, self.credentials.tls is not None)
        self._endpoint = self.base + (CHAT_PATH if chat else COMPLETIONS_PATH)
        self._queries = SseQueries(
            LABEL, self._endpoint, self.credentials, timeout_s, openai_error_message
        )
        self._requests: list[bytes] = []  # each sample's POST, built once
        self._samples: Sequence[Sample] = ()  # their other inputs, for a session's turns

    @property
    def description(self) -> str:
        kind = "openai-chat" if self.chat else "openai"
        return f"{kind}{self._tls_mark} {self.base} model {self.model}"

    @property
    def capabilities(self) -> TargetCapabilities:
        """Answers in parts, the pool's waits for a free connection; no Triton statistics
        behind it, said plainly."""
        return TargetCapabilities(
            streams_parts=True,
            plays_turns=True,
            counts_connection_waits=True,
            unobserved=UNOBSERVED,
        )

    @property
    def connection_waits(self) -> int:
        return self._queries.connection_waits

    async def _unreachable(self, exc: BaseException) -> TargetError:
        """The one line for a server that did not answer: over TLS, why the handshake fails;
        in plaintext, whether the server wants TLS."""
        host, _, port = self.url.rpartition(":")
        host = host.strip("[]")
        text = str(exc) or type(exc).__name__
        tls = self.credentials.tls
        if tls is not None:
            reason = await explain_tls_failure_async(host, int(port), tls, ("http/1.1",))
            return TargetError(
                f"cannot reach an OpenAI-compatible server at {self.base}: {reason or text}"
            )
        hint = await plaintext_hint(host, int(port), ("http/1.1",), "https")
        return TargetError(f"cannot reach an OpenAI-compatible server at {self.base}: {text}{hint}")

    async def open(self) -> ModelSpec:
        """GET /v1/models: the server answers, lets us in, and serves the model."""
        session = self._queries.open()
        # A server that accepts connections but never answers: a reason within max(--timeout,
        # 5 s), as the Triton HTTP target's liveness check, not after the 30 s setup deadline.
        answer_s = min(max(self.timeout_s, ANSWER_CHECK_S), self.setup_timeout_s)
        try:
            async with session.get(
                self.base + MODELS_PATH,
                headers=self.credentials.header_dict(),
                timeout=aiohttp.ClientTimeout(total=answer_s),
            ) as response:
                status, body = response.status, await response.read()
        except asyncio.TimeoutError:
            silent = OSError(f"no answer to GET {MODELS_PATH} within {answer_s:g} s")
            raise await self._unreachable(silent) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise await self._unreachable(exc) from None
        auth = AUTH_KIND_BY_HTTP_STATUS.get(status)
        if auth is not None:
            raise TargetError(
                auth_refusal(self.base, auth, f"HTTP {status}", "the OpenAI-compatible server")
            )
        if status != 200:
            raise TargetError(
                f"GET {MODELS_PATH} at {self.base} answered {status} "
                f"({openai_error_message(body)}): not an OpenAI-compatible server?"
            )
        try:
            served = model_ids(body)
        except (ValueError, KeyError) as exc:
            raise TargetError(
                f"GET {MODELS_PATH} at {self.base} is not an OpenAI model list ({exc})"
            ) from None
        if self.model not in served:
            listed = ", ".join(repr(m) for m in served[:10]) or "none"
            more = f" and {len(served) - 10} more" if len(served) > 10 else ""
            raise TargetError(
                f"model {self.model!r} is not served at {self.base} (GET {MODELS_PATH} lists "
                f"{listed}{more}); pass one of them with --model"
            )
        self._spec = openai_model_spec(self.model)
        return self._spec

    async def prepare(self, samples: Sequence[Sample]) -> None:
        assert self._spec is not None, "open() first"
        self._samples = samples
        self._requests = [
            self._queries.request(request_body(sample, self.model, self.chat, self.ignore_eos))
            for sample in samples
        ]
        try:
            await self._queries.warm()
        except OSError as exc:
            raise await self._unreachable(exc) from None
        if self._requests:
            try:
                await self.infer_outputs(0)
            except ValueError as exc:
                kind = str(exc)
                if kind in AUTH_KIND_BY_HTTP_STATUS.values():
                    raise TargetError(
                        auth_refusal(self.base, kind, "HTTP", "the OpenAI-compatible server")
                    ) from None
                raise TargetError(
                    f"model {self.model!r} at {self.base} rejected the request: {kind}"
                ) from None

    # -- one query ------------------------------------------------------------------------------
    def start_parts(self, sample_index: int, parts: Parts, written: Written | None = None) -> None:
        self._queries.start(self._requests[sample_index], OpenAiAnswer(parts, self.chat), written)

    def start_turn(
        self, sample_index: int, conversation: Sequence[Message], max_tokens: int, parts: Parts
    ) -> None:
        """One turn: its body built now (the conversation exists only now), max_tokens the
        turn's."""
        sample = dict(self._samples[sample_index])
        sample[MAX_TOKENS_INPUT] = np.array([max_tokens], dtype=np.int32)
        body = request_body(sample, self.model, self.chat, self.ignore_eos, conversation)
        self._queries.start(self._queries.request(body), OpenAiAnswer(parts, self.chat))

    async def close(self) -> None:
        await self._queries.close()
