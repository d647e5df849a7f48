"""Targets: what queries go to (Triton gRPC/HTTP, native onnxruntime, the in-process fake).

The client stacks (tritonclient, aiohttp, onnxruntime) are imported lazily, per target kind, so a
run against one protocol never pays for the others. observe/ and stub/ import tritonclient too,
for Triton's statistics API and the stub's protobufs.
"""

from loadtest.core.target import ModelSpec, Target, TensorSpec

__all__ = ["ModelSpec", "Target", "TensorSpec", "triton_target"]


def triton_target(
    url: str, protocol: str, model: str, version: str = "", timeout_s: float = 30.0
) -> Target:
    """A Triton target for 'grpc' or 'http' (imported lazily: each pulls in its client stack).

    A `fake://` URL gives the in-process fake target instead (see targets/fake.py).
    """
    if url.startswith("fake://"):
        from loadtest.errors import SettingsError
        from loadtest.targets.fake import fake_from_url

        try:
            return fake_from_url(url)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    if protocol == "grpc":
        from loadtest.targets.triton_grpc import TritonGrpcTarget

        return TritonGrpcTarget(url, model, version, timeout_s)
    if protocol == "http":
        from loadtest.targets.triton_http import TritonHttpTarget

        return TritonHttpTarget(url, model, version, timeout_s)
    raise ValueError(f"unknown protocol {protocol!r}")
