"""The stub's gRPC side on grpc.aio (`loadtest stub --grpc-server grpcio`), and its answers.

`Servicer` is what the stub answers, for both gRPC servers: this one (grpc.aio in the same
event loop as the HTTP side, ~4.5-5k calls/s on a 2-vCPU machine: a cross-check) and the lean
default, grpc_wire_server.py, which calls the same servicer for every method but ModelInfer.
Infer answers are prebuilt per model; calls the stub does not support (shared memory, repository
control) fail with UNIMPLEMENTED, as they would on a server without them. A delay (stub --delay-ms)
and Triton's "timeout" request parameter are honoured as catalog.Behaviour says. With a TokenGate,
an interceptor answers UNAUTHENTICATED to every call without the token (`authorization` metadata);
with StubTls the port is a TLS one. ModelStreamInfer answers streamed requests (grpc_stream.py).
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from loadtest.core.units import us_to_s
from loadtest.stub.access import StubTls, TokenGate
from loadtest.stub.catalog import STUB_VERSION, TIMEOUT_EXPIRED, Behaviour, Catalog
from loadtest.stub.grpc_stream import model_stream_infer


class Servicer(pb_grpc.GRPCInferenceServiceServicer):
    """The stub's answers, shared by both gRPC servers (this one and grpc_wire_server.py)."""

    def __init__(self, catalog: Catalog, behaviour: Behaviour) -> None:
        self.catalog = catalog
        self.behaviour = behaviour
        self._infer: dict[str, pb.ModelInferResponse] = {}

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="loadtest-stub", version=STUB_VERSION)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        meta = self.catalog.model(request.name).metadata_json()
        response = pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"]
        )
        for field, tensors in (("inputs", meta["inputs"]), ("outputs", meta["outputs"])):
            for tensor in tensors:
                getattr(response, field).add(
                    name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"]
                )
        return response

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: Any
    ) -> pb.ModelConfigResponse:
        return pb.ModelConfigResponse(config=self.catalog.model(request.name).config)

    async def ModelStatistics(self, request: Any, context: Any) -> pb.ModelStatisticsResponse:
        return pb.ModelStatisticsResponse()

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Any
    ) -> pb.ModelInferResponse:
        behaviour = self.behaviour
        behaviour.arrived()
        if behaviour.delay_s:
            parameters = request.parameters
            timeout_us = parameters["timeout"].int64_param if "timeout" in parameters else 0
            if behaviour.rejects(timeout_us):
                await asyncio.sleep(us_to_s(timeout_us))
                await context.abort(grpc.StatusCode.UNAVAILABLE, TIMEOUT_EXPIRED)
            await asyncio.sleep(behaviour.hold_s())
        return self.infer_response(request.model_name)

    async def ModelStreamInfer(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Streamed answers, one response per token (grpc_stream.py)."""
        async for response in model_stream_infer(self.catalog, self.behaviour, request_iterator):
            yield response

    def infer_response(self, model_name: str) -> pb.ModelInferResponse:
        """Zeros of each output's shape and type, built on the model's first request."""
        response = self._infer.get(model_name)
        if response is None:
            model = self.catalog.model(model_name)
            response = pb.ModelInferResponse(model_name=model.name, model_version="1")
            for output in model.outputs:
                response.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
                response.raw_output_contents.append(output.zeros)
            self._infer[model_name] = response
        return response


async def _deny(request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token")


class _TokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, gate: TokenGate) -> None:
        self.gate = gate
        self._deny = grpc.unary_unary_rpc_method_handler(_deny)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        metadata = handler_call_details.invocation_metadata or ()
        value = next((v for k, v in metadata if k == "authorization"), None)
        authorization = value.encode() if isinstance(value, str) else value
        if self.gate.admits(authorization):
            return await continuation(handler_call_details)
        return self._deny


def _check_free(host: str, port: int) -> None:
    """Refuse a taken port with one line before grpcio tries it (its core would log the failed
    bind on stderr first, and then raise a RuntimeError)."""
    if not port:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            message = f"cannot listen for gRPC on {host}:{port}: {exc.strerror}"
            raise OSError(exc.errno, message) from None


async def start_grpc(
    catalog: Catalog,
    host: str,
    port: int,
    tls: StubTls | None = None,
    gate: TokenGate | None = None,
    behaviour: Behaviour | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Serve on host:port (0 = any free port); returns the started server and its port."""
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)],
        interceptors=[_TokenInterceptor(gate)] if gate is not None else None,
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(
        Servicer(catalog, behaviour or Behaviour()), server
    )
    address = f"{host}:{port}"
    _check_free(host, port)
    try:
        if tls is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, tls.grpc_credentials())
    except RuntimeError:  # grpcio's only word for a port it cannot bind (taken, or no rights)
        raise OSError(errno.EADDRINUSE, f"cannot listen for gRPC on {address} (in use?)") from None
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    await server.start()
    return server, bound
