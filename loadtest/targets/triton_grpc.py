"""Triton over gRPC: tritonclient.grpc.aio to set up, a lean wire client for the load path.

Metadata, shared-memory registration and `infer_outputs` use tritonclient's client. Each load
request is a ModelInferRequest built by tritonclient and serialized once per sample; per query the
client only makes the unary `ModelInfer` call, on one of two clients (`load_client`,
--grpc-client, recorded in result.json):

- "wire" (the default): wire/grpc_wire.py, unary gRPC calls on one HTTP/2 connection driven by
  the event loop itself. The send is written (and stamped) the moment the runner asks, and the
  call costs about a third of grpc.aio's CPU (docs/grpc-load-path.md). Same method, same server
  endpoint, same one multiplexed connection as grpc.aio's channel; with `connections` N, N
  connections, each call on the next in turn (round robin: with calls alike, each connection
  carries 1/N of them, so replicas behind an L4 balancer each get a share). It refuses to start
  where grpcio would go through an HTTP CONNECT proxy (grpc_proxy_env.py): setup and load would
  take different routes.
- "grpcio": grpc.aio, a raw `ModelInfer` method on tritonclient's channel that neither serializes
  the request nor parses the response. Its done callback reports the outcome, and its "serializer"
  stamps the send: grpc.aio calls it inside the call's own task, a loop turn after the issuer
  asked, right before the message goes to gRPC's core. Kept as a cross-check of the wire client.

TLS and headers (see transport.py) apply to both clients and every call: the headers go as
metadata with the load calls too. A refused credential is the error kind `unauthenticated` /
`permission-denied`; on the first calls (open, warm-up) it stops the run. Each query carries the
gRPC deadline `timeout_s` (DEADLINE_EXCEEDED -> "timeout"); opening, metadata, the wire client's
connection and the warm-up query get `setup_timeout` (max(30 s, timeout_s)), so a short --timeout
still starts. With `server_timeout_s` every load request carries Triton's "timeout" parameter
(µs); the warm-up and `infer_outputs` requests do not.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence

import grpc
import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import InferResult, service_pb2
from tritonclient.utils import InferenceServerException

from loadtest.core.records import SERVER_TIMEOUT, TIMEOUT
from loadtest.core.secrets import Header
from loadtest.core.settings import (
    DEFAULT_GRPC_KEEPALIVE_TIMEOUT_S,
    GRPC_CLIENTS,
    SharedMemoryKind,
    TlsSettings,
)
from loadtest.core.target import (
    NUMPY_TO_TRITON,
    Done,
    Kept,
    ModelSpec,
    Parts,
    Sample,
    TargetCapabilities,
    Written,
)
from loadtest.errors import SettingsError, TargetError
from loadtest.targets.grpc_proxy_env import refuse_proxy_for_wire
from loadtest.targets.shared_memory import SystemRegions
from loadtest.targets.transport import (
    PERMISSION_DENIED,
    UNAUTHENTICATED,
    auth_refusal,
    connected_wire,
    explain_tls_failure_async,
    grpc_auth_kind,
    grpc_client,
    plaintext_hint,
)
from loadtest.targets.triton_common import (
    DEFAULT_GRPC_PORT,
    StampedSend,
    TritonTargetBase,
    error_kind,
    model_infer_request,
    model_spec_from_config,
    refuse_decoupled,
    write_now,
)
from loadtest.wire import grpc_wire
from loadtest.wire.grpc_wire import GrpcWire

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
# grpc.StatusCode by its integer value (the done callback sees the core's integer code).
_STATUS_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}


def _call_status(call: grpc.aio.Call) -> tuple[grpc.StatusCode, str] | None:
    """A finished call's status code and details, read without awaiting.

    grpc.aio offers the status only as coroutines; in a done callback the core's status object is
    already there (`_cython_call._status`, part of grpc.aio since its first release). None if a
    grpcio release ever drops it: the caller then awaits the public coroutines instead.
    """
    status = getattr(getattr(call, "_cython_call", None), "_status", None)
    if status is None:
        return None
    return _STATUS_BY_VALUE.get(status.code(), grpc.StatusCode.UNKNOWN), status.details() or ""


# The public name of _call_status, for benchmarks/grpc_clients.py: it reads a grpc.aio call's
# status the way this load path does. An alias, not a wrapper: one more call per query would
# skew the per-call cost that benchmark measures.
call_status = _call_status


def _status_name(exc: InferenceServerException) -> str:
    status = exc.status() or "error"
    return str(status).removeprefix("StatusCode.")


class TritonGrpcTarget(TritonTargetBase):
    _DEFAULT_PORT = DEFAULT_GRPC_PORT

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
        connections: int = 1,
    ) -> None:
        if load_client not in GRPC_CLIENTS:
            raise SettingsError(
                f"--grpc-client {load_client!r}: use one of {', '.join(GRPC_CLIENTS)}"
            )
        super().__init__(url, model, version, timeout_s, server_timeout_s, tls=tls, headers=headers)
        self.load_client = load_client
        # The wire client's request compression ("gzip", "deflate"), keepalive PING interval
        # and timeout, and how many connections it spreads calls over.
        self.grpc_compression = grpc_compression
        self.keepalive_s = keepalive_s
        self.keepalive_timeout_s = keepalive_timeout_s
        self.connections = connections
        self._metadata = tuple(self.credentials.header_dict(lower=True).items()) or None
        self._client: grpcclient.InferenceServerClient | None = None
        self._requests: list[list[grpcclient.InferInput]] = []
        self._wire: list[bytes] = []  # each sample's ModelInferRequest, serialized
        # --check-outputs' sampled queries: the same request, but with shared memory every output
        # comes back in the answer itself, never through a region a later query could overwrite.
        self._kept_wire: list[bytes] = []
        self._model_infer: grpc.aio.UnaryUnaryMultiCallable | None = None
        self._model_infer_stamped: grpc.aio.UnaryUnaryMultiCallable | None = None
        self._wire_client: GrpcWire | None = None  # the first of `_wire_clients`
        self._wire_clients: list[GrpcWire] = []  # `connections` of them, used round robin
        self._next_wire = 0
        self._framed: list[bytes] = []  # the wire client's messages (length-prefixed)
        self._kept_framed: list[bytes] = []
        self._slow: set[asyncio.Task[None]] = set()  # statuses read the public (awaited) way
        self._outputs: list[grpcclient.InferRequestedOutput] | None = None
        self._shm: SystemRegions | None = None

    @property
    def capabilities(self) -> TargetCapabilities:
        """A callback send, system shared memory, Triton's statistics and kept answers (the raw
        response bytes, for --check-outputs); the wire client counts connection waits and
        transparent retries (grpc.aio's channel counts neither)."""
        wire = self.load_client == "wire"
        return TargetCapabilities(
            callback_send=True,
            counts_connection_waits=wire,
            counts_transparent_retries=wire,
            keeps_outputs=True,
            shared_memory=frozenset({SharedMemoryKind.SYSTEM}),
            triton=self._triton_endpoint("grpc"),
        )

    def serialized_request(self, sample_index: int) -> bytes:
        """One prepared sample's ModelInferRequest as it goes on the wire (after `prepare`):
        the public way for a benchmark (benchmarks/grpc_clients.py) to send the same bytes."""
        return self._wire[sample_index]

    @property
    def connection_waits(self) -> int:
        """Queries that waited to be written (a connection being opened, or the server's
        limit on concurrent streams); grpc.aio's channel keeps no such count."""
        return sum(wire.waited for wire in self._wire_clients)

    @property
    def transparent_retries(self) -> int:
        """Queries the wire client sent a second time because the server (or a proxy) said it
        never processed them (GOAWAY, REFUSED_STREAM; gRFC A6), as grpc-core does silently."""
        return sum(wire.transparent_retries for wire in self._wire_clients)

    def start_infer(self, sample_index: int, done: Done, written: Written | None = None) -> None:
        """Start one gRPC call; `done(error kind or None)` runs when its status is in, on the
        event loop. The wire client writes it now (`written()` only if it had to wait); grpc.aio
        writes it in its own task a loop turn later, and `written()` runs then."""
        wire = self._wire_for_next_call()
        if wire is not None:
            wire.call(
                self._framed[sample_index], functools.partial(self._answered, done), False, written
            )
            return
        assert self._model_infer_stamped is not None, "prepare() first"
        try:
            call = self._model_infer_stamped(
                StampedSend(self._wire[sample_index], written),
                timeout=self.timeout_s,
                metadata=self._metadata,
            )
        except Exception as exc:  # a call that cannot even start is a failed query, not a crash
            done(self._kind(exc))
            return
        call.add_done_callback(functools.partial(self._finished, done))

    def _wire_for_next_call(self) -> GrpcWire | None:
        """The wire client's connection for the next call: round robin over `connections`."""
        clients = self._wire_clients
        if len(clients) <= 1:
            return self._wire_client
        wire = clients[self._next_wire]
        self._next_wire = (self._next_wire + 1) % len(clients)
        return wire

    def start_parts(self, sample_index: int, parts: Parts, written: Written | None = None) -> None:
        raise NotImplementedError("Triton's gRPC inference answers whole, not in parts")

    def _finished(self, done: Done, call: grpc.aio.Call) -> None:
        status = _call_status(call)
        if status is None:
            task = asyncio.ensure_future(self._finished_slowly(done, call))
            self._slow.add(task)
            task.add_done_callback(self._slow.discard)
            return
        code, details = status
        done(None if code is grpc.StatusCode.OK else self._code_kind(code, details))

    def _answered(self, done: Done, code: int, details: str, _response: bytes) -> None:
        done(None if code == grpc_wire.OK else self._wire_kind(code, details))

    def _wire_kind(self, code: int, details: str) -> str:
        return self._code_kind(_STATUS_BY_VALUE.get(code, grpc.StatusCode.UNKNOWN), details)

    async def _finished_slowly(self, done: Done, call: grpc.aio.Call) -> None:
        code = await call.code()
        done(None if code is grpc.StatusCode.OK else self._code_kind(code, await call.details()))

    def use_shared_memory(self, kind: SharedMemoryKind, tag: str) -> None:
        """Send inputs and receive outputs through registered system shared memory."""
        if kind is not SharedMemoryKind.SYSTEM:
            raise TargetError(f"the gRPC target has no {kind.value} shared memory")
        self._shm = SystemRegions(tag)

    @property
    def description(self) -> str:
        client = "" if self.load_client == "wire" else f" ({self.load_client})"
        if self.connections > 1:
            client += f" ({self.connections} connections)"
        return self._describe(f"grpc{self._tls_mark}{client}")

    @staticmethod
    def _code_kind(code: grpc.StatusCode | None, details: str) -> str:
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return TIMEOUT
        name = code.name if code else "error"
        return grpc_auth_kind(name, details) or error_kind(f"grpc {name}", details)

    def _kind(self, exc: BaseException) -> str:
        if isinstance(exc, grpc.aio.AioRpcError):
            return self._code_kind(exc.code(), exc.details() or "")
        if isinstance(exc, InferenceServerException):
            name = _status_name(exc)
            details = exc.message() or ""
            return grpc_auth_kind(name, details) or error_kind(f"grpc {name}", details)
        if isinstance(exc, asyncio.TimeoutError):
            return TIMEOUT
        return error_kind(type(exc).__name__, str(exc))

    def _refused(self, exc: InferenceServerException) -> TargetError | None:
        """The one-line error for a refused credential, else None."""
        kind = grpc_auth_kind(_status_name(exc), exc.message() or "")
        return TargetError(auth_refusal(self.url, kind, "gRPC")) if kind else None

    async def _unreachable(self, exc: InferenceServerException) -> TargetError:
        """The one line for a server that did not answer: over TLS, why the handshake fails;
        in plaintext, whether the server wants TLS."""
        host, _, port = self.url.rpartition(":")
        host = host.strip("[]")
        tls = self.credentials.tls
        if tls is not None:
            reason = await explain_tls_failure_async(host, int(port), tls, ("h2",))
            detail = reason or exc.message()
            return TargetError(f"cannot reach Triton over gRPC with TLS at {self.url}: {detail}")
        hint = await plaintext_hint(host, int(port), ("h2",), "grpcs")
        return TargetError(f"cannot reach Triton over gRPC at {self.url}: {exc.message()}{hint}")

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
            await self._client.is_server_live(client_timeout=min(5.0, setup))
            metadata = await self._client.get_server_metadata(as_json=True, client_timeout=setup)
            self._server_version = str(metadata.get("version", ""))
        except InferenceServerException as exc:
            raise (self._refused(exc) or await self._unreachable(exc)) from None
        try:
            response = await self._client.get_model_config(
                self.model, self.version, as_json=True, client_timeout=setup
            )
            ready = await self._client.is_model_ready(
                self.model, self.version, client_timeout=setup
            )
        except InferenceServerException as exc:
            refused = self._refused(exc)
            if refused:
                raise refused from None
            raise TargetError(f"model {self.model!r} at {self.url}: {exc.message()}") from None
        if not ready:
            raise TargetError(f"model {self.model!r} at {self.url} is not ready")
        refuse_decoupled(response["config"], self.model, "unary gRPC")
        self._spec = model_spec_from_config(response["config"], self.version)
        return self._spec

    async def prepare(self, samples: Sequence[Sample]) -> None:
        assert self._client is not None and self._spec is not None, "open() first"
        client = self._client
        if self._shm is not None:
            self._shm.layout(samples, self._spec)
            await self._shm.register(
                lambda name, key, size: client.register_system_shared_memory(name, key, size)
            )
            self._outputs = self._shm.requested_outputs(grpcclient.InferRequestedOutput)
        self._requests = []
        self._wire = []
        self._kept_wire = []
        for k, sample in enumerate(samples):
            inputs = []
            for name, tensor in sample.items():
                datatype = NUMPY_TO_TRITON.get(tensor.dtype.name, "BYTES")
                infer_input = grpcclient.InferInput(name, list(tensor.shape), datatype)
                if self._shm is not None:
                    self._shm.bind_input(infer_input, k, name)
                else:
                    infer_input.set_data_from_numpy(tensor)
                inputs.append(infer_input)
            self._requests.append(inputs)
            self._wire.append(self._serialized(inputs, self._outputs))
            kept = self._serialized(inputs, None) if self._shm is not None else self._wire[-1]
            self._kept_wire.append(kept)
        # Bytes in, bytes out: no (de)serializer runs per query.
        self._model_infer = client._channel.unary_unary(MODEL_INFER)
        self._model_infer_stamped = client._channel.unary_unary(
            MODEL_INFER, request_serializer=write_now
        )
        if self.load_client == "wire":
            # Each sample once, framed for the wire client (twice with shared memory, whose
            # kept requests differ); grpc.aio's unframed copies would only sit in memory.
            compression = self.grpc_compression
            self._framed = [grpc_wire.framed(wire, compression) for wire in self._wire]
            self._kept_framed = (
                self._framed
                if self._shm is None
                else [grpc_wire.framed(wire, compression) for wire in self._kept_wire]
            )
            self._wire, self._kept_wire = [], []
            await self._open_wire()
        if self._requests:
            try:
                await self.infer_outputs(0)
            except InferenceServerException as exc:
                refused = self._refused(exc)
                if refused:
                    raise refused from None
                raise TargetError(
                    f"model {self.model!r} rejected the inputs: {exc.message()}"
                ) from None

    async def _open_wire(self) -> None:
        """The load path's own HTTP/2 connections, opened before the run (TLS: ALPN h2), each
        checked with one call (behind a balancer each may reach another replica)."""
        try:
            for _ in range(self.connections):
                self._wire_clients.append(await self._open_one_wire())
        except BaseException:
            for wire in self._wire_clients:
                wire.close()
            self._wire_clients = []
            raise
        self._wire_client = self._wire_clients[0]

    async def _open_one_wire(self) -> GrpcWire:
        wire = await connected_wire(
            self.url,
            MODEL_INFER,
            self.credentials,
            self.timeout_s,
            self.setup_timeout_s,
            compression=self.grpc_compression,
            keepalive_s=self.keepalive_s,
            keepalive_timeout_s=self.keepalive_timeout_s,
        )
        if self._framed:
            try:
                await self._first_wire_call(wire)
            except BaseException:  # refused, or cancelled (Ctrl-C): no socket or timer left
                wire.close()
                raise
        return wire

    async def _first_wire_call(self, wire: GrpcWire) -> None:
        """One load call before the run: a refused credential, or a connection that cannot carry
        a call (a proxy that mangles HTTP/2), is one error line now, not a run of failures.
        Answers the run itself records (a deadline, the server's own timeout) pass."""
        code, details, _ = await wire.unary(self._framed[0], timeout_s=self.setup_timeout_s)
        kind = self._wire_kind(code, details)
        if code in (grpc_wire.OK, grpc_wire.DEADLINE_EXCEEDED) or kind == SERVER_TIMEOUT:
            return
        if kind in (UNAUTHENTICATED, PERMISSION_DENIED):
            raise TargetError(auth_refusal(self.url, kind, "gRPC"))
        raise TargetError(f"the first gRPC load call to {self.url} failed: {kind}")

    def _serialized(
        self,
        inputs: list[grpcclient.InferInput],
        outputs: list[grpcclient.InferRequestedOutput] | None,
    ) -> bytes:
        request = model_infer_request(
            self.model, self.version, inputs, outputs, self.server_timeout_us
        )
        return bytes(request.SerializeToString())

    async def infer_kept(self, sample_index: int) -> tuple[str | None, Kept]:
        """A load query whose response bytes are kept: parsing waits until after the run."""
        if self._wire_client is not None:
            code, details, answer = await self._wire_client.unary(
                self._kept_framed[sample_index], keep=True
            )
            return (
                (None, answer) if code == grpc_wire.OK else (self._wire_kind(code, details), None)
            )
        assert self._model_infer is not None, "prepare() first"
        try:
            answer = await self._model_infer(
                self._kept_wire[sample_index], timeout=self.timeout_s, metadata=self._metadata
            )
        except Exception as exc:  # a failed query is data, never a crash of the run
            return self._kind(exc), None
        return None, answer

    def decode_kept(self, kept: Kept) -> dict[str, np.ndarray]:
        if not isinstance(kept, bytes):
            raise ValueError("not an answer of the gRPC target")
        try:
            result = InferResult(service_pb2.ModelInferResponse.FromString(kept))
            response = result.get_response(as_json=True)
            return {o["name"]: result.as_numpy(o["name"]) for o in response.get("outputs", [])}
        except Exception as exc:
            raise ValueError(f"cannot decode the gRPC answer: {exc}") from None

    async def infer(self, sample_index: int) -> str | None:
        wire = self._wire_for_next_call()
        if wire is not None:
            code, details, _ = await wire.unary(self._framed[sample_index])
            return None if code == grpc_wire.OK else self._wire_kind(code, details)
        assert self._model_infer is not None, "prepare() first"
        try:
            await self._model_infer(
                self._wire[sample_index], timeout=self.timeout_s, metadata=self._metadata
            )
        except Exception as exc:  # a failed query is data, never a crash of the run
            return self._kind(exc)
        return None

    async def infer_outputs(self, sample_index: int) -> dict[str, np.ndarray]:
        assert self._client is not None, "open() first"
        result = await self._client.infer(
            self.model,
            self._requests[sample_index],
            model_version=self.version,
            outputs=self._outputs,
            client_timeout=self.setup_timeout_s,
        )
        if self._shm is not None:
            return self._shm.read_outputs()
        response = result.get_response(as_json=True)
        return {out["name"]: result.as_numpy(out["name"]) for out in response["outputs"]}

    async def close(self) -> None:
        for wire in self._wire_clients:
            wire.close()
        self._wire_clients = []
        self._wire_client = None
        client = self._client
        if self._shm is not None:
            await self._shm.release(
                client.unregister_system_shared_memory if client is not None else None
            )
        if client is not None:
            await client.close()
            self._client = None
