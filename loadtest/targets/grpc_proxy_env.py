"""Whether grpcio would send a gRPC target's calls through an HTTP CONNECT proxy.

grpc-core reads the proxy from the environment (grpc-core's http_proxy_mapper.cc): the first of
`grpc_proxy`, `https_proxy`, `http_proxy` that is set (lower case only; set but empty = no
proxy; a value that is not an http:// URI with a host is ignored), unless the target's host is in
the first of `no_grpc_proxy`, `no_proxy` that is set (comma-separated: a host name, which also
covers its subdomains, or an address range in CIDR form). Loopback gets no exemption.

The setup calls (tritonclient's grpc.aio channel) follow these rules; the wire client connects
directly. Rather than measure one route and set up over another, the wire target refuses to
start where a proxy would apply (targets/triton_grpc.py).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from loadtest.core.secrets import redact_url
from loadtest.errors import ExitCode, SettingsError

PROXY_VARIABLES = ("grpc_proxy", "https_proxy", "http_proxy")
NO_PROXY_VARIABLES = ("no_grpc_proxy", "no_proxy")


class ProxyRefused(SettingsError):
    """A proxy variable applies to the target and the wire client cannot follow it: the
    environment contradicts the flags, exit 2 as for malformed ones."""

    exit_code = ExitCode.USAGE


def _first_set(names: tuple[str, ...], environ: Mapping[str, str]) -> tuple[str, str] | None:
    for name in names:
        if name in environ:
            return name, environ[name]
    return None


def _excluded(host: str, no_proxy: str) -> bool:
    host = host.strip("[]").lower()
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if host == entry or host.endswith("." + entry.lstrip(".")):
            return True
        if address is not None and "/" in entry:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


def grpc_proxy_for(host: str, environ: Mapping[str, str] | None = None) -> str | None:
    """`name=value` (credentials hidden) of the proxy variable grpcio would use for `host`,
    or None when it would connect directly."""
    env = os.environ if environ is None else environ
    found = _first_set(PROXY_VARIABLES, env)
    if found is None or not found[1]:
        return None
    name, value = found
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.scheme != "http" or not parts.netloc:
        return None  # grpc-core logs and connects directly
    no_proxy = _first_set(NO_PROXY_VARIABLES, env)
    if no_proxy is not None and _excluded(host, no_proxy[1]):
        return None
    return f"{name}={redact_url(value)}"


def refuse_proxy_for_wire(url: str) -> None:
    """The wire gRPC client connects directly: where grpcio (the setup calls) would use an HTTP
    CONNECT proxy for `url` (host:port), setup and load would take different routes, so the run
    is refused (ProxyRefused, exit 2)."""
    proxy = grpc_proxy_for(url.rpartition(":")[0])
    if proxy is not None:
        raise ProxyRefused(
            f"{proxy} applies to {url}, and the wire gRPC client does not go through "
            "proxies: add the host to no_grpc_proxy, or use --grpc-client grpcio"
        )
