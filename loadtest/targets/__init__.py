"""Targets: what queries go to (Triton gRPC/HTTP and its streams, an OpenAI-compatible server,
native onnxruntime, the in-process fake).

The client stacks (tritonclient, aiohttp, onnxruntime) are imported lazily, per target kind, so a
run against one protocol never pays for the others. observe/ and stub/ import tritonclient too,
for Triton's statistics API and the stub's protobufs.
"""

from __future__ import annotations

from loadtest.core.secrets import Header
from loadtest.core.settings import GrpcOptions, TargetSettings, TlsSettings
from loadtest.core.target import ModelSpec, Target, TensorSpec

__all__ = ["ModelSpec", "Target", "TensorSpec", "target_for", "triton_target"]


def triton_target(
    url: str,
    protocol: str,
    model: str,
    version: str = "",
    timeout_s: float = 30.0,
    server_timeout_s: float = 0.0,
    *,
    tls: TlsSettings | None = None,
    headers: tuple[Header, ...] = (),
    grpc: GrpcOptions | None = None,
    ignore_eos: bool = False,
) -> Target:
    """A Triton target for 'grpc', 'http', 'grpc-stream' or 'http-stream', or an
    OpenAI-compatible server's for 'openai' or 'openai-chat' (imported lazily: each pulls in its
    client stack).

    `timeout_s` is the client's per-request deadline; `server_timeout_s` (0 = none) is sent to
    Triton as the request's "timeout" parameter; `ignore_eos` asks an OpenAI server for exactly
    max_tokens tokens. A `fake://` URL gives the in-process fake target
    instead (see targets/fake.py), which honours `timeout_s` too, and takes headers and URL
    credentials and ignores them. `grpc`: the gRPC client's options (--protocol grpc).
    """
    if url.startswith("fake://"):
        from loadtest.errors import SettingsError
        from loadtest.targets.fake import fake_from_url

        try:
            return fake_from_url(url, timeout_s)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    if protocol == "grpc":
        from loadtest.targets.triton_grpc import TritonGrpcTarget

        options = grpc or GrpcOptions()
        return TritonGrpcTarget(
            url,
            model,
            version,
            timeout_s,
            server_timeout_s,
            tls=tls,
            headers=headers,
            load_client=options.client,
            grpc_compression=options.compression,
            keepalive_s=options.keepalive_s,
            keepalive_timeout_s=options.keepalive_timeout_s,
            connections=options.connections,
        )
    if protocol == "grpc-stream":
        from loadtest.targets.triton_stream import TritonStreamTarget

        options = grpc or GrpcOptions()
        return TritonStreamTarget(
            url,
            model,
            version,
            timeout_s,
            server_timeout_s,
            tls=tls,
            headers=headers,
            load_client=options.client,
            grpc_compression=options.compression,
            keepalive_s=options.keepalive_s,
            keepalive_timeout_s=options.keepalive_timeout_s,
        )
    if protocol == "http-stream":
        from loadtest.targets.triton_sse import TritonSseTarget

        return TritonSseTarget(
            url, model, version, timeout_s, server_timeout_s, tls=tls, headers=headers
        )
    if protocol in ("openai", "openai-chat"):
        from loadtest.targets.openai_sse import OpenAiSseTarget

        return OpenAiSseTarget(
            url,
            model,
            timeout_s,
            chat=protocol == "openai-chat",
            ignore_eos=ignore_eos,
            tls=tls,
            headers=headers,
        )
    if protocol == "http":
        from loadtest.targets.triton_http import TritonHttpTarget

        return TritonHttpTarget(
            url, model, version, timeout_s, server_timeout_s, tls=tls, headers=headers
        )
    raise ValueError(f"unknown protocol {protocol!r}")


def target_for(settings: TargetSettings) -> Target:
    """The target the settings describe, TLS and headers included: the one way commands, local
    workers and Ray actors build a target, so none of them can drop what the others send."""
    return triton_target(
        settings.url,
        settings.protocol.value,
        settings.model,
        settings.model_version,
        settings.request_timeout_s,
        settings.server_timeout_s,
        tls=settings.tls,
        headers=settings.headers,
        grpc=GrpcOptions.of(settings),
        ignore_eos=settings.ignore_eos,
    )
