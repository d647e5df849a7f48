"""Flag groups: a command takes its target, sample, output, client and access flags as one
parameter each, and builds TargetFlags, ClientSettings and the like in one place.

Why a decorator: typer reads a command's flags from `inspect.signature`, one parameter per flag.
`@takes_groups` gives typer the flat signature it needs and the command the groups: a parameter
annotated with a group (a frozen dataclass whose fields are options.py's aliases, each with its
default) stands for the group's fields, in field order; the command is called with the group
built. `Annotated[Group, take("url", min_queries=100)]` takes a group without some of its flags
(those keep the field's default) or with other defaults for them. A group may hold a group.
Every flag keeps its name, help text, default and place in --help: only the signature is composed.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from loadtest.commands import options
from loadtest.commands.common import (
    access_flags,
    error_rules,
    max_duration_ns,
    min_duration_ns,
    parse_shapes,
)
from loadtest.core.settings import (
    AUTO_WORKERS,
    ClientSettings,
    LoopKind,
    Protocol,
    SharedMemoryKind,
)
from loadtest.scenarios.target_flags import AccessFlags, GrpcClientFlags, TargetFlags
from loadtest.server.deployment import EmbeddedMode

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Take:
    """How one command takes a group: `without` these flags, with these `defaults` instead."""

    without: tuple[str, ...] = ()
    defaults: tuple[tuple[str, Any], ...] = ()


def take(*without: str, **defaults: Any) -> Take:
    return Take(without, tuple(defaults.items()))


# --- the groups -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoint:
    """Where the target is and how to find or start it."""

    url: options.UrlOption = None
    protocol: options.ProtocolOption = Protocol.GRPC
    model_version: options.VersionOption = ""
    timeout: options.TimeoutOption = options.TIMEOUT_S
    server_timeout: options.ServerTimeoutOption = None
    embedded: options.EmbeddedOption = EmbeddedMode.AUTO
    repository: options.RepositoryOption = options.REPOSITORY
    grpc_client: options.GrpcClientOption = "wire"
    grpc_compression: options.GrpcCompressionOption = "none"
    grpc_keepalive: options.GrpcKeepaliveOption = 0.0
    connections: options.ConnectionsOption = 1

    def grpc(self) -> GrpcClientFlags:
        return GrpcClientFlags(
            self.grpc_client.strip().lower(),
            self.grpc_compression.strip().lower(),
            self.grpc_keepalive,
            self.connections,
        )


@dataclass(frozen=True)
class SampleLibrary:
    """The in-memory sample library: its seed, its size and where real inputs come from."""

    sample_seed: options.SampleSeedOption = options.SAMPLE_SEED
    samples: options.SamplesOption = options.SAMPLES
    input_data: options.InputDataOption = None
    shape: options.ShapeOption = None

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return parse_shapes(self.shape)


@dataclass(frozen=True)
class Output:
    """Where the result goes and what is shown while it is measured."""

    output: options.OutputOption = None
    records: options.RecordsOption = False
    live: options.LiveOption = True
    force: options.ForceOption = False
    html: options.HtmlOption = None


@dataclass(frozen=True)
class Client:
    """The load generator: its processes, their event loop, Ray, shared memory."""

    workers: options.WorkersOption = AUTO_WORKERS
    loop: options.LoopOption = LoopKind.AUTO
    ray: options.RayOption = ""
    shared_memory: options.SharedMemoryOption = SharedMemoryKind.NONE

    def settings(self) -> ClientSettings:
        return ClientSettings(
            workers=self.workers,
            loop=self.loop,
            ray_address=self.ray,
            shared_memory=self.shared_memory,
        )


@dataclass(frozen=True)
class Access:
    """TLS and request headers: every command that talks to a server."""

    tls: options.TlsOption = False
    ca_cert: options.CaCertOption = None
    client_cert: options.ClientCertOption = None
    client_key: options.ClientKeyOption = None
    header: options.HeaderOption = None

    def flags(self) -> AccessFlags:
        return access_flags(self.tls, self.ca_cert, self.client_cert, self.client_key, self.header)


@dataclass(frozen=True)
class RunLength:
    """How long a run lasts: its minimum duration and query count, and its cap."""

    duration: options.DurationOption = None
    min_queries: options.MinQueriesOption = 1
    max_duration: options.MaxDurationOption = 0.0

    def settings_fields(self, mlperf: bool, default_ns: int) -> dict[str, Any]:
        return {
            "min_duration_ns": min_duration_ns(self.duration, mlperf, default_ns),
            "min_query_count": self.min_queries,
            "max_duration_ns": max_duration_ns(self.max_duration),
        }


@dataclass(frozen=True)
class Checks:
    """What else a run is judged by: the error budget and abort rule, outputs, a response cache."""

    error_budget: options.ErrorBudgetOption = None
    check_outputs: options.CheckOutputsOption = 0.0
    same_sample: options.SameSampleOption = False
    abort_on_error_rate: options.AbortOnErrorRateOption = None
    window: options.WindowOption = options.ABORT_WINDOW_S

    def settings_fields(self, mlperf: bool) -> dict[str, Any]:
        return {
            **error_rules(self.error_budget, self.abort_on_error_rate, self.window, mlperf),
            "check_outputs": self.check_outputs,
            "same_sample": self.same_sample,
        }


def target_flags(
    model: str,
    endpoint: Endpoint,
    samples: SampleLibrary,
    access: Access,
    shared_memory: SharedMemoryKind = SharedMemoryKind.NONE,
) -> TargetFlags:
    """The one place a command's groups become TargetFlags."""
    return TargetFlags(
        model=model,
        url=endpoint.url,
        protocol=endpoint.protocol,
        model_version=endpoint.model_version,
        timeout_s=endpoint.timeout,
        embedded=endpoint.embedded,
        repository=endpoint.repository,
        input_data=samples.input_data,
        shapes=samples.shapes(),
        access=access.flags(),
        server_timeout_s=endpoint.server_timeout,
        shared_memory=shared_memory,
        grpc=endpoint.grpc(),
    )


# --- the decorator --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Slot:
    """One parameter of the command: a flag (`group` None) or a group built from its flags."""

    name: str
    group: type | None = None
    parts: tuple[_Slot, ...] = ()


def _group_of(hint: Any) -> tuple[type | None, Take]:
    """(the group class, how it is taken) when `hint` is a group, else (None, Take())."""
    taken = Take()
    if typing.get_origin(hint) is typing.Annotated:
        taken = next((m for m in hint.__metadata__ if isinstance(m, Take)), taken)
        hint = typing.get_args(hint)[0]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint, taken
    return None, taken


def _expand(name: str, hint: Any, default: Any, flat: dict[str, inspect.Parameter]) -> _Slot:
    group, taken = _group_of(hint)
    if group is None:
        if name in flat:
            raise TypeError(f"two flags are called {name!r}")
        flat[name] = inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hint
        )
        return _Slot(name)
    hints = typing.get_type_hints(group, include_extras=True)
    defaults = dict(taken.defaults)
    unknown = (set(taken.without) | set(defaults)) - {f.name for f in dataclasses.fields(group)}
    if unknown:
        raise TypeError(f"{group.__name__} has no flag {sorted(unknown)}")
    parts = tuple(
        _expand(f.name, hints[f.name], defaults.get(f.name, f.default), flat)
        for f in dataclasses.fields(group)
        if f.name not in taken.without
    )
    return _Slot(name, group, parts)


def _build(slot: _Slot, given: dict[str, Any]) -> Any:
    if slot.group is None:
        return given[slot.name]
    return slot.group(**{part.name: _build(part, given) for part in slot.parts})


def takes_groups(command: F) -> F:
    """The command as typer sees it: every group parameter replaced by its flags (see above)."""
    hints = typing.get_type_hints(command, include_extras=True)
    flat: dict[str, inspect.Parameter] = {}
    slots = [
        _expand(p.name, hints[p.name], p.default, flat)
        for p in inspect.signature(command).parameters.values()
    ]

    @functools.wraps(command)
    def flat_command(**given: Any) -> Any:
        return command(**{slot.name: _build(slot, given) for slot in slots})

    flat_command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        list(flat.values()), return_annotation=hints.get("return", inspect.Signature.empty)
    )
    flat_command.__annotations__ = {name: p.annotation for name, p in flat.items()}
    return typing.cast(F, flat_command)


__all__ = [
    "Access",
    "Checks",
    "Client",
    "Endpoint",
    "Output",
    "RunLength",
    "SampleLibrary",
    "take",
    "takes_groups",
    "target_flags",
]
