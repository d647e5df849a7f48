"""Triton's model-repository API for one model: read its configuration, load it with an override.

Why through the API and not by editing config.pbtxt: the running server is what gets measured,
and a load with a config override (`POST v2/repository/models/M/load` with
`{"parameters": {"config": "<json>"}}`; tritonclient's `load_model(config=...)`) changes only the
server's copy; the repository on disk is never written. It needs explicit model control
(`tritonserver --model-control-mode=explicit`): under the default mode (none) or poll, Triton
answers every load and unload with "explicit model load / unload is not allowed if polling is
enabled". `check_explicit` finds that out without side effects, by unloading a model name that
cannot exist (explicit mode answers that with success and does nothing).

Verified on the embedded Triton 2.51 (docs/triton.md): an override replaces the whole
configuration (a partial one loads with no inputs), so callers always send a complete config;
the JSON that `get_model_config` returns loads back unchanged; a config Triton rejects (e.g. a
preferred batch size above max_batch_size) fails with "failed to load 'M', failed to poll from
model repository" and leaves the model unavailable until the next successful load.
"""

from __future__ import annotations

import json
from typing import Any

from loadtest.core.secrets import Header
from loadtest.core.settings import TlsSettings
from loadtest.errors import SettingsError, TargetError
from loadtest.targets.transport import Credentials, grpc_client, http_client
from loadtest.targets.triton_common import DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT, host_port

# A name no repository holds: unloading it is how the control mode is probed.
PROBE_NAME = "__loadtest_model_control_probe__"
NOT_EXPLICIT = "explicit model load / unload is not allowed"
LOAD_TIMEOUT_S = 300.0  # a large model with several instances takes a while to load


class ConfigRejected(TargetError):
    """Triton refused to load the model with a configuration (the sweep records it and goes on)."""


def _message(exc: BaseException) -> str:
    text = exc.message() if hasattr(exc, "message") else str(exc)
    return str(text).strip()


class ModelRepository:
    """The model-repository API of one server, for one model, over the target's protocol."""

    def __init__(
        self,
        url: str,
        protocol: str,
        model: str,
        *,
        tls: TlsSettings | None = None,
        headers: tuple[Header, ...] = (),
    ) -> None:
        self.protocol = protocol
        self.model = model
        port = DEFAULT_GRPC_PORT if protocol == "grpc" else DEFAULT_HTTP_PORT
        self.url = host_port(url, port)
        self.credentials = Credentials(tls, headers)
        self._client: Any = None

    def _get(self) -> Any:
        if self._client is None:
            if self.protocol == "grpc":
                self._client = grpc_client(self.url, self.credentials)
            else:
                self._client = http_client(self.url, self.credentials)
        return self._client

    async def check_explicit(self) -> None:
        """SettingsError (one line, how to enable it) unless the server is in explicit mode."""
        try:
            if self.protocol == "grpc":
                await self._get().unload_model(PROBE_NAME, client_timeout=10)
            else:
                await self._get().unload_model(PROBE_NAME)
        except Exception as exc:
            text = _message(exc)
            if NOT_EXPLICIT in text:
                raise SettingsError(
                    f"Triton at {self.url} is not in explicit model-control mode, so a sweep "
                    "cannot load configurations: start it with --model-control-mode=explicit "
                    f"--load-model={self.model} (docker/serve.sh and the embedded server do)"
                ) from None
            raise TargetError(f"Triton model-repository API at {self.url}: {text}") from None

    async def config(self) -> dict[str, Any]:
        """The model's configuration as the server holds it (Triton's JSON form)."""
        try:
            if self.protocol == "grpc":
                response = await self._get().get_model_config(
                    self.model, as_json=True, client_timeout=10
                )
                return dict(response["config"])
            return dict(await self._get().get_model_config(self.model))
        except Exception as exc:
            raise TargetError(
                f"Triton config of {self.model!r} at {self.url}: {_message(exc)}"
            ) from None

    async def load(self, config: dict[str, Any]) -> None:
        """Load the model with this complete configuration; ConfigRejected when Triton refuses."""
        text = json.dumps(config)
        try:
            if self.protocol == "grpc":
                await self._get().load_model(self.model, config=text, client_timeout=LOAD_TIMEOUT_S)
            else:
                await self._get().load_model(self.model, config=text)
        except Exception as exc:
            raise ConfigRejected(
                f"Triton refused {self.model!r} with this configuration: {_message(exc)}"
            ) from None

    async def ready(self) -> bool:
        try:
            if self.protocol == "grpc":
                return bool(await self._get().is_model_ready(self.model, client_timeout=10))
            return bool(await self._get().is_model_ready(self.model))
        except Exception:
            return False

    async def memory_usage_bytes(self) -> int | None:
        """The model's memory as Triton's statistics report it (`memory_usage`, summed over
        devices); None when the backend reports none (the Python backend does not)."""
        try:
            if self.protocol == "grpc":
                data = await self._get().get_inference_statistics(
                    self.model, as_json=True, client_timeout=10
                )
            else:
                data = await self._get().get_inference_statistics(self.model)
        except Exception:
            return None
        total = 0
        for stats in data.get("model_stats", []):
            for usage in stats.get("memory_usage") or []:
                total += int(usage.get("byte_size", 0))
        return total or None

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()
