"""Targets: what queries go to. Only this package imports tritonclient, aiohttp, onnxruntime."""

from loadtest.core.target import ModelSpec, Target, TensorSpec

__all__ = ["ModelSpec", "Target", "TensorSpec", "triton_target"]


def triton_target(
    url: str,
    protocol: str,
    model: str,
    version: str = "",
    timeout_s: float = 30.0,
    server_timeout_s: float = 0.0,
) -> Target:
    """A Triton target for 'grpc' or 'http' (imported lazily: each pulls in its client stack).

    `timeout_s` is the client's per-request deadline; `server_timeout_s` (0 = none) is sent to
    Triton as the request's "timeout" parameter. A `fake://` URL gives the in-process fake target
    instead (see targets/fake.py), which honours `timeout_s` too.
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

        return TritonGrpcTarget(url, model, version, timeout_s, server_timeout_s)
    if protocol == "http":
        from loadtest.targets.triton_http import TritonHttpTarget

        return TritonHttpTarget(url, model, version, timeout_s, server_timeout_s)
    raise ValueError(f"unknown protocol {protocol!r}")
