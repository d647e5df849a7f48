"""`loadtest serve`: the embedded Triton in the foreground until Ctrl-C (or SIGTERM).

`--repository DIR` serves what DIR holds: every model in it (or the --model ones), as they are;
nothing is built or written there. Without it, loadtest's own model_repository/ is served: every
model whose weights are built, or, when none is, the default model, built first (one line says
what, how big and where).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from loadtest.commands import options
from loadtest.commands.options import port_number
from loadtest.errors import ExitCode, SettingsError
from loadtest.models import DEFAULT_SERVER_MODEL
from loadtest.report.console import make_console
from loadtest.server.deployment import ensure_model_built
from loadtest.server.embedded import EmbeddedTriton, Ports

console = make_console(stderr=True)


def serve(
    repository: Annotated[
        Path | None,
        typer.Option(
            help="Model repository to serve, as it is: every model in it (nothing is built or "
            "written there). Default: model_repository/, whose default model is built if missing.",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model", "-m", help="Load only these models (repeatable); default: all of them."
        ),
    ] = None,
    http_port: options.HttpPortOption = options.HTTP_PORT,
    grpc_port: options.GrpcPortOption = options.GRPC_PORT,
    metrics_port: Annotated[
        int, typer.Option(parser=port_number, help="Metrics port; 0 = pick a free one.")
    ] = 8002,
) -> None:
    """Serve a model repository with the embedded Triton (loopback only) until Ctrl-C."""
    names: list[str] | None
    if repository is not None:
        names = _named_repository_models(repository, model)
        load = model  # None: Triton loads every model in the repository
    else:
        repository = options.REPOSITORY
        # Every model already built, or the default suite model (built now) if none is.
        names = model or _built_models(repository) or [DEFAULT_SERVER_MODEL]
        for name in names:
            ensure_model_built(repository, name, lambda text: console.print(f"[dim]{text}[/]"))
        load = names
    ports = None
    if http_port and grpc_port and metrics_port:
        ports = Ports(http=http_port, grpc=grpc_port, metrics=metrics_port)
    server = EmbeddedTriton(repository, models=load, ports=ports)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        server.start()
        console.print(
            f"[green]Triton ready[/] in {server.startup_s:.1f} s (pid {server.pid}): "
            f"gRPC {server.grpc_url}  HTTP {server.http_url}  metrics {server.metrics_url}\n"
            f"models: {', '.join(names)}   log: {server.log_path}\nCtrl-C stops it."
        )
        while not stop.wait(0.5):
            if server.process is None or server.process.poll() is not None:
                console.print("[red]the embedded Triton exited[/]\n" + server.log_tail())
                raise typer.Exit(ExitCode.ERROR)
    finally:
        server.cleanup()
        console.print("Triton stopped.")


def _models_in(repository: Path) -> list[str]:
    """Every model directory of a repository (one with a config.pbtxt)."""
    return sorted(p.parent.name for p in repository.glob("*/config.pbtxt"))


def _named_repository_models(repository: Path, wanted: list[str] | None) -> list[str]:
    """The models a repository the user named will serve; SettingsError if it has none of them."""
    if not repository.is_dir():
        raise SettingsError(f"--repository {repository} is not a directory")
    present = _models_in(repository)
    if not present:
        raise SettingsError(f"--repository {repository} holds no model (no */config.pbtxt)")
    missing = [name for name in wanted or [] if name not in present]
    if missing:
        raise SettingsError(
            f"model {missing[0]!r} is not in {repository} (it holds {', '.join(present)}); "
            "loadtest serve does not build into a repository you name: loadtest models build "
            f"--repository {repository} {missing[0]}"
        )
    return list(wanted) if wanted else present


def _built_models(repository: Path) -> list[str]:
    """Models whose config exists and whose weights are built (others would fail to load)."""
    if not repository.is_dir():
        return []
    return sorted(
        p.parent.name
        for p in repository.glob("*/config.pbtxt")
        if any(p.parent.glob("[0-9]*/model.onnx"))
    )
