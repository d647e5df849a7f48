"""Reads one model's cumulative counters from Triton's statistics API (gRPC or HTTP).

Snapshots are taken just before and just after a run (loadtest.observe.split does the arithmetic).
Either protocol gives the same numbers; gRPC's JSON carries int64 values as strings, which
ModelStats.from_statistics accepts. A server without the statistics endpoint (or a model it does
not know) is a TargetError, so callers can show "server-side split: unavailable" and go on.
"""

from __future__ import annotations

from typing import Any, Protocol

from loadtest.errors import TargetError
from loadtest.observe.split import ModelStats
from loadtest.targets.triton_common import DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT, host_port


class StatisticsSource(Protocol):
    """Anything that yields a ModelStats snapshot (Triton, or a fake in tests)."""

    async def read(self) -> ModelStats: ...

    async def close(self) -> None: ...


class TritonStatistics:
    def __init__(self, url: str, protocol: str, model: str, version: str = "") -> None:
        self.protocol = protocol
        self.model = model
        self.version = version
        port = DEFAULT_GRPC_PORT if protocol == "grpc" else DEFAULT_HTTP_PORT
        self.url = host_port(url, port)
        self._client: Any = None

    async def read(self) -> ModelStats:
        try:
            if self.protocol == "grpc":
                import tritonclient.grpc.aio as grpcclient

                if self._client is None:
                    self._client = grpcclient.InferenceServerClient(self.url)
                data = await self._client.get_inference_statistics(
                    self.model, self.version, as_json=True, client_timeout=5
                )
            else:
                import tritonclient.http.aio as httpclient

                if self._client is None:
                    self._client = httpclient.InferenceServerClient(self.url, conn_timeout=5)
                data = await self._client.get_inference_statistics(self.model, self.version)
        except Exception as exc:
            text = exc.message() if hasattr(exc, "message") else str(exc)
            raise TargetError(
                f"Triton statistics for {self.model!r} at {self.url}: {text}"
            ) from None
        return ModelStats.from_statistics(data, self.model)

    async def model_config(self) -> dict[str, Any]:
        """The model's config as the server holds it (JSON), for stating what was compared."""
        try:
            if self.protocol == "grpc":
                import tritonclient.grpc.aio as grpcclient

                client = grpcclient.InferenceServerClient(self.url)
                try:
                    response = await client.get_model_config(
                        self.model, self.version, as_json=True, client_timeout=5
                    )
                finally:
                    await client.close()
                return dict(response["config"])
            import tritonclient.http.aio as httpclient

            http = httpclient.InferenceServerClient(self.url, conn_timeout=5)
            try:
                return dict(await http.get_model_config(self.model, self.version))
            finally:
                await http.close()
        except Exception as exc:
            text = exc.message() if hasattr(exc, "message") else str(exc)
            raise TargetError(f"Triton config of {self.model!r} at {self.url}: {text}") from None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
