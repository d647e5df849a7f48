"""Triton's gRPC `ModelStreamInfer`: many streamed (decoupled, LLM) requests on one stream.

A decoupled model answers a request with any number of responses, so Triton refuses it over HTTP
`/infer` and unary `ModelInfer`; the bidirectional `ModelStreamInfer` stream is the gRPC way in
(docs/STREAMING.md, with sources). This target keeps ONE stream open and multiplexes every query
on it: each request carries its own id, every response echoes it, and the responses are
demultiplexed by that id. Per query, the responses carrying outputs are its parts (the first
also marks the first token), the `num_output_tokens` of every response summed is the final count
(the server's token count; vLLM and our models send the per-response delta), and the response
whose `triton_final_response` parameter is true ends it.

The request is a `ModelInferRequest` built here, not by tritonclient's `stream_infer`, which
refuses every `triton_*` parameter: each carries `triton_enable_empty_final_response = true`, so a
model that ends with a FINAL flag and no data still ends the query (an empty final response).
Each sample's request is serialized once; per query only its id is appended (a protobuf field
written again replaces the earlier value).

Two clients carry the stream (`load_client`, --grpc-client, as for --protocol grpc):

- "wire" (the default): a streaming call of wire/grpc_wire.py on the event loop's own socket.
  A request is written the moment the runner asks (the send stamped then, `written()` only if
  the stream was still opening), and the responses of one network read are reported together
  after it is parsed: one clock reading for all of a query's responses in that read, as the SSE
  targets do (`Parts.part(count)`). grpc.aio cost 100-170 µs of client CPU per token here
  (stream-client-2026-12-06-1927/-1928); docs/STREAMING.md has what this path costs.
- "grpcio": grpc.aio's stream on tritonclient's channel, each request stamped when grpc.aio hands
  it to gRPC's core, each response reported as it comes. Kept as a cross-check of the wire
  client.

Errors: a response with an `error_message` is that query's error ("grpc stream: ..."); a stream
that ends or breaks fails every query still on it, and the next query opens a new one. The
per-query deadline (--timeout) counts the query as "timeout" and drops its later responses. A
request cannot be cancelled alone on a shared stream (cancelling the call cancels them all), so
a timeout retires the stream: new queries open the next one, and the retired stream is cancelled
once its other queries are over, which cancels the timed-out request on the server too. A
stream the server (or a proxy's GOAWAY) says it never took is sent again whole by the wire
client, as grpc-core's transparent retry does, while its requests are still kept (until the
server's first headers, 256 KiB at most); otherwise its queries fail UNAVAILABLE and the next
query opens a new stream, on a new connection if need be.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

import grpc
import numpy as np
import tritonclient.grpc.aio as grpcclient
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from loadtest.core.records import TIMEOUT
from loadtest.core.secrets import Header
from loadtest.core.sessions import Message
from loadtest.core.settings import DEFAULT_GRPC_KEEPALIVE_TIMEOUT_S, GRPC_CLIENTS, TlsSettings
from loadtest.core.target import (
    NUMPY_TO_TRITON,
    ModelSpec,
    Parts,
    Sample,
    TargetCapabilities,
    Written,
)
from loadtest.errors import TargetError
from loadtest.targets.grpc_proxy_env import refuse_proxy_for_wire
from loadtest.targets.transport import connected_wire, grpc_auth_kind, grpc_client
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
from loadtest.wire.grpc_wire import OK, GrpcWire, StreamingCall, framed
from loadtest.wire.protobuf_fields import length_delimited

MODEL_STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"
FINAL_PARAMETER = "triton_final_response"
EMPTY_FINAL_PARAMETER = "triton_enable_empty_final_response"
TOKEN_COUNT_OUTPUT = "num_output_tokens"
TEXT_OUTPUT = "text_output"
_COUNT_DTYPES = {"UINT32": "<u4", "INT32": "<i4", "UINT64": "<u8", "INT64": "<i8"}
ID_FIELD = 3  # ModelInferRequest.id (and ModelInferResponse.id)


# A stream whose connection closed under it (the server or something between restarted it)
# says this; before the first answer it is a fault of the route, not of the inputs, so the
# probe tries a fresh stream (grpc-core itself re-sends unary calls that were never processed).
LOST_STREAM = "grpc stream UNAVAILABLE"
PROBE_ATTEMPTS = 3
PROBE_RETRY_S = 0.2


def id_field(request_id: str) -> bytes:
    """The serialized `id` field of a ModelInferRequest, to append to a prebuilt request."""
    return length_delimited(ID_FIELD, request_id.encode())


def token_count(response: service_pb2.ModelInferResponse) -> int | None:
    """The `num_output_tokens` this response carries (summed over its elements), None if none."""
    return TokenCounts().of(response)


class TokenCounts:
    """Reads `num_output_tokens` from each response of a stream. A server lists its outputs in
    the same order in every response, so where the count was last found is looked at first:
    walking the outputs (protobuf objects made per access) was a quarter of the wire client's
    CPU per token (py-spy, benchmarks/stream_client.py)."""

    __slots__ = ("at",)

    def __init__(self, at: int = 0) -> None:
        self.at = at

    def of(self, response: service_pb2.ModelInferResponse) -> int | None:
        outputs = response.outputs
        at = self.at
        if at < len(outputs) and (output := outputs[at]).name == TOKEN_COUNT_OUTPUT:
            return _count(response, at, output.datatype)
        for k, output in enumerate(outputs):
            if output.name == TOKEN_COUNT_OUTPUT:
                self.at = k
                return _count(response, k, output.datatype)
        return None


def _count(response: service_pb2.ModelInferResponse, k: int, datatype: str) -> int | None:
    contents = response.raw_output_contents
    if k >= len(contents):
        return None
    raw = contents[k]
    if len(raw) == 4 and datatype == "UINT32":  # one element: the usual case
        return int.from_bytes(raw, "little")
    dtype = _COUNT_DTYPES.get(datatype)
    if dtype is None:
        return None
    return int(np.frombuffer(raw, dtype=dtype).sum())


@dataclass
class _Query:
    """One query in flight on the stream: where its events go, its token count so far, and
    its responses of the current read not yet reported (the wire client's)."""

    parts: Parts
    deadline: asyncio.TimerHandle | None
    count: int | None = None
    unreported: int = 0


class _Stream:
    """One ModelStreamInfer call and the queries in flight on it, whichever client carries it:
    the wire client's `call`, or grpc.aio's (`aio_call`, fed from `outbox`, read by `reader`)."""

    def __init__(self, compression: str | None = None) -> None:
        self.compression = compression  # the wire client's, for each request message
        self.pending: dict[str, _Query] = {}
        self.call: StreamingCall | None = None
        self.outbox: asyncio.Queue[StampedSend | None] | None = None
        self.aio_call: grpc.aio.StreamStreamCall | None = None
        self.reader: asyncio.Task[None] | None = None

    def send(self, request: bytes, written: Written | None) -> None:
        if self.call is not None:
            self.call.send(framed(request, self.compression), written)
        else:
            assert self.outbox is not None
            self.outbox.put_nowait(StampedSend(request, written))

    def cancel(self) -> None:
        """Cancels the call, and with it its requests still running on the server (Triton
        cancels a cancelled stream's requests; a model honouring is_cancelled() stops them)."""
        if self.call is not None:
            self.call.cancel()
        elif self.aio_call is not None:
            self.aio_call.cancel()

    def close(self) -> None:
        if self.call is not None:
            self.call.cancel()
        if self.outbox is not None:
            self.outbox.put_nowait(None)
        if self.reader is not None:
            self.reader.cancel()


class TritonStreamTarget(StreamingTargetBase):
    """Triton gRPC ModelStreamInfer: one multiplexed stream, queries demultiplexed by id."""

    _DEFAULT_PORT = DEFAULT_GRPC_PORT

    _STATS_PROTOCOL = "grpc"
    _STREAM = "gRPC stream"
    _LABEL = "grpc-stream"

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
        load_client: str = "wire",
        grpc_compression: str | None = None,
        keepalive_s: float = 0.0,
        keepalive_timeout_s: float = DEFAULT_GRPC_KEEPALIVE_TIMEOUT_S,
    ) -> None:
        if load_client not in GRPC_CLIENTS:
            raise ValueError(f"load_client {load_client!r}: use one of {GRPC_CLIENTS}")
        self.load_client = load_client
        # The wire client's request compression ("gzip", "deflate"), keepalive PING interval and
        # timeout: a long-lived stream is what an idle-timeout in between cuts first.
        self.grpc_compression = grpc_compression
        self.keepalive_s = keepalive_s
        self.keepalive_timeout_s = keepalive_timeout_s
        super().__init__(url, model, version, timeout_s, server_timeout_s, tls=tls, headers=headers)

    def _init_own(self) -> None:
        """This target's own state, after the settings every Triton target takes."""
        self._metadata = tuple(self.credentials.header_dict(lower=True).items()) or None
        self._client: grpcclient.InferenceServerClient | None = None
        self._wire_client: GrpcWire | None = None
        self._wire: list[bytes] = []
        self._samples: Sequence[Sample] = ()  # for session turns, built from them
        self._next_id = 0
        self._current: _Stream | None = None  # where new queries go
        self._streams: set[_Stream] = set()  # every open stream (retired ones until they end)
        self._touched: list[_Query] = []  # queries with responses of this read unreported
        self._token_counts = TokenCounts()

    @property
    def description(self) -> str:
        client = "" if self.load_client == "wire" else f" ({self.load_client})"
        return self._describe(f"{self._LABEL}{self._tls_mark}{client}")

    def _refuse_proxy(self) -> None:
        """The wire client cannot follow a CONNECT proxy grpcio would use (grpc_proxy_env.py);
        grpc.aio routes setup and load alike."""
        if self.load_client == "wire":
            refuse_proxy_for_wire(self.url)

    async def open(self) -> ModelSpec:
        self._refuse_proxy()
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
        if self.load_client == "wire" and self._wire_client is None:
            await self._open_wire()
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

    async def _open_wire(self) -> None:
        """The wire client's HTTP/2 connection (TLS: ALPN h2), opened before the run."""
        wire = await connected_wire(
            self.url,
            MODEL_STREAM_INFER,
            self.credentials,
            self.setup_timeout_s,
            self.setup_timeout_s,
            compression=self.grpc_compression,
            keepalive_s=self.keepalive_s,
            keepalive_timeout_s=self.keepalive_timeout_s,
        )
        wire.after_read = self._report_read
        self._wire_client = wire

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
        stream = _Stream(self.grpc_compression)
        if self._wire_client is not None:
            stream.call = self._wire_client.open_call(
                lambda message: self._response(stream, message, together=True),
                lambda code, details: self._wire_ended(stream, code, details),
            )
        else:
            assert self._client is not None, "open() first"
            stream.outbox = asyncio.Queue()
            method = self._client._channel.stream_stream(
                MODEL_STREAM_INFER, request_serializer=write_now, response_deserializer=bytes
            )
            stream.aio_call = method(_requests(stream.outbox), metadata=self._metadata)
            stream.reader = asyncio.get_running_loop().create_task(self._read(stream))
        self._streams.add(stream)
        self._current = stream
        return stream

    async def _read(self, stream: _Stream) -> None:
        """grpc.aio's side: each response as it comes, then the call's end."""
        assert stream.aio_call is not None
        kind = "grpc stream: the stream ended"
        try:
            async for response in stream.aio_call:
                self._response(stream, response, together=False)
        except grpc.aio.AioRpcError as exc:
            name = exc.code().name if exc.code() else "error"
            kind = _stream_error(name, exc.details() or "")
        except asyncio.CancelledError:
            kind = "grpc stream: closed"
            raise
        finally:
            self._stream_over(stream, kind)

    def _wire_ended(self, stream: _Stream, code: int, details: str) -> None:
        """The wire client's side: the call's end fails the queries still on it."""
        if code == OK:
            kind = "grpc stream: the stream ended"
        else:
            kind = _stream_error(_STATUS_NAMES.get(code, "UNKNOWN"), details)
        self._stream_over(stream, kind)

    def _stream_over(self, stream: _Stream, kind: str) -> None:
        self._streams.discard(stream)
        if self._current is stream:
            self._current = None
        if stream.outbox is not None:
            stream.outbox.put_nowait(None)
        failed, stream.pending = stream.pending, {}
        for query in failed.values():
            self._end(stream, query, kind)

    def _response(self, stream: _Stream, raw: bytes, together: bool) -> None:
        """One ModelStreamInferResponse: a part of its query's answer, its end, or its error.
        `together`: the parts are reported after the read (`_report_read`), not now."""
        try:
            message = service_pb2.ModelStreamInferResponse.FromString(raw)
        except DecodeError:
            self._stream_over(stream, "grpc stream: a response that does not parse")
            stream.cancel()
            return
        response = message.infer_response
        request_id = response.id
        query = stream.pending.get(request_id)
        if query is None:
            return  # a query already over (timed out): its late responses are dropped
        if message.error_message:
            del stream.pending[request_id]
            self._end(stream, query, error_kind("grpc stream", message.error_message))
            return
        if response.outputs:  # an empty final response carries no part
            if not together:
                query.parts.part()
            elif not query.unreported:
                query.unreported = 1
                self._touched.append(query)
            else:
                query.unreported += 1
            count = self._token_counts.of(response)
            if count is not None:
                query.count = (query.count or 0) + count
        parameters = response.parameters
        if FINAL_PARAMETER in parameters and parameters[FINAL_PARAMETER].bool_param:
            del stream.pending[request_id]
            self._end(stream, query, None)

    def _report_read(self) -> None:
        """After a read: each query's responses in it, as one report (one clock reading)."""
        touched, self._touched = self._touched, []
        for query in touched:
            if query.unreported:
                query.parts.part(query.unreported)
                query.unreported = 0

    def _end(self, stream: _Stream, query: _Query, error: str | None) -> None:
        """The query is over (already out of `pending`): its parts so far, its final count when
        it succeeded, then its end."""
        if query.deadline is not None:
            query.deadline.cancel()
        if query.unreported:
            query.parts.part(query.unreported)
            query.unreported = 0
        if error is None:
            query.parts.final(query.count)
        query.parts.done(error)
        if stream is not self._current and not stream.pending and stream in self._streams:
            # A retired stream whose live queries are all over: cancelling it cancels the
            # timed-out requests still running on the server.
            stream.cancel()

    def _expired(self, stream: _Stream, request_id: str) -> None:
        """--timeout: the query is a timeout now. A request cannot be cancelled alone on a shared
        stream, so the stream is retired (new queries open the next one) and cancelled as soon
        as its other queries are over."""
        query = stream.pending.pop(request_id, None)
        if query is None:
            return
        query.deadline = None
        if self._current is stream:
            self._current = None
        self._end(stream, query, TIMEOUT)

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
        stream.send(wire + id_field(request_id), written)
        if stream.call is not None and stream.call.over:
            self._stream_over(stream, "grpc stream: closed")  # the client was closed

    async def close(self) -> None:
        self._current = None
        streams, self._streams = list(self._streams), set()
        for stream in streams:
            self._stream_over(stream, "grpc stream: closed")  # the same kind on either client
            stream.close()
        await asyncio.gather(
            *(stream.reader for stream in streams if stream.reader is not None),
            return_exceptions=True,
        )
        if self._wire_client is not None:
            self._wire_client.close()
            self._wire_client = None
        if self._client is not None:
            await self._client.close()
            self._client = None


def _stream_error(name: str, details: str) -> str:
    """The error kind of a stream that ended with this gRPC status (its code's name)."""
    return grpc_auth_kind(name, details) or error_kind(f"grpc stream {name}", details)


_STATUS_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


async def _requests(outbox: asyncio.Queue[StampedSend | None]) -> AsyncIterator[StampedSend]:
    """What the stream sends: each query's request as it is queued, until None closes it."""
    while True:
        send = await outbox.get()
        if send is None:
            return
        yield send
