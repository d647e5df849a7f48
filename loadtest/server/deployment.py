"""Finds the Triton to measure, or starts the embedded one when nothing answers on loopback.

The client commands measure a deployment at `--url`. When nothing answers there and the URL is
a Triton one on loopback (we never start servers elsewhere, nor in place of another kind of
server: fake://, a URL with a path such as an OpenAI-style http://host/v1, or any URL of an
OpenAI protocol, which TargetSettings.is_triton never counts as Triton), the embedded
Triton from the nvidia-pytriton wheel is started on free loopback ports, serving just the
requested model from the repository, and stopped afterwards. The caller is told which happened,
so a report never passes off the embedded server as the user's deployment. A suite model whose
weights are missing is built first, and said so (what, how big, where), but only into loadtest's
own model_repository/: a repository the user named is never written into.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import ipaddress
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from loadtest.core.secrets import redact_url
from loadtest.core.settings import Protocol, TargetSettings, url_scheme
from loadtest.errors import ModelBuildError, SettingsError, TargetError
from loadtest.server.embedded import EmbeddedTriton
from loadtest.targets.triton_common import DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT, host_port


class EmbeddedMode(str, enum.Enum):
    AUTO = "auto"  # start it only when nothing answers at a loopback --url
    ALWAYS = "always"  # start it even if something answers (on free ports)
    NEVER = "never"  # measure --url or fail


@dataclass(frozen=True)
class Deployment:
    """The resolved target settings and, when we started it, the embedded server."""

    target: TargetSettings
    embedded: EmbeddedTriton | None

    @property
    def metrics_url(self) -> str | None:
        return self.embedded.metrics_url if self.embedded else None


def default_port(protocol: Protocol) -> int:
    return DEFAULT_GRPC_PORT if protocol.over_grpc else DEFAULT_HTTP_PORT


def is_loopback(url: str, protocol: Protocol) -> bool:
    host = host_port(url, default_port(protocol)).rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def answers(url: str, protocol: Protocol, timeout_s: float = 1.0) -> bool:
    """Does anything accept a TCP connection at the URL? (Cheap; the target checks the rest.)"""
    host, port = host_port(url, default_port(protocol)).rsplit(":", 1)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


def _size(n_bytes: int) -> str:
    if n_bytes >= 1_000_000_000:
        return f"{n_bytes / 1e9:.1f} GB"
    if n_bytes >= 1_000_000:
        return f"{n_bytes / 1e6:.0f} MB"
    return f"{max(1, round(n_bytes / 1e3))} kB"


def ensure_model_built(repository: Path, model: str, say: Callable[[str], None]) -> None:
    """Build a suite model's weights if loadtest's own repository lacks them (a fresh clone has
    none), after one line saying what, how big and where; a repository the user named is never
    written into (ModelBuildError, naming the command that builds it)."""
    from loadtest.models import SUITE, build_repository, is_default_repository

    onnx = repository / model / "1" / "model.onnx"
    if model not in SUITE:
        return
    side_files = SUITE[model].side_files
    wanted = [onnx, *(onnx.parent / name for name in (side_files.names if side_files else ()))]
    missing = [path for path in wanted if not path.exists()]  # the decoder needs its tokenizer too
    if not missing:
        return
    if not is_default_repository(repository):
        raise ModelBuildError(
            f"model {model!r} is not built in {repository} (no {missing[0]}); loadtest does not "
            f"write into a repository you name: loadtest models build --repository {repository} "
            f"{model}"
        )
    say(f"building model {model!r} ({_size(SUITE[model].approx_bytes)}) into {onnx} (first use)")
    build_repository(repository, [model])


@contextlib.contextmanager
def resolve(
    target: TargetSettings,
    mode: EmbeddedMode,
    repository: Path,
    say: Callable[[str], None],
) -> Iterator[Deployment]:
    """Yield the deployment to measure; stops the embedded server on exit, whatever happens."""
    if url_scheme(target.url) == "fake":
        yield Deployment(target, None)
        return
    if mode is EmbeddedMode.ALWAYS and target.protocol.is_openai:
        raise SettingsError(
            f"--embedded always starts a Triton, which does not speak --protocol "
            f"{target.protocol.value} (the embedded Triton 2.51 has no OpenAI front end): drop "
            "--embedded always and point --url at an OpenAI-compatible server"
        )
    if mode is EmbeddedMode.ALWAYS and not target.is_triton:
        raise SettingsError(
            f"--embedded always starts a Triton, but --url {redact_url(target.url)} is not a "
            "Triton endpoint (it names a path): drop --embedded always"
        )
    if target.tls is not None and mode is EmbeddedMode.ALWAYS:
        raise SettingsError(
            "the embedded Triton serves plaintext only: --embedded always cannot be measured "
            "over TLS (drop https:// / grpcs:// and the TLS flags, or --embedded)"
        )
    # Over TLS the embedded (plaintext) server is never a stand-in: that would be a downgrade.
    start = mode is EmbeddedMode.ALWAYS or (
        mode is EmbeddedMode.AUTO
        and target.is_triton
        and target.tls is None
        and is_loopback(target.url, target.protocol)
        and not answers(target.url, target.protocol)
    )
    if not start:
        checked = mode is EmbeddedMode.NEVER or target.tls is not None
        if checked and not answers(target.url, target.protocol):
            if mode is EmbeddedMode.NEVER:
                what = (
                    "start Triton there or drop --embedded never"
                    if target.is_triton
                    else "start the server there"  # an OpenAI-compatible one: never embedded
                )
                raise TargetError(
                    f"nothing answers at {redact_url(target.url)} ({target.protocol.value}); {what}"
                )
            if target.tls is not None:
                raise TargetError(
                    f"nothing answers at {target.url} ({target.protocol.value} over TLS); the "
                    "embedded Triton is not started in its place, since it serves plaintext only"
                )
        yield Deployment(target, None)
        return
    ensure_model_built(repository, target.model, say)
    server = EmbeddedTriton(repository, models=[target.model])
    say(
        f"nothing answers at {target.url}: starting the embedded Triton (nvidia-pytriton) "
        f"on loopback with model {target.model!r} from {repository}"
    )
    try:
        server.start()
        url = server.grpc_url if target.protocol.over_grpc else server.http_url
        say(f"embedded Triton ready in {server.startup_s:.1f} s at {url} (pid {server.pid})")
        resolved = dataclasses.replace(target, url=url)  # headers and timeouts kept; TLS is None
        yield Deployment(resolved, server)
    finally:
        server.cleanup()
