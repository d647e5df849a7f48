"""The stub as a child process on free loopback ports, for tests and benchmarks."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Stub:
    http_port: int
    grpc_port: int
    pid: int = 0

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def counters(self, timeout_s: float = 5.0) -> dict[str, int]:
        """{"infer_count": inference requests so far, "last_infer_unix_ns": the last arrival}."""
        url = f"http://{self.http_url}/v2/stub/counters"
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return dict(json.loads(response.read()))


@contextlib.contextmanager
def running_stub(
    *options: str, env: dict[str, str] | None = None, delay_ms: float = 0.0
) -> Iterator[Stub]:
    """`loadtest stub` on ports it picks; stopped (SIGTERM, by its PID) on exit.

    `options` are more `loadtest stub` flags (e.g. --tls-cert, --require-token).
    """
    command = [sys.executable, "-m", "loadtest.cli", "stub", "--http-port", "0", "--grpc-port", "0"]
    if delay_ms:
        command += ["--delay-ms", str(delay_ms)]
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
        yield Stub(int(ports["http"]), int(ports["grpc"]), process.pid)
    finally:
        process.terminate()
        process.wait(10)
