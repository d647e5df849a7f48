"""Triton's gRPC `ModelStreamInfer`: many streamed (decoupled, LLM) requests on one stream.

A decoupled model answers a request with any number of responses, so Triton refuses it over HTTP
`/infer` and unary `ModelInfer`; the bidirectional `ModelStreamInfer` stream is the gRPC way in
(docs/STREAMING.md, with sources). This target keeps ONE stream on its channel and multiplexes
every query on it: each request carries its own id, every response echoes it, and the responses
are demultiplexed by that id. Per query, the first response is `Parts.part` (the first one also
marks the first token), each later one `Parts.part`, the `num_output_tokens` of every response
summed is the final count (the server's token count; vLLM and our models send the per-response
delta), and the response whose `triton_final_response` parameter is true ends it.

The request is a `ModelInferRequest` built here, not by tritonclient's `stream_infer`, which
refuses every `triton_*` parameter: each carries `triton_enable_empty_final_response = true`, so a
model that ends with a FINAL flag and no data still ends the query (an empty final response).
Each sample's request is serialized once; per query only its id is appended (a protobuf field
written again replaces the earlier value), then grpc.aio writes it, stamping the send
(`written`) when it goes to gRPC's core, as the unary gRPC target does.

Errors: a response with an `error_message` is that query's error ("grpc stream: ..."); a stream
that ends or breaks fails every query still on it, and the next query opens a new one. The
per-query deadline (--timeout) counts the query as "timeout" and drops its later responses. A
request cannot be cancelled alone on a shared stream (cancelling the call cancels them all), so
a timeout retires the stream: new queries open the next one, and the retired stream is cancelled
once its other queries are over, which cancels the timed-out request on the server too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

import grpc
import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from loadtest.core.records import TIMEOUT
from loadtest.core.sessions import Message
from loadtest.core.target import (
    NUMPY_TO_TRITON,
    ModelSpec,
    Parts,
    Sample,
    TargetCapabilities,
    Written,
)
from loadtest.errors import TargetError
from loadtest.targets.transport import grpc_auth_kind, grpc_client
from loadtest.targets.triton_common import (
    DEFAULT_GRPC_PORT,
    StampedSend,
    StreamingTargetBase,
    error_kind,
    is_decoupled,
    model_infer_request,
    model_spec_from_config,
    turn_sample,
    write_now,
)

MODEL_STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"
FINAL_PARAMETER = "triton_final_response"
EMPTY_FINAL_PARAMETER = "triton_enable_empty_final_response"
TOKEN_COUNT_OUTPUT = "num_output_tokens"
TEXT_OUTPUT = "text_output"
_COUNT_DTYPES = {"UINT32": "<u4", "INT32": "<i4", "UINT64": "<u8", "INT64": "<i8"}
_ID_FIELD_TAG = b"\x1a"  # ModelInferRequest.id: field 3, length-delimited


# A stream whose connection closed under it (the server or something between restarted it)
# says this; before the first answer it is a fault of the route, not of the inputs, so the
# probe tries a fresh stream (grpc-core itself re-sends unary calls that were never processed).
LOST_STREAM = "grpc stream UNAVAILABLE"
PROBE_ATTEMPTS = 3
PROBE_RETRY_S = 0.2


def id_field(request_id: str) -> bytes:
    """The serialized `id` field of a ModelInferRequest, to append to a prebuilt request."""
    raw = request_id.encode()
    length, varint = len(raw), bytearray()
    while True:
        byte = length & 0x7F
        length >>= 7
        varint.append(byte | (0x80 if length else 0))
        if not length:
            return _ID_FIELD_TAG + bytes(varint) + raw


def token_count(response: service_pb2.ModelInferResponse) -> int | None:
    """The `num_output_tokens` this response carries (summed over its elements), None if none."""
    for k, output in enumerate(response.outputs):
        if output.name == TOKEN_COUNT_OUTPUT and k < len(response.raw_output_contents):
            dtype = _COUNT_DTYPES.get(output.datatype)
            if dtype is None:
                return None
            return int(np.frombuffer(response.raw_output_contents[k], dtype=dtype).sum())
    return None


@dataclass
class _Query:
    """One query in flight on the stream: where its events go, its token count so far."""

    parts: Parts
    deadline: asyncio.TimerHandle | None
    count: int | None = None


class _Stream:
    """One ModelStreamInfer call: what it sends, its reader, the queries in flight on it."""

    def __init__(self, outbox: asyncio.Queue[StampedSend | None], call: grpc.aio.StreamStreamCall):
        self.outbox = outbox
        self.call = call
        self.reader: asyncio.Task[None] | None = None
        self.pending: dict[str, _Query] = {}


class TritonStreamTarget(StreamingTargetBase):
    """Triton gRPC ModelStreamInfer: one multiplexed stream, queries demultiplexed by id."""

    _DEFAULT_PORT = DEFAULT_GRPC_PORT

    _STATS_PROTOCOL = "grpc"
    _STREAM = "gRPC stream"
    _LABEL = "grpc-stream"

    def _init_own(self) -> None:
        """This target's own state, after the settings every Triton target takes."""
        self._metadata = tuple(self.credentials.header_dict(lower=True).items()) or None
        self._client: grpcclient.InferenceServerClient | None = None
        self._wire: list[bytes] = []
        self._samples: Sequence[Sample] = ()  # for session turns, built from them
        self._next_id = 0
        self._current: _Stream | None = None  # where new queries go
        self._streams: set[_Stream] = set()  # every open stream (retired ones until they end)

    async def open(self) -> ModelSpec:
        self._client = grpc_client(self.url, self.credentials)
        setup = self.setup_timeout_s
        try:
            metadata = await self._client.get_server_metadata(as_json=True, client_timeout=setup)
            self._server_version = str(metadata.get("version", ""))
            response = await self._client.get_model_config(
                self.model, self.version, as_json=True, client_timeout=setup
            )
            ready = await self._client.is_model_ready(
                self.model, self.version, client_timeout=setup
            )
        except InferenceServerException as exc:
            raise TargetError(
                f"model {self.model!r} at {self.url} (gRPC stream): {exc.message()}"
            ) from None
        if not ready:
            raise TargetError(f"model {self.model!r} at {self.url} is not ready")
        self.decoupled = is_decoupled(response["config"])
        self._spec = model_spec_from_config(response["config"], self.version)
        return self._spec

    async def prepare(self, samples: Sequence[Sample]) -> None:
        assert self._spec is not None, "open() first"
        self._samples = samples
        self._wire = [self._serialized(sample) for sample in samples]
        if not self._wire:
            return
        for attempt in range(1, PROBE_ATTEMPTS + 1):
            try:
                await self.infer_outputs(0)
                return
            except ValueError as exc:
                if not str(exc).startswith(LOST_STREAM):
                    raise TargetError(f"model {self.model!r} rejected the inputs: {exc}") from None
                if attempt == PROBE_ATTEMPTS:
                    raise TargetError(
                        f"model {self.model!r} at {self.url}: the gRPC stream's connection was "
                        f"lost {PROBE_ATTEMPTS} times before the first answer ({exc})"
                    ) from None
                await asyncio.sleep(PROBE_RETRY_S)

    def _serialized(self, sample: Sample) -> bytes:
        inputs = []
        for name, tensor in sample.items():
            datatype = NUMPY_TO_TRITON.get(tensor.dtype.name, "BYTES")
            infer_input = grpcclient.InferInput(name, list(tensor.shape), datatype)
            infer_input.set_data_from_numpy(tensor)
            inputs.append(infer_input)
        request = model_infer_request(
            self.model, self.version, inputs, None, self.server_timeout_us
        )
        request.parameters[EMPTY_FINAL_PARAMETER].bool_param = True
        return bytes(request.SerializeToString())

    # -- the streams -------------------------------------------------------------------------
    def _stream(self) -> _Stream:
        """The stream new queries go on, opened (with its reader) if there is none."""
        if self._current is not None:
            return self._current
        assert self._client is not None, "open() first"
        outbox: asyncio.Queue[StampedSend | None] = asyncio.Queue()
        method = self._client._channel.stream_stream(
            MODEL_STREAM_INFER,
            request_serializer=write_now,
            response_deserializer=service_pb2.ModelStreamInferResponse.FromString,
        )
        stream = _Stream(outbox, method(_requests(outbox), metadata=self._metadata))
        stream.reader = asyncio.get_running_loop().create_task(self._read(stream))
        self._streams.add(stream)
        self._current = stream
        return stream

    async def _read(self, stream: _Stream) -> None:
        kind = "grpc stream: the stream ended"
        try:
            async for response in stream.call:
                self._answered(stream, response)
        except grpc.aio.AioRpcError as exc:
            name = exc.code().name if exc.code() else "error"
            details = exc.details() or ""
            kind = grpc_auth_kind(name, details) or error_kind(f"grpc stream {name}", details)
        except asyncio.CancelledError:
            kind = "grpc stream: closed"
            raise
        finally:
            self._streams.discard(stream)
            if self._current is stream:
                self._current = None
            stream.outbox.put_nowait(None)
            failed, stream.pending = stream.pending, {}
            for query in failed.values():
                if query.deadline is not None:
                    query.deadline.cancel()
                query.parts.done(kind)

    def _answered(self, stream: _Stream, message: service_pb2.ModelStreamInferResponse) -> None:
        response = message.infer_response
        query = stream.pending.get(response.id)
        if query is None:
            return  # a query already over (timed out): its late responses are dropped
        if message.error_message:
            self._end(stream, response.id, query, error_kind("grpc stream", message.error_message))
            return
        if response.outputs:  # an empty final response carries no part
            query.parts.part()
            count = token_count(response)
            if count is not None:
                query.count = (query.count or 0) + count
        final = response.parameters.get(FINAL_PARAMETER)
        if final is not None and final.bool_param:
            query.parts.final(query.count)
            self._end(stream, response.id, query, None)

    def _end(self, stream: _Stream, request_id: str, query: _Query, error: str | None) -> None:
        del stream.pending[request_id]
        if query.deadline is not None:
            query.deadline.cancel()
        query.parts.done(error)
        if stream is not self._current and not stream.pending:
            # A retired stream whose live queries are all over: cancelling it cancels the
            # timed-out requests still running on the server (Triton cancels a cancelled
            # stream's requests; a model honouring is_cancelled() stops them).
            stream.call.cancel()

    def _expired(self, stream: _Stream, request_id: str) -> None:
        """--timeout: the query is a timeout now. A request cannot be cancelled alone on a shared
        stream, so the stream is retired (new queries open the next one) and cancelled as soon
        as its other queries are over."""
        query = stream.pending.get(request_id)
        if query is None:
            return
        query.deadline = None
        if self._current is stream:
            self._current = None
        self._end(stream, request_id, query, TIMEOUT)

    @property
    def capabilities(self) -> TargetCapabilities:
        return replace(super().capabilities, plays_turns=True)

    def start_parts(self, sample_index: int, parts: Parts, written: Written | None = None) -> None:
        self._send(self._wire[sample_index], parts, written)

    def start_turn(
        self, sample_index: int, conversation: Sequence[Message], max_tokens: int, parts: Parts
    ) -> None:
        """One turn: the sample's inputs with the conversation and the turn's max_tokens, its
        request built for this turn alone, sent on the shared stream as any query."""
        sample = turn_sample(self._samples[sample_index], conversation, max_tokens)
        self._send(self._serialized(sample), parts, None)

    def _send(self, wire: bytes, parts: Parts, written: Written | None) -> None:
        """One request on the current stream, under a fresh id, with its deadline."""
        stream = self._stream()
        self._next_id += 1
        request_id = str(self._next_id)
        deadline = (
            asyncio.get_running_loop().call_later(self.timeout_s, self._expired, stream, request_id)
            if self.timeout_s > 0
            else None
        )
        stream.pending[request_id] = _Query(parts, deadline)
        stream.outbox.put_nowait(StampedSend(wire + id_field(request_id), written))

    async def close(self) -> None:
        self._current = None
        streams, self._streams = list(self._streams), set()
        for stream in streams:
            stream.outbox.put_nowait(None)
            if stream.reader is not None:
                stream.reader.cancel()
        await asyncio.gather(
            *(stream.reader for stream in streams if stream.reader is not None),
            return_exceptions=True,
        )
        if self._client is not None:
            await self._client.close()
            self._client = None


async def _requests(outbox: asyncio.Queue[StampedSend | None]) -> AsyncIterator[StampedSend]:
    """What the stream sends: each query's request as it is queued, until None closes it."""
    while True:
        send = await outbox.get()
        if send is None:
            return
        yield send
