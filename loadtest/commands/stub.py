"""`loadtest stub`: the zero-compute KServe-v2 server, for measuring the client alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loadtest.commands import options
from loadtest.errors import LoadtestError


def stub(
    repository: Annotated[
        Path | None,
        typer.Option(help="Answer with these models' configs (others get a 16-float MLP's)."),
    ] = options.REPOSITORY,
    http_port: options.HttpPortOption = options.HTTP_PORT,
    grpc_port: options.GrpcPortOption = options.GRPC_PORT,
) -> None:
    """Serve every model instantly (zero compute, zeros out) on loopback until Ctrl-C.

    Whatever rate `loadtest server` cannot hold against it, it cannot hold against any server:
    it is the roofline of the client. Prints `ready http=PORT grpc=PORT` once listening.
    """
    from loadtest.stub.main import run

    try:
        run(repository if repository and repository.is_dir() else None, http_port, grpc_port)
    except OSError as exc:
        raise LoadtestError(f"cannot start the stub server: {exc.strerror or exc}") from None
