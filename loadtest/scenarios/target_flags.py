"""What a command asks to measure: the target, how to find or start it, and its sample inputs.

Gathered once per command from its flags (commands/options.py declares them) and read by the run
flow (commands/common.py) and by `loadtest compare` (scenarios/experiments/compare_run.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from loadtest.core.prompts import PromptSettings
from loadtest.core.secrets import Header, parse_header
from loadtest.core.settings import Protocol, SharedMemoryKind, TargetSettings, TlsSettings
from loadtest.errors import SettingsError
from loadtest.server import deployment as deployment_module
from loadtest.server.deployment import EmbeddedMode


@dataclass(frozen=True)
class AccessFlags:
    """--tls, --ca-cert, --client-cert, --client-key and --header, parsed once."""

    tls: TlsSettings | None = None
    headers: tuple[Header, ...] = ()


def access_flags(
    tls: bool = False,
    ca_cert: Path | None = None,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    header: list[str] | None = None,
) -> AccessFlags:
    """Any TLS flag turns TLS on (a CA file or client certificate states the intent); the URL's
    scheme must then agree (TargetSettings refuses http:// or grpc:// with TLS)."""
    wants_tls = tls or any(p is not None for p in (ca_cert, client_cert, client_key))
    return AccessFlags(
        tls=TlsSettings(ca_cert, client_cert, client_key) if wants_tls else None,
        headers=tuple(parse_header(text) for text in header or []),
    )


@dataclass(frozen=True)
class GrpcClientFlags:
    """--grpc-client, --grpc-compression, --grpc-keepalive and --connections (TargetSettings
    checks them and says where they apply)."""

    client: str = "wire"
    compression: str = "none"
    keepalive_s: float = 0.0
    connections: int = 1


@dataclass(frozen=True, kw_only=True)
class TargetFlags:
    """The target-side flags, gathered once per command (keywords only: one way to build it)."""

    model: str
    url: str | None
    protocol: Protocol
    model_version: str
    timeout_s: float
    embedded: EmbeddedMode
    repository: Path
    input_data: Path | None
    shapes: dict[str, tuple[int, ...]]
    shared_memory: SharedMemoryKind = SharedMemoryKind.NONE
    access: AccessFlags = AccessFlags()
    server_timeout_s: float | None = None  # Triton's per-request "timeout" parameter
    grpc: GrpcClientFlags = GrpcClientFlags()
    ignore_eos: bool = False  # --protocol openai/openai-chat: exactly max_tokens per answer
    prompts: PromptSettings = field(default_factory=PromptSettings)  # engine/prompts/
    # --protocol was given (or the caller is a library, which always names it); False: the
    # default, which a decoupled model turns into grpc-stream (scenarios/run.stream_if_decoupled)
    protocol_given: bool = True

    def target_settings(self) -> TargetSettings:
        default_url = f"127.0.0.1:{deployment_module.default_port(self.protocol)}"
        if self.server_timeout_s is not None and self.server_timeout_s <= 0:
            raise SettingsError(f"--server-timeout must be > 0 s, got {self.server_timeout_s:g}")
        return TargetSettings(
            url=self.url or default_url,
            protocol=self.protocol,
            model=self.model,
            model_version=self.model_version,
            request_timeout_s=self.timeout_s,
            server_timeout_s=self.server_timeout_s or 0.0,
            tls=self.access.tls,
            headers=self.access.headers,
            grpc_client=self.grpc.client,
            grpc_compression=self.grpc.compression,
            grpc_keepalive_s=self.grpc.keepalive_s,
            connections=self.grpc.connections,
            ignore_eos=self.ignore_eos,
        )
