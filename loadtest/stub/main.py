"""Run the stub: HTTP and gRPC listeners on one event loop until SIGINT/SIGTERM.

`loadtest stub` calls `serve`; tests and benchmarks start it as a subprocess with port 0 and read
the `ready http=PORT grpc=PORT` line it prints once both listeners are bound. With `tls` both
listeners serve TLS; with `gate` both require its token (see access.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

from loadtest.stub.access import StubTls, TokenGate
from loadtest.stub.catalog import Behaviour, Catalog
from loadtest.stub.grpc_server import start_grpc
from loadtest.stub.http_server import start_http

LOOPBACK = "127.0.0.1"


async def serve(
    repository: Path | None,
    http_port: int,
    grpc_port: int,
    tls: StubTls | None = None,
    gate: TokenGate | None = None,
    delay_s: float = 0.0,
) -> None:
    catalog = Catalog(repository)
    behaviour = Behaviour(delay_s)
    context = tls.ssl_context() if tls is not None else None
    http = await start_http(catalog, LOOPBACK, http_port, context, gate, behaviour)
    grpc_server, grpc_bound = await start_grpc(catalog, LOOPBACK, grpc_port, tls, gate, behaviour)
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
        await grpc_server.stop(grace=0.5)


def run(
    repository: Path | None,
    http_port: int,
    grpc_port: int,
    tls: StubTls | None = None,
    gate: TokenGate | None = None,
    delay_s: float = 0.0,
) -> None:
    """Serve on uvloop where it is installed (the stub must cost less than the client)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(repository, http_port, grpc_port, tls, gate, delay_s))
    else:
        uvloop.run(serve(repository, http_port, grpc_port, tls, gate, delay_s))
