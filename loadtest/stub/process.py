"""The stub as a child process on free loopback ports, for tests and benchmarks."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Stub:
    http_port: int
    grpc_port: int

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


@contextlib.contextmanager
def running_stub(*options: str, env: dict[str, str] | None = None) -> Iterator[Stub]:
    """`loadtest stub` on ports it picks; stopped (SIGTERM, by its PID) on exit.

    `options` are more `loadtest stub` flags (e.g. --tls-cert, --require-token).
    """
    command = [sys.executable, "-m", "loadtest.cli", "stub", "--http-port", "0", "--grpc-port", "0"]
    process = subprocess.Popen(
        [*command, *options],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "ready http=PORT grpc=PORT"
        if not line.startswith("ready"):
            raise RuntimeError(f"the stub did not start: {line!r}")
        ports = dict(part.split("=") for part in line.split()[1:])
        yield Stub(int(ports["http"]), int(ports["grpc"]))
    finally:
        process.terminate()
        process.wait(10)
