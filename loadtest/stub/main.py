"""Run the stub: HTTP and gRPC listeners on one event loop until SIGINT/SIGTERM.

`loadtest stub` calls `serve`; tests and benchmarks start it as a subprocess with port 0 and read
the `ready http=PORT grpc=PORT` line it prints once both listeners are bound. With `tls` both
listeners serve TLS; with `gate` both require its token (see access.py). The gRPC side is
grpc_wire_server.py, or grpc.aio (grpc_server.py) with `--grpc-server grpcio`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from loadtest.stub.access import StubTls, TokenGate
from loadtest.stub.catalog import Behaviour, Catalog
from loadtest.stub.grpc_server import start_grpc
from loadtest.stub.grpc_wire_server import WireGrpcServer
from loadtest.stub.http_server import start_http
from loadtest.stub.service import Service

LOOPBACK = "127.0.0.1"


async def serve(
    repository: Path | None,
    http_port: int,
    grpc_port: int,
    tls: StubTls | None = None,
    gate: TokenGate | None = None,
    service: Service | None = None,
    grpc_kind: str = "wire",
) -> None:
    catalog = Catalog(repository)
    behaviour = Behaviour(service=service)
    context = tls.ssl_context() if tls is not None else None
    http = await start_http(catalog, LOOPBACK, http_port, context, gate, behaviour)
    stop_grpc: Callable[[], Awaitable[None]]
    if grpc_kind == "wire":
        wire = WireGrpcServer(catalog, behaviour, gate)
        h2_context = tls.ssl_context(("h2",)) if tls is not None else None
        try:
            grpc_bound = await wire.start(LOOPBACK, grpc_port, h2_context)
        except OSError as exc:
            message = f"cannot listen for gRPC on {LOOPBACK}:{grpc_port}: {exc.strerror or exc}"
            raise OSError(exc.errno, message) from None
        stop_grpc = wire.stop
    else:
        grpc_server, grpc_bound = await start_grpc(
            catalog, LOOPBACK, grpc_port, tls, gate, behaviour
        )
        stop_grpc = functools.partial(grpc_server.stop, grace=0.5)
    http_bound = http.sockets[0].getsockname()[1]
    # Stop on SIGINT/SIGTERM through the loop, installed before "ready" is announced: a signal
    # sent as soon as the stub says it is ready must not unwind the loop under grpc.aio.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    print(f"ready http={http_bound} grpc={grpc_bound}", flush=True)
    try:
        await stop.wait()
    finally:
        http.close()
        await stop_grpc()


def run(
    repository: Path | None,
    http_port: int,
    grpc_port: int,
    tls: StubTls | None = None,
    gate: TokenGate | None = None,
    service: Service | None = None,
    grpc_kind: str = "wire",
) -> None:
    """Serve on uvloop where it is installed (the stub must cost less than the client)."""
    serving = serve(repository, http_port, grpc_port, tls, gate, service, grpc_kind)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serving)
    else:
        uvloop.run(serving)
