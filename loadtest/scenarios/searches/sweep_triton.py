"""The sweep's server side on a real Triton: configurations through the model-repository API,
the original put back, the model's memory read after each point.

Memory, first available of: Triton's statistics `memory_usage` for the model (backends that
report it; the Python backend does not), else the resident memory of the local tritonserver's
process tree (a server this process started: its Python-backend stubs are one process per
instance), else not measured (a remote server whose backend reports nothing).
"""

from __future__ import annotations

import json
from typing import Any

from loadtest.core.target import TritonEndpoint
from loadtest.errors import TargetError
from loadtest.observe.observer import local_triton
from loadtest.observe.process_memory import tree_rss_bytes
from loadtest.server.model_control import ConfigRejected, ModelRepository

MEMORY_FROM_STATISTICS = "Triton statistics memory_usage (model)"
MEMORY_FROM_RSS = "RSS of the local tritonserver process tree (server + backend stubs)"
MEMORY_UNKNOWN = "not measured (remote server; its backend reports no memory_usage)"


def _comparable(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True)


class TritonConfigurator:
    """ModelConfigurator over Triton's repository API (explicit model-control mode)."""

    def __init__(self, endpoint: TritonEndpoint) -> None:
        self.repository = ModelRepository(
            endpoint.url,
            endpoint.protocol,
            endpoint.model,
            tls=endpoint.tls,
            headers=endpoint.headers,
        )
        local = local_triton(endpoint.port)
        self.server_pid = local[0] if local else None
        self._original: dict[str, Any] | None = None
        self._changed = False

    async def check(self) -> None:
        """Before anything runs: explicit model control, or one line saying how to enable it."""
        await self.repository.check_explicit()

    async def loaded(self) -> dict[str, Any]:
        if self._original is None:
            self._original = await self.repository.config()
        return self._original

    async def apply(self, config: dict[str, Any]) -> None:
        self._changed = True
        await self.repository.load(config)

    async def restore(self) -> str:
        """Load the original configuration (as the server reported it) and check that the server
        reports it again; "" on success, else the one line to show."""
        if self._original is None or not self._changed:
            return ""
        try:
            await self.repository.load(self._original)
            now = await self.repository.config()
        except (ConfigRejected, TargetError) as exc:
            return f"could not load the original configuration again: {exc}"
        finally:
            await self.repository.close()
        if _comparable(now) != _comparable(self._original):
            return "the original configuration was loaded again, but the server reports another"
        self._changed = False
        return ""

    async def memory(self) -> tuple[int | None, str]:
        reported = await self.repository.memory_usage_bytes()
        if reported is not None:
            return reported, MEMORY_FROM_STATISTICS
        if self.server_pid is not None:
            rss = tree_rss_bytes(self.server_pid)
            if rss is not None:
                return rss, MEMORY_FROM_RSS
        return None, MEMORY_UNKNOWN

    async def close(self) -> None:
        await self.repository.close()
