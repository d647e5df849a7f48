"""Real reverse proxies (Debian's nginx and HAProxy) in front of a test server, as the tests' own
processes: each on free loopback ports, with its own config, pid and logs in a temporary folder,
in the foreground (no system service, no daemon), stopped by its PID.

Production Tritons sit behind such proxies, and these close HTTP/2 connections on a schedule
(nginx's `keepalive_requests`: a GOAWAY after so many requests) and cap concurrent streams:
the load clients must lose no query to that (issue #26). A missing proxy skips its tests,
except with LOADTEST_REQUIRE_PROXIES=1 (set by .ci/run), where it fails them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REQUIRE_VARIABLE = "LOADTEST_REQUIRE_PROXIES"
START_LIMIT_S = 10.0


def proxy_binary(name: str) -> str:
    """The proxy's executable (Debian puts them in /usr/sbin), else skip (or fail, if required)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found:
        return found
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        pytest.fail(f"{name} is required ({REQUIRE_VARIABLE}=1) but not installed")
    pytest.skip(f"{name} not installed (apt-get install {name})")


def free_port() -> int:
    """A loopback port free now (the OS's pick; the proxy binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Proxy:
    """A running proxy: its ports by purpose ("grpc", "http", "grpcs"), its folder (logs)."""

    name: str
    ports: dict[str, int]
    directory: Path
    pid: int

    def url(self, purpose: str) -> str:
        return f"127.0.0.1:{self.ports[purpose]}"

    def log(self) -> str:
        """Its error log (nginx) or its output (HAProxy), for a failing test's message."""
        return "\n".join(
            path.read_text(errors="replace")[-4000:]
            for path in sorted(self.directory.glob("*.log"))
        )


def _wait_listening(process: subprocess.Popen[bytes], ports: list[int], directory: Path) -> None:
    deadline = time.monotonic() + START_LIMIT_S
    waiting = list(ports)
    while waiting:
        if process.poll() is not None:
            logs = "\n".join(p.read_text(errors="replace") for p in directory.glob("*.log"))
            raise RuntimeError(f"the proxy exited ({process.returncode}) at start:\n{logs}")
        try:
            with socket.create_connection(("127.0.0.1", waiting[0]), timeout=0.5):
                waiting.pop(0)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the proxy does not listen on {waiting[0]}") from None
            time.sleep(0.05)


@contextlib.contextmanager
def _running(
    name: str, command: list[str], ports: dict[str, int], directory: Path, output: Path
) -> Iterator[Proxy]:
    with output.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    try:
        _wait_listening(process, list(ports.values()), directory)
        yield Proxy(name, ports, directory, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def nginx_config(
    directory: Path,
    ports: dict[str, int],
    *,
    grpc_upstream: str | None,
    http_upstream: str | None,
    keepalive_requests: int,
    max_concurrent_streams: int,
    certificate: tuple[Path, Path] | None,
) -> str:
    """One worker; gRPC through `grpc_pass` over HTTP/2 (plaintext, and TLS terminated here if
    `certificate` is given), HTTP/1.1 through `proxy_pass` with keep-alive both sides."""
    d = directory
    servers = []
    http2_limits = (
        f"keepalive_requests {keepalive_requests};\n"
        f"    http2_max_concurrent_streams {max_concurrent_streams};"
    )
    if grpc_upstream is not None:
        grpc_location = "location / { grpc_pass grpc://grpc_upstream; }"
        servers.append(
            f"upstream grpc_upstream {{ server {grpc_upstream}; keepalive 16; }}\n"
            f"  server {{\n    listen 127.0.0.1:{ports['grpc']} http2;\n    {http2_limits}\n"
            f"    {grpc_location}\n  }}"
        )
        if certificate is not None:
            cert, key = certificate
            servers.append(
                f"server {{\n    listen 127.0.0.1:{ports['grpcs']} ssl http2;\n"
                f"    ssl_certificate {cert};\n    ssl_certificate_key {key};\n"
                f"    {http2_limits}\n    {grpc_location}\n  }}"
            )
    if http_upstream is not None:
        servers.append(
            f"upstream http_upstream {{ server {http_upstream}; keepalive 16; }}\n"
            f"  server {{\n    listen 127.0.0.1:{ports['http']};\n"
            f"    keepalive_requests {keepalive_requests};\n"
            "    location / {\n      proxy_pass http://http_upstream;\n"
            "      proxy_http_version 1.1;\n"
            '      proxy_set_header Connection "";\n    }\n  }'
        )
    body = "\n  ".join(servers)
    return f"""worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/client_body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  client_max_body_size 64m;
  {body}
}}
"""


@contextlib.contextmanager
def nginx(
    directory: Path,
    *,
    grpc_upstream: str | None = None,
    http_upstream: str | None = None,
    keepalive_requests: int = 100,
    max_concurrent_streams: int = 128,
    certificate: tuple[Path, Path] | None = None,
) -> Iterator[Proxy]:
    """nginx in front of `grpc_upstream` (host:port, HTTP/2 gRPC) and/or `http_upstream`
    (host:port, HTTP/1.1): ports "grpc", "grpcs" (with `certificate`: cert and key paths)
    and "http"."""
    binary = proxy_binary("nginx")
    directory.mkdir(parents=True, exist_ok=True)
    ports = {}
    if grpc_upstream is not None:
        ports["grpc"] = free_port()
        if certificate is not None:
            ports["grpcs"] = free_port()
    if http_upstream is not None:
        ports["http"] = free_port()
    config = directory / "nginx.conf"
    config.write_text(
        nginx_config(
            directory,
            ports,
            grpc_upstream=grpc_upstream,
            http_upstream=http_upstream,
            keepalive_requests=keepalive_requests,
            max_concurrent_streams=max_concurrent_streams,
            certificate=certificate,
        )
    )
    command = [binary, "-p", str(directory), "-c", str(config), "-e", str(directory / "error.log")]
    command += ["-g", "daemon off;"]
    with _running("nginx", command, ports, directory, directory / "stdout.log") as proxy:
        yield proxy


def haproxy_config(port: int, grpc_upstream: str, max_reuse: int) -> str:
    """HTTP/2 on both sides (`proto h2`); the backend connection is replaced after `max_reuse`
    requests, so the proxy's own upstream side rotates too."""
    return f"""global
  maxconn 1000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend grpc_in
  bind 127.0.0.1:{port} proto h2
  default_backend grpc_out
backend grpc_out
  server upstream {grpc_upstream} proto h2 max-reuse {max_reuse}
"""


@contextlib.contextmanager
def haproxy(directory: Path, *, grpc_upstream: str, max_reuse: int = 100) -> Iterator[Proxy]:
    """HAProxy in front of `grpc_upstream` (host:port), HTTP/2 both sides: port "grpc"."""
    binary = proxy_binary("haproxy")
    directory.mkdir(parents=True, exist_ok=True)
    ports = {"grpc": free_port()}
    config = directory / "haproxy.cfg"
    config.write_text(haproxy_config(ports["grpc"], grpc_upstream, max_reuse))
    command = [binary, "-f", str(config), "-db"]  # -db: foreground, no daemon
    with _running("haproxy", command, ports, directory, directory / "haproxy.log") as proxy:
        yield proxy
