"""What the gRPC and HTTP Triton targets share: URL handling, config -> ModelSpec, error kinds,
a tensor's bytes as Triton takes them (BYTES elements length-prefixed), and the setup-time
properties every Triton target answers alike (`TritonTargetBase`, `StreamingTargetBase`).

Both protocols must mean the same thing, so the model description is read from the same source
(the model *config*, whose dims exclude the batch dimension) and errors are reduced to the same
short, low-cardinality kinds for the errors-by-kind table.
"""

from __future__ import annotations

import asyncio
import json
import re
import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from loadtest.core.records import SERVER_TIMEOUT
from loadtest.core.secrets import Header, redact_url
from loadtest.core.sessions import Message, conversation_text
from loadtest.core.settings import SharedMemoryKind, TlsSettings, setup_timeout
from loadtest.core.target import (
    Done,
    Kept,
    ModelSpec,
    Parts,
    Sample,
    TargetCapabilities,
    TensorSpec,
    TritonEndpoint,
    Written,
    is_bytes_tensor,
)
from loadtest.core.units import s_to_us
from loadtest.errors import TargetError
from loadtest.targets.transport import Credentials

if TYPE_CHECKING:  # the gRPC stack is imported only by the gRPC targets (see targets/__init__)
    import tritonclient.grpc as grpcclient
    from tritonclient.grpc import service_pb2

DEFAULT_GRPC_PORT = 8001
DEFAULT_HTTP_PORT = 8000
DEFAULT_TLS_PORT = 443  # an https:// or grpcs:// URL without a port


def host_port(url: str, default_port: int) -> str:
    """'grpc://h:p', 'https://u:***@h:p', 'h:p' or 'h' -> 'h:p' (what tritonclient expects).

    An https:// or grpcs:// URL without a port means 443, as everywhere else.
    """
    text = url if "://" in url else f"//{url}"
    if text.split("://", 1)[0].lower() in ("https", "grpcs"):
        default_port = DEFAULT_TLS_PORT
    try:
        parts = urlsplit(text)
        port = parts.port or default_port
    except ValueError as exc:
        raise TargetError(f"invalid --url {redact_url(url)!r}: {exc}") from None
    if not parts.hostname:
        raise TargetError(f"invalid --url {redact_url(url)!r}: no host")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{host}:{port}"


def tensor_bytes(tensor: np.ndarray) -> bytes:
    """A tensor's contents as Triton reads them from a request or a shared-memory region:
    numeric tensors little-endian in C order; BYTES tensors each element, in C order, as its
    4-byte little-endian length and then its bytes (a str element as UTF-8)."""
    if not is_bytes_tensor(tensor):
        little = tensor.astype(tensor.dtype.newbyteorder("<"), copy=False)
        return np.ascontiguousarray(little).tobytes()
    parts = []
    for element in tensor.flat:
        data = element.encode() if isinstance(element, str) else bytes(element)
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def _datatype(config_type: str) -> str:
    return config_type.removeprefix("TYPE_").replace("STRING", "BYTES")


def _tensors(entries: list[Mapping[str, Any]]) -> tuple[TensorSpec, ...]:
    return tuple(
        TensorSpec(
            name=str(e["name"]),
            datatype=_datatype(str(e["data_type"])),
            shape=tuple(int(d) for d in e.get("dims", [])),
        )
        for e in entries
    )


def model_spec_from_config(config: Mapping[str, Any], version: str) -> ModelSpec:
    """A ModelSpec from Triton's JSON model config (the same shape over gRPC and HTTP)."""
    parameters = {
        str(key): str(value.get("string_value", ""))
        for key, value in (config.get("parameters") or {}).items()
    }
    return ModelSpec(
        name=str(config["name"]),
        version=version,
        max_batch_size=int(config.get("max_batch_size", 0)),
        inputs=_tensors(config.get("input", [])),
        outputs=_tensors(config.get("output", [])),
        parameters=parameters,
        platform=str(config.get("platform") or config.get("backend") or ""),
    )


def is_decoupled(config: Mapping[str, Any]) -> bool:
    """Whether Triton's JSON model config declares `model_transaction_policy.decoupled`: a
    streaming model, answered only over gRPC ModelStreamInfer (or HTTP generate_stream)."""
    policy = config.get("model_transaction_policy")
    return isinstance(policy, Mapping) and bool(policy.get("decoupled", False))


def refuse_decoupled(config: Mapping[str, Any], model: str, protocol: str) -> None:
    """One clear line instead of Triton's refusal of every query: a decoupled model needs the
    stream (--protocol grpc-stream or http-stream); raises TargetError for one."""
    if is_decoupled(config):
        raise TargetError(
            f"model {model!r} is decoupled (it streams its answer in parts), which Triton serves "
            f"only on a stream, not over {protocol}: use --protocol grpc-stream or http-stream"
        )


_NUMBERS = re.compile(r"\d+")
# How Triton words the rejection of a request whose "timeout" parameter expired in the scheduler
# queue (core: dynamic_batch_scheduler.cc, status UNAVAILABLE; HTTP 503 or 400 by version).
SERVER_TIMEOUT_MESSAGE = "Request timeout expired"


def error_kind(prefix: str, message: str, limit: int = 90) -> str:
    """A short, stable label: digits collapsed so per-request details don't multiply the kinds.

    The server's own deadline (--server-timeout) is one kind whatever the protocol.
    """
    if SERVER_TIMEOUT_MESSAGE.lower() in message.lower():
        return SERVER_TIMEOUT
    first_line = message.strip().splitlines()[0] if message.strip() else "no message"
    return f"{prefix}: {_NUMBERS.sub('N', first_line)[:limit]}"


def http_error_message(body: bytes) -> str:
    """The message of Triton's HTTP error body (`{"error": ...}`), else its first 200 bytes."""
    try:
        return str(json.loads(body).get("error", ""))
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace")


def model_infer_request(
    model: str,
    version: str,
    inputs: list[grpcclient.InferInput],
    outputs: list[grpcclient.InferRequestedOutput] | None,
    server_timeout_us: int | None,
) -> service_pb2.ModelInferRequest:
    """A sample's ModelInferRequest as tritonclient builds it (serialized once, in `prepare`),
    with Triton's "timeout" parameter when `server_timeout_us` is set."""
    from tritonclient.grpc._utils import _get_inference_request

    return _get_inference_request(
        model_name=model,
        inputs=inputs,
        model_version=version,
        request_id="",
        outputs=outputs,
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=0,
        timeout=server_timeout_us,
        parameters=None,
    )


class StampedSend:
    """What the gRPC targets hand grpc.aio as "the request": the prebuilt bytes plus the
    runner's `written` stamp, called by `write_now` at the moment grpc.aio writes it."""

    __slots__ = ("wire", "written")

    def __init__(self, wire: bytes, written: Written | None) -> None:
        self.wire = wire
        self.written = written


def write_now(send: StampedSend) -> bytes:
    """grpc.aio's request serializer for a StampedSend: stamps the send, returns the bytes."""
    if send.written is not None:
        send.written()
    return send.wire


class AwaitedParts:
    """A Parts that an awaiting caller reads at the end (the streaming targets' warm-up,
    `infer` and `infer_outputs`)."""

    def __init__(self) -> None:
        self.future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self.parts = 0
        self.count: int | None = None

    def first(self) -> None:
        pass

    def part(self, count: int = 1) -> None:
        self.parts += count

    def final(self, count: int | None, prompt_count: int | None = None) -> None:
        self.count = count

    def done(self, error: str | None) -> None:
        if not self.future.done():
            self.future.set_result(error)


class TritonTargetBase:
    """What the four Triton targets share at setup: their common settings, description, the
    server's version read by `open`, and the endpoint observe/ reads Triton's statistics from.
    Nothing on the per-query path goes through it."""

    _DEFAULT_PORT: int  # the port of a --url without one

    def __init__(
        self,
        url: str,
        model: str,
        version: str = "",
        timeout_s: float = 30.0,
        server_timeout_s: float = 0.0,
        *,
        tls: TlsSettings | None = None,
        headers: tuple[Header, ...] = (),
    ) -> None:
        self.url = host_port(url, self._DEFAULT_PORT)
        self.model = model
        self.version = version
        self.timeout_s = timeout_s
        self.credentials = Credentials(tls, headers)
        self.setup_timeout_s = setup_timeout(timeout_s)
        # Triton's "timeout" parameter (µs) on every load request, None for none.
        self.server_timeout_us = round(s_to_us(server_timeout_s)) if server_timeout_s else None
        self._spec: ModelSpec | None = None
        self._server_version = ""
        self._init_own()

    def _init_own(self) -> None:
        """A target's own state, set up after the common settings (construction only)."""

    @property
    def server_version(self) -> str:
        return self._server_version

    def start_turn(
        self, sample_index: int, conversation: Sequence[Message], max_tokens: int, parts: Parts
    ) -> None:
        raise NotImplementedError("this target plays no sessions (capabilities.plays_turns)")

    @property
    def _tls_mark(self) -> str:
        return " (TLS)" if self.credentials.tls is not None else ""

    def _describe(self, label: str) -> str:
        """'triton <label> host:port model m [vN]': every Triton target's description."""
        version = f" v{self.version}" if self.version else ""
        return f"triton {label} {self.url} model {self.model}{version}"

    def _triton_endpoint(self, protocol: str) -> TritonEndpoint:
        """Where Triton's statistics are read: same protocol, address, TLS and headers."""
        return TritonEndpoint(
            protocol,
            self.url,
            self.model,
            self.version,
            self.credentials.tls,
            headers=self.credentials.headers,
        )


PROMPT_INPUT = "text_input"  # where a session's conversation goes (TensorRT-LLM's name)
MAX_TOKENS_INPUT = "max_tokens"


def turn_sample(
    sample: Sample, conversation: Sequence[Message], max_tokens: int
) -> dict[str, np.ndarray]:
    """A session turn's inputs: the sample's, with `text_input` the conversation so far as one
    text (KServe has no roles) and `max_tokens` the turn's, each in the sample's own dtype."""
    turn = dict(sample)
    for name, value in (
        (PROMPT_INPUT, conversation_text(conversation).encode()),
        (MAX_TOKENS_INPUT, max_tokens),
    ):
        if name in turn:
            like = np.asarray(turn[name])
            tensor = np.empty(like.shape, dtype=like.dtype)
            tensor[...] = value
            turn[name] = tensor
    return turn


class StreamingTargetBase(TritonTargetBase):
    """The streaming targets (gRPC ModelStreamInfer, HTTP generate_stream): answers in parts,
    no callback send, so no connection waits or transparent retries of their own to count."""

    _STATS_PROTOCOL: str  # the protocol Triton's statistics are read over ("grpc" or "http")
    _LABEL: str  # the description's protocol word
    _STREAM: str  # how errors name it: "gRPC stream", "HTTP stream"
    decoupled = False  # the model streams its answer (model_transaction_policy), read by `open`

    @property
    def description(self) -> str:
        return self._describe(f"{self._LABEL}{self._tls_mark}")

    @property
    def capabilities(self) -> TargetCapabilities:
        """Answers in parts, and Triton's statistics behind it (same protocol, same address)."""
        return TargetCapabilities(
            streams_parts=True, triton=self._triton_endpoint(self._STATS_PROTOCOL)
        )

    @property
    def connection_waits(self) -> int:
        return 0

    @property
    def transparent_retries(self) -> int:
        # The unary targets count the queries sent again. A grpc-stream stream the server never
        # took is sent again whole (its queries with it) by the wire client, which counts
        # streams, not queries: not reported as queries here.
        return 0

    def start_parts(self, sample_index: int, parts: Parts, written: Written | None = None) -> None:
        raise NotImplementedError  # each streaming target's own load path

    def _start_whole(self, sample_index: int, parts: Parts) -> None:
        """Starts the query `infer_outputs` reads whole (the load path's unless overridden)."""
        self.start_parts(sample_index, parts)

    def start_infer(self, sample_index: int, done: Done, written: Written | None = None) -> None:
        raise NotImplementedError(f"the {self._STREAM} target answers in parts (start_parts)")

    async def infer(self, sample_index: int) -> str | None:
        answer = AwaitedParts()
        self.start_parts(sample_index, answer)
        return await answer.future

    async def infer_outputs(self, sample_index: int) -> dict[str, np.ndarray]:
        """One streamed answer, whole: `num_output_tokens` summed (-1 = none sent) and the
        response (event) count as `responses` (raises ValueError on an error)."""
        answer = AwaitedParts()
        self._start_whole(sample_index, answer)
        error = await asyncio.wait_for(answer.future, self.setup_timeout_s)
        if error is not None:
            raise ValueError(error)
        count = -1 if answer.count is None else answer.count
        return {
            "num_output_tokens": np.array([count], dtype=np.int64),
            "responses": np.array([answer.parts], dtype=np.int64),
        }

    async def infer_kept(self, sample_index: int) -> tuple[str | None, Kept]:
        raise NotImplementedError(f"the {self._STREAM} target does not keep answers")

    def decode_kept(self, kept: Kept) -> dict[str, np.ndarray]:
        raise NotImplementedError(f"the {self._STREAM} target does not keep answers")

    def use_shared_memory(self, kind: SharedMemoryKind, tag: str) -> None:
        raise TargetError(f"--shared-memory {kind.value} is not offered on the {self._STREAM}")
