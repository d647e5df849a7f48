"""Triton over HTTP/REST (KServe v2) with aiohttp; request bodies are built once per sample.

Metadata comes from tritonclient.http.aio; the inference path posts prebuilt binary-tensor bodies
(tritonclient's own `generate_request_body`) on one aiohttp session with unlimited connections, so
an open-loop burst is never throttled by a client-side connection cap (which would quietly turn the
test into a closed loop).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import aiohttp
import numpy as np
import tritonclient.http as httpclient
import tritonclient.http.aio as aiohttpclient
from tritonclient.utils import InferenceServerException

from loadtest.errors import TargetError
from loadtest.targets.base import NUMPY_TO_TRITON, ModelSpec, Sample
from loadtest.targets.triton_common import (
    DEFAULT_HTTP_PORT,
    error_kind,
    host_port,
    model_spec_from_config,
)

_HEADER_LENGTH = "Inference-Header-Content-Length"


def _error_message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error", ""))
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace")


class TritonHttpTarget:
    def __init__(self, url: str, model: str, version: str = "", timeout_s: float = 30.0) -> None:
        self.url = host_port(url, DEFAULT_HTTP_PORT)
        self.model = model
        self.version = version
        self.timeout_s = timeout_s
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
        self._infer_url = f"http://{self.url}{path}/infer"
        self._session: aiohttp.ClientSession | None = None
        self._bodies: list[tuple[bytes, dict[str, str]]] = []
        self.server_version = ""

    @property
    def description(self) -> str:
        version = f" v{self.version}" if self.version else ""
        return f"triton http {self.url} model {self.model}{version}"

    async def open(self) -> ModelSpec:
        client = aiohttpclient.InferenceServerClient(self.url, conn_timeout=5)
        try:
            try:
                await client.is_server_live()
                metadata = await client.get_server_metadata()
                self.server_version = str(metadata.get("version", ""))
            except (InferenceServerException, aiohttp.ClientError, OSError) as exc:
                raise TargetError(f"cannot reach Triton over HTTP at {self.url}: {exc}") from None
            try:
                config = await client.get_model_config(self.model, self.version)
                ready = await client.is_model_ready(self.model, self.version)
            except InferenceServerException as exc:
                raise TargetError(f"model {self.model!r} at {self.url}: {exc.message()}") from None
        finally:
            await client.close()
        if not ready:
            raise TargetError(f"model {self.model!r} at {self.url} is not ready")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
        )
        return model_spec_from_config(config, self.version)

    async def prepare(self, samples: Sequence[Sample]) -> None:
        self._bodies = []
        for sample in samples:
            inputs = []
            for name, tensor in sample.items():
                datatype = NUMPY_TO_TRITON.get(tensor.dtype.name, "BYTES")
                infer_input = httpclient.InferInput(name, list(tensor.shape), datatype)
                infer_input.set_data_from_numpy(tensor, binary_data=True)
                inputs.append(infer_input)
            body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs)
            headers = {"Content-Type": "application/octet-stream"}
            if json_size is not None:
                headers[_HEADER_LENGTH] = str(json_size)
            self._bodies.append((bytes(body), headers))
        if self._bodies:
            try:
                await self.infer_outputs(0)
            except InferenceServerException as exc:
                raise TargetError(
                    f"model {self.model!r} rejected the inputs: {exc.message()}"
                ) from None

    async def infer(self, sample_index: int) -> str | None:
        assert self._session is not None, "open() first"
        body, headers = self._bodies[sample_index]
        try:
            async with self._session.post(self._infer_url, data=body, headers=headers) as resp:
                payload = await resp.read()
                if resp.status != 200:
                    return error_kind(f"http {resp.status}", _error_message(payload))
        except asyncio.TimeoutError:
            return "timeout"
        except Exception as exc:  # a failed query is data, never a crash of the run
            return error_kind(type(exc).__name__, str(exc))
        return None

    async def infer_outputs(self, sample_index: int) -> dict[str, np.ndarray]:
        assert self._session is not None, "open() first"
        body, headers = self._bodies[sample_index]
        async with self._session.post(self._infer_url, data=body, headers=headers) as resp:
            payload = await resp.read()
            if resp.status != 200:
                raise InferenceServerException(_error_message(payload), status=str(resp.status))
            header_length = resp.headers.get(_HEADER_LENGTH)
        result = httpclient.InferenceServerClient.parse_response_body(
            payload, header_length=int(header_length) if header_length else None
        )
        response = result.get_response()
        return {out["name"]: result.as_numpy(out["name"]) for out in response["outputs"]}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
