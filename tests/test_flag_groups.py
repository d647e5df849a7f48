"""commands/flag_groups.py: a command's flag groups become typer's flat signature and back."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from loadtest.commands import flag_groups as groups
from loadtest.commands import options
from loadtest.core.settings import Protocol, SharedMemoryKind


@dataclass(frozen=True)
class Outer:
    """A group holding a group, taken without one of its flags."""

    label: Annotated[str, typer.Option(help="A label.")] = "x"
    inner: Annotated[groups.Endpoint, groups.take("model_version")] = field(
        default_factory=groups.Endpoint
    )


def _app(command) -> typer.Typer:
    app = typer.Typer()
    app.command()(command)
    app.command("other")(lambda: None)  # two commands: typer then routes by name
    return app


def test_groups_flatten_in_order_and_are_built_back():
    seen = {}

    @groups.takes_groups
    def command(
        *,
        model: options.ModelOption = "tiny",
        run: Annotated[groups.RunLength, groups.take("max_duration", min_queries=100)],
        outer: Outer,
        client: groups.Client,
    ) -> None:
        seen.update(model=model, run=run, outer=outer, client=client)

    names = list(inspect.signature(command).parameters)
    assert names == [
        "model", "duration", "min_queries", "label", "url", "protocol", "timeout",
        "server_timeout", "embedded", "repository", "grpc_client", "grpc_compression",
        "grpc_keepalive", "connections", "ignore_eos", "workers", "loop", "ray",
        "shared_memory",
    ]  # fmt: skip
    assert inspect.signature(command).parameters["min_queries"].default == 100
    result = CliRunner().invoke(
        _app(command),
        ["command", "--url", "h:1", "--protocol", "http", "--label", "y", "--shared-memory",
         "system"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert seen["run"] == groups.RunLength(duration=None, min_queries=100, max_duration=0.0)
    assert seen["outer"].label == "y"
    assert seen["outer"].inner.url == "h:1" and seen["outer"].inner.protocol is Protocol.HTTP
    assert seen["outer"].inner.model_version == ""  # not taken: the field's default
    assert seen["client"].shared_memory is SharedMemoryKind.SYSTEM


def test_a_flag_the_group_does_not_have_or_a_flag_named_twice_is_refused():
    with pytest.raises(TypeError, match="no flag"):

        @groups.takes_groups
        def unknown(*, run: Annotated[groups.RunLength, groups.take("nope")]) -> None: ...

    with pytest.raises(TypeError, match="'url'"):

        @groups.takes_groups
        def twice(*, url: options.UrlOption = None, endpoint: groups.Endpoint) -> None: ...


def test_the_groups_build_target_flags_in_one_place():
    endpoint = groups.Endpoint(url="h:1", timeout=3.0, server_timeout=2.0)
    samples = groups.SampleLibrary(shape=["x:1,4"])
    access = groups.Access(header=["A: b"])
    flags = groups.target_flags("m", endpoint, samples, access, SharedMemoryKind.SYSTEM)
    assert (flags.model, flags.url, flags.timeout_s, flags.server_timeout_s) == ("m", "h:1", 3, 2)
    assert flags.shapes == {"x": (1, 4)} and flags.shared_memory is SharedMemoryKind.SYSTEM
    assert [h.name for h in flags.access.headers] == ["A"]


def test_the_grpc_client_flags_reach_the_target_settings():
    endpoint = groups.Endpoint(
        url="h:1", grpc_compression="gzip", grpc_keepalive=5.0, connections=4
    )
    flags = groups.target_flags("m", endpoint, groups.SampleLibrary(), groups.Access())
    settings = flags.target_settings()
    assert (settings.grpc_client, settings.grpc_compression) == ("wire", "gzip")
    assert (settings.grpc_keepalive_s, settings.connections) == (5.0, 4)
