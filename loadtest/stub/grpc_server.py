"""The stub's gRPC side: Triton's GRPCInferenceService (tritonclient ships its protobufs).

grpc.aio in the same event loop as the HTTP side. Infer answers are prebuilt per model; calls the
stub does not support (shared memory, repository control) fail with UNIMPLEMENTED, as they would
on a server without them. A delay (stub --delay-ms) and Triton's "timeout" request parameter are
honoured as catalog.Behaviour says.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from loadtest.stub.catalog import STUB_VERSION, TIMEOUT_EXPIRED, Behaviour, Catalog


class _Servicer(pb_grpc.GRPCInferenceServiceServicer):
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
                await asyncio.sleep(timeout_us / 1e6)
                await context.abort(grpc.StatusCode.UNAVAILABLE, TIMEOUT_EXPIRED)
            await asyncio.sleep(behaviour.delay_s)
        response = self._infer.get(request.model_name)
        if response is None:
            model = self.catalog.model(request.model_name)
            response = pb.ModelInferResponse(model_name=model.name, model_version="1")
            for output in model.outputs:
                response.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
                response.raw_output_contents.append(output.zeros)
            self._infer[request.model_name] = response
        return response


async def start_grpc(
    catalog: Catalog, host: str, port: int, behaviour: Behaviour | None = None
) -> tuple[grpc.aio.Server, int]:
    """Serve on host:port (0 = any free port); returns the started server and its port."""
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(
        _Servicer(catalog, behaviour or Behaviour()), server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    await server.start()
    return server, bound
