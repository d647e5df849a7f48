"""Reads one model's cumulative counters from Triton's statistics API (gRPC or HTTP).

Snapshots are taken just before and just after a run (loadtest.observe.split does the arithmetic).
Either protocol gives the same numbers; gRPC's JSON carries int64 values as strings, which
ModelStats.from_statistics accepts. A server without the statistics endpoint (or a model it does
not know) is a TargetError, so callers can show "server-side split: unavailable" and go on.
The clients connect as the target does: the same TLS settings and headers (targets/transport.py).
"""

from __future__ import annotations

from typing import Any, Protocol

from loadtest.core.secrets import Header
from loadtest.core.settings import TlsSettings
from loadtest.errors import TargetError
from loadtest.observe.split import ModelStats
from loadtest.targets.transport import Credentials, grpc_client, http_client
from loadtest.targets.triton_common import DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT, host_port


class StatisticsSource(Protocol):
    """Anything that yields a ModelStats snapshot (Triton, or a fake in tests)."""

    async def read(self) -> ModelStats: ...

    async def close(self) -> None: ...


class TritonStatistics:
    def __init__(
        self,
        url: str,
        protocol: str,
        model: str,
        version: str = "",
        *,
        tls: TlsSettings | None = None,
        headers: tuple[Header, ...] = (),
    ) -> None:
        self.protocol = protocol
        self.model = model
        self.version = version
        port = DEFAULT_GRPC_PORT if protocol == "grpc" else DEFAULT_HTTP_PORT
        self.url = host_port(url, port)
        self.credentials = Credentials(tls, headers)
        self._client: Any = None

    def _new_client(self) -> Any:
        if self.protocol == "grpc":
            return grpc_client(self.url, self.credentials)
        return http_client(self.url, self.credentials)

    async def read(self) -> ModelStats:
        try:
            if self._client is None:
                self._client = self._new_client()
            if self.protocol == "grpc":
                data = await self._client.get_inference_statistics(
                    self.model, self.version, as_json=True, client_timeout=5
                )
            else:
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
            client = self._new_client()
            try:
                if self.protocol == "grpc":
                    response = await client.get_model_config(
                        self.model, self.version, as_json=True, client_timeout=5
                    )
                    return dict(response["config"])
                return dict(await client.get_model_config(self.model, self.version))
            finally:
                await client.close()
        except Exception as exc:
            text = exc.message() if hasattr(exc, "message") else str(exc)
            raise TargetError(f"Triton config of {self.model!r} at {self.url}: {text}") from None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
