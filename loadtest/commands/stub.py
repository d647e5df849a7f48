"""`loadtest stub`: the zero-compute KServe-v2 server, for measuring the client alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loadtest.errors import LoadtestError


def stub(
    repository: Annotated[
        Path | None,
        typer.Option(help="Answer with these models' configs (others get a 16-float MLP's)."),
    ] = Path("model_repository"),
    http_port: Annotated[int, typer.Option(help="HTTP port; 0 = pick a free one.")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port; 0 = pick a free one.")] = 8001,
    delay_ms: Annotated[
        float,
        typer.Option(
            help="Hold every inference answer back this long (a service time without compute); "
            "a request whose Triton 'timeout' parameter is shorter is rejected as Triton does."
        ),
    ] = 0.0,
) -> None:
    """Serve every model instantly (zero compute, zeros out) on loopback until Ctrl-C.

    Whatever rate `loadtest server` cannot hold against it, it cannot hold against any server:
    it is the roofline of the client. Prints `ready http=PORT grpc=PORT` once listening; GET
    /v2/stub/counters says how many inference requests arrived, and when the last one did.
    """
    from loadtest.stub.main import run

    if delay_ms < 0:
        raise LoadtestError(f"--delay-ms must be ≥ 0, got {delay_ms:g}")
    try:
        run(
            repository if repository and repository.is_dir() else None,
            http_port,
            grpc_port,
            delay_ms / 1e3,
        )
    except OSError as exc:
        raise LoadtestError(f"cannot start the stub server: {exc.strerror or exc}") from None
