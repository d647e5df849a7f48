"""Where each entry of a mix is measured: its own URL, or one embedded Triton serving them all.

The rule, checked for every entry before anything starts (one line naming the entry otherwise):
- an entry with its **own URL** is measured there, and something must answer there (a mix never
  puts the embedded server in place of an address someone wrote down for one model);
- entries **without a URL** share the default address of their protocol (127.0.0.1:8001 gRPC,
  :8000 HTTP). With `--embedded auto`, when nothing answers there, one embedded Triton is started
  serving every such entry's model (built first if it is a suite model missing its weights), and
  each entry reaches it over its own protocol; `always` starts it even if something answers;
  `never` requires an answer at the default;
- an entry of an OpenAI protocol must answer where it points, URL or default: the embedded
  Triton has no OpenAI front end, so it never stands in for one.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtest.core.secrets import redact_url
from loadtest.core.settings import TargetSettings
from loadtest.errors import LoadtestError, SettingsError, TargetError
from loadtest.server.deployment import Deployment, EmbeddedMode, answers, ensure_model_built
from loadtest.server.embedded import EmbeddedTriton


@dataclass(frozen=True)
class MixMemberTarget:
    """One entry's requested target, and whether its URL was its own (not the default)."""

    name: str
    target: TargetSettings
    url_given: bool


def _check_repository(repository: Path, name: str, model: str) -> None:
    if not (repository / model / "config.pbtxt").is_file():
        raise SettingsError(
            f"mix entry {name!r}: model {model!r} is not in {repository} (no "
            f"{repository / model / 'config.pbtxt'}); `loadtest models list` shows what is there"
        )


@contextlib.contextmanager
def resolve_mix(
    members: Sequence[MixMemberTarget],
    mode: EmbeddedMode,
    repository: Path,
    say: Callable[[str], None],
) -> Iterator[dict[str, Deployment]]:
    """Each entry's deployment, by name; the embedded Triton (if started) stops on exit."""
    defaults = [
        m
        for m in members
        if not m.url_given and not m.target.url.startswith("fake://") and m.target.is_triton
    ]
    for member in members:
        if member.target.url.startswith("fake://"):
            continue
        # an OpenAI entry is never served by the embedded Triton (it has no OpenAI front end)
        must_answer = (
            member.url_given or mode is EmbeddedMode.NEVER or member.target.protocol.is_openai
        )
        if must_answer and not answers(member.target.url, member.target.protocol):
            hint = "" if member.url_given else " (--embedded never)"
            raise TargetError(
                f"mix entry {member.name!r}: nothing answers at "
                f"{redact_url(member.target.url)} ({member.target.protocol.value}){hint}"
            )
    start = bool(defaults) and (
        mode is EmbeddedMode.ALWAYS
        or (
            mode is EmbeddedMode.AUTO
            and not all(answers(m.target.url, m.target.protocol) for m in defaults)
        )
    )
    if start:
        for member in defaults:
            if member.target.tls is not None:
                raise SettingsError(
                    f"mix entry {member.name!r}: the embedded Triton serves plaintext only; give "
                    "the entry the URL of a TLS deployment"
                )
            _check_repository(repository, member.name, member.target.model)
            try:
                ensure_model_built(repository, member.target.model, say)
            except LoadtestError as exc:
                raise type(exc)(f"mix entry {member.name!r}: {exc}") from None
    deployments = {m.name: Deployment(m.target, None) for m in members}
    if not start:
        yield deployments
        return
    models = sorted({m.target.model for m in defaults})
    server = EmbeddedTriton(repository, models=models)
    why = (
        "--embedded always"
        if mode is EmbeddedMode.ALWAYS
        else "nothing answers at the default address"
    )
    say(
        f"{why}: starting the embedded Triton (nvidia-pytriton) on loopback with models "
        f"{', '.join(models)} from {repository}"
    )
    try:
        server.start()
        say(f"embedded Triton ready in {server.startup_s:.1f} s (pid {server.pid})")
        for member in defaults:
            url = server.grpc_url if member.target.protocol.over_grpc else server.http_url
            deployments[member.name] = Deployment(
                dataclasses.replace(member.target, url=url), server
            )
        yield deployments
    finally:
        server.cleanup()
