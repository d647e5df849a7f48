"""`loadtest stub`: the zero-compute KServe-v2 server, for measuring the client alone."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from loadtest.commands import options
from loadtest.commands.options import finite_float
from loadtest.core.secrets import secret_value
from loadtest.errors import LoadtestError, SettingsError
from loadtest.stub.service import Service, ServiceLaw


class GrpcServer(str, Enum):
    """The stub's gRPC side."""

    WIRE = "wire"  # stub/grpc_wire_server.py
    GRPCIO = "grpcio"  # stub/grpc_server.py


def stub(
    repository: Annotated[
        Path | None,
        typer.Option(help="Answer with these models' configs (others get a 16-float MLP's)."),
    ] = options.REPOSITORY,
    http_port: options.HttpPortOption = options.HTTP_PORT,
    grpc_port: options.GrpcPortOption = options.GRPC_PORT,
    tls_cert: Annotated[
        Path | None, typer.Option(help="Serve HTTPS and gRPC over TLS with this PEM certificate.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert.")] = None,
    tls_client_ca: Annotated[
        Path | None,
        typer.Option(help="Mutual TLS: require client certificates signed by this PEM CA."),
    ] = None,
    require_token: Annotated[
        str | None,
        typer.Option(
            help="Refuse requests without 'Authorization: Bearer TOKEN' (or Basic auth with "
            "TOKEN as password): HTTP 401, gRPC UNAUTHENTICATED. @env:VAR / @file:PATH read it.",
        ),
    ] = None,
    token_expires_after: Annotated[
        int,
        typer.Option(help="With --require-token: refuse all requests after this many (0: never)."),
    ] = 0,
    delay_ms: Annotated[
        float,
        typer.Option(
            parser=finite_float,
            help="Hold every inference answer back this long (a service time without compute); "
            "a request whose Triton 'timeout' parameter is shorter is rejected as Triton does.",
        ),
    ] = 0.0,
    servers: Annotated[
        int,
        typer.Option(
            help="Serve at most this many requests at a time; the others wait first come, first "
            "served (a queue in front of K servers, in virtual time: no compute), so latency "
            "grows with the load. 0 = every request at once. Needs --delay-ms.",
        ),
    ] = 0,
    service: Annotated[
        ServiceLaw,
        typer.Option(
            help="Each answer's service time: --delay-ms exactly (constant) or exponential with "
            "mean --delay-ms, drawn in arrival order from --service-seed.",
        ),
    ] = ServiceLaw.CONSTANT,
    service_seed: Annotated[int, typer.Option(help="Seed of the exponential service times.")] = 0,
    grpc_server: Annotated[
        GrpcServer,
        typer.Option(
            help="The gRPC side: 'wire' (lean HTTP/2, ~10x grpc.aio's rate: a roofline for the "
            "gRPC client) or 'grpcio' (grpc.aio, for a cross-check).",
        ),
    ] = GrpcServer.WIRE,
) -> None:
    """Serve every model instantly (zero compute, zeros out) on loopback until Ctrl-C.

    Whatever rate `loadtest server` cannot hold against it, it cannot hold against any server:
    it is the roofline of the client. Prints `ready http=PORT grpc=PORT` once listening; GET
    /v2/stub/counters says how many inference requests arrived, and when the last one did.
    """
    from loadtest.stub.access import StubTls, TokenGate
    from loadtest.stub.main import run

    if (tls_cert is None) != (tls_key is None):
        raise SettingsError("--tls-cert and --tls-key go together")
    if tls_client_ca is not None and tls_cert is None:
        raise SettingsError("--tls-client-ca needs --tls-cert and --tls-key")
    if token_expires_after < 0 or (token_expires_after and require_token is None):
        raise SettingsError("--token-expires-after takes a count ≥ 0, with --require-token")
    for flag, path in (
        ("--tls-cert", tls_cert),
        ("--tls-key", tls_key),
        ("--tls-client-ca", tls_client_ca),
    ):
        if path is not None and not path.is_file():
            raise SettingsError(f"{flag} {path}: no such file")
    tls = StubTls(tls_cert, tls_key, tls_client_ca) if tls_cert and tls_key else None
    gate = None
    if require_token is not None:
        token = secret_value(require_token, "--require-token")
        gate = TokenGate(token.reveal(), token_expires_after)
    if delay_ms < 0:
        raise LoadtestError(f"--delay-ms must be ≥ 0, got {delay_ms:g}")
    if servers < 0:
        raise SettingsError(f"--servers must be ≥ 0, got {servers}")
    if not delay_ms and (servers or service is not ServiceLaw.CONSTANT):
        raise SettingsError("--servers and --service need a service time: give --delay-ms")
    try:
        run(
            repository if repository and repository.is_dir() else None,
            http_port,
            grpc_port,
            tls,
            gate,
            Service(delay_ms / 1e3, servers, service, service_seed),
            grpc_server.value,
        )
    except OSError as exc:  # ssl.SSLError included: a certificate or key that does not load
        raise LoadtestError(f"cannot start the stub server: {exc.strerror or exc}") from None
