"""Triton over gRPC with tritonclient.grpc.aio: one channel, inputs built once per sample."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from loadtest.errors import TargetError
from loadtest.targets.base import NUMPY_TO_TRITON, ModelSpec, Sample
from loadtest.targets.triton_common import (
    DEFAULT_GRPC_PORT,
    error_kind,
    host_port,
    model_spec_from_config,
)


def _status_name(exc: InferenceServerException) -> str:
    status = exc.status() or "error"
    return str(status).removeprefix("StatusCode.")


class TritonGrpcTarget:
    def __init__(self, url: str, model: str, version: str = "", timeout_s: float = 30.0) -> None:
        self.url = host_port(url, DEFAULT_GRPC_PORT)
        self.model = model
        self.version = version
        self.timeout_s = timeout_s
        self._client: grpcclient.InferenceServerClient | None = None
        self._requests: list[list[grpcclient.InferInput]] = []
        self.server_version = ""

    @property
    def description(self) -> str:
        version = f" v{self.version}" if self.version else ""
        return f"triton grpc {self.url} model {self.model}{version}"

    def _kind(self, exc: Exception) -> str:
        if isinstance(exc, InferenceServerException):
            return error_kind(f"grpc {_status_name(exc)}", exc.message() or "")
        if isinstance(exc, asyncio.TimeoutError):
            return "timeout"
        return error_kind(type(exc).__name__, str(exc))

    async def open(self) -> ModelSpec:
        self._client = grpcclient.InferenceServerClient(self.url)
        try:
            await self._client.is_server_live(client_timeout=5)
            metadata = await self._client.get_server_metadata(as_json=True, client_timeout=5)
            self.server_version = str(metadata.get("version", ""))
        except InferenceServerException as exc:
            raise TargetError(
                f"cannot reach Triton over gRPC at {self.url}: {exc.message()}"
            ) from None
        try:
            response = await self._client.get_model_config(
                self.model, self.version, as_json=True, client_timeout=5
            )
            ready = await self._client.is_model_ready(self.model, self.version, client_timeout=5)
        except InferenceServerException as exc:
            raise TargetError(f"model {self.model!r} at {self.url}: {exc.message()}") from None
        if not ready:
            raise TargetError(f"model {self.model!r} at {self.url} is not ready")
        return model_spec_from_config(response["config"], self.version)

    async def prepare(self, samples: Sequence[Sample]) -> None:
        self._requests = []
        for sample in samples:
            inputs = []
            for name, tensor in sample.items():
                datatype = NUMPY_TO_TRITON.get(tensor.dtype.name, "BYTES")
                infer_input = grpcclient.InferInput(name, list(tensor.shape), datatype)
                infer_input.set_data_from_numpy(tensor)
                inputs.append(infer_input)
            self._requests.append(inputs)
        if self._requests:
            try:
                await self.infer_outputs(0)
            except InferenceServerException as exc:
                raise TargetError(
                    f"model {self.model!r} rejected the inputs: {exc.message()}"
                ) from None

    async def infer(self, sample_index: int) -> str | None:
        assert self._client is not None, "open() first"
        try:
            await self._client.infer(
                self.model,
                self._requests[sample_index],
                model_version=self.version,
                client_timeout=self.timeout_s,
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
            client_timeout=self.timeout_s,
        )
        response = result.get_response(as_json=True)
        return {out["name"]: result.as_numpy(out["name"]) for out in response["outputs"]}

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
