"""How every client of a Triton server connects: TLS contexts, request headers, failure lines.

One place for what the inference path (gRPC channel, http_wire's pool), tritonclient's metadata
clients and observe/'s statistics and metrics readers must agree on, so a run never sends its
queries over TLS with credentials and then reads statistics from the same server in plaintext
without them. `Credentials` (TLS and headers, gRPC's channel and call credentials) is what a
target passes on in its TritonEndpoint.

When a TLS connection fails, `explain_tls_failure` repeats the handshake with Python's ssl to say
why in one line (expired certificate, unknown CA, a plaintext server, a client certificate
required): gRPC's own message is a generic "failed to connect to all addresses".
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from loadtest.core.secrets import Header
from loadtest.core.settings import DEFAULT_GRPC_KEEPALIVE_TIMEOUT_S, TlsSettings
from loadtest.errors import SettingsError, TargetError
from loadtest.wire.grpc_wire import GrpcWire

# Error kinds of a refused credential, the same over HTTP and gRPC (see README).
UNAUTHENTICATED = "unauthenticated"  # HTTP 401, gRPC UNAUTHENTICATED: missing or wrong token
PERMISSION_DENIED = "permission-denied"  # HTTP 403, gRPC PERMISSION_DENIED: token not allowed
AUTH_KIND_BY_HTTP_STATUS = {401: UNAUTHENTICATED, 403: PERMISSION_DENIED}
AUTH_KIND_BY_GRPC_CODE = {
    "UNAUTHENTICATED": UNAUTHENTICATED,
    "PERMISSION_DENIED": PERMISSION_DENIED,
}
# Triton's restricted APIs (--grpc-restricted-protocol) answer a missing or wrong key with
# UNAVAILABLE and this message, where HTTP (--http-restricted-api) answers 403.
_TRITON_RESTRICTED = "This protocol is restricted"


def grpc_auth_kind(code: str, details: str) -> str | None:
    """The auth error kind of a gRPC status (name without 'StatusCode.'), else None."""
    if code == "UNAVAILABLE" and details.startswith(_TRITON_RESTRICTED):
        return PERMISSION_DENIED
    return AUTH_KIND_BY_GRPC_CODE.get(code)


@dataclass(frozen=True)
class Credentials:
    """TLS (None = plaintext) and the headers sent with every request to one server."""

    tls: TlsSettings | None = None
    headers: tuple[Header, ...] = ()

    def header_dict(self, lower: bool = False) -> dict[str, str]:
        """Names -> revealed values, for the wire (gRPC metadata keys must be lower-case)."""
        return {(h.name.lower() if lower else h.name): h.value.reveal() for h in self.headers}


PLAINTEXT = Credentials()


def auth_refusal(url: str, kind: str, transport: str, server: str = "Triton") -> str:
    """The one line for credentials refused on the first request (open / warm-up); `server`
    names what refused them."""
    if kind == PERMISSION_DENIED:
        return (
            f"{server} at {url} refused the request ({transport}: {kind}): the headers sent "
            "(--header, user:password@ in --url) do not grant it: missing, wrong, or not allowed"
        )
    return (
        f"{server} at {url} refused the request ({transport}: {kind}): a missing or wrong "
        "credential; pass it with --header 'Authorization:@env:VAR' (or user:password@ in --url)"
    )


def _read(path: Any, flag: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise SettingsError(f"{flag} {path}: {exc.strerror or exc}") from None


def ssl_context(tls: TlsSettings, alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
    """A client context verifying the server (system roots, or --ca-cert) and its host name."""
    try:
        context = ssl.create_default_context(
            cafile=str(tls.ca_cert) if tls.ca_cert is not None else None
        )
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(f"--ca-cert {tls.ca_cert}: not a PEM certificate ({exc})") from None
    if tls.client_cert is not None and tls.client_key is not None:
        try:
            context.load_cert_chain(str(tls.client_cert), str(tls.client_key))
        except (ssl.SSLError, OSError) as exc:
            raise SettingsError(
                f"--client-cert {tls.client_cert} / --client-key {tls.client_key}: cannot load "
                f"them as a PEM certificate and its key ({exc})"
            ) from None
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def _system_roots() -> bytes | None:
    """The system's CA bundle, so gRPC trusts what https does (None: gRPC's own roots)."""
    path = ssl.get_default_verify_paths().cafile
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def grpc_credentials(tls: TlsSettings) -> Any:
    """grpc.ChannelCredentials for the settings (files read once, here). The files are first
    checked by Python's ssl (ssl_context): grpc-core would log 3-5 C-level lines about a bad
    --ca-cert before any error of ours (#26)."""
    import grpc

    ssl_context(tls)  # one line (SettingsError) for an unusable PEM, before grpc-core sees it
    roots = _read(tls.ca_cert, "--ca-cert") if tls.ca_cert is not None else _system_roots()
    key = _read(tls.client_key, "--client-key") if tls.client_key is not None else None
    chain = _read(tls.client_cert, "--client-cert") if tls.client_cert is not None else None
    return grpc.ssl_channel_credentials(
        root_certificates=roots, private_key=key, certificate_chain=chain
    )


def _plugin(headers: dict[str, str]) -> Any:
    from tritonclient._plugin import InferenceServerClientPlugin

    class HeaderPlugin(InferenceServerClientPlugin):
        """Adds the credentials' headers to every tritonclient request."""

        def __call__(self, request: Any) -> None:
            request.headers.update(headers)

    return HeaderPlugin()


def grpc_client(url: str, credentials: Credentials) -> Any:
    """tritonclient.grpc.aio client over TLS or not, sending the headers as metadata."""
    import tritonclient.grpc.aio as grpcclient

    if credentials.tls is not None:
        client = grpcclient.InferenceServerClient(url, creds=grpc_credentials(credentials.tls))
    else:
        client = grpcclient.InferenceServerClient(url)
    if credentials.headers:
        client.register_plugin(_plugin(credentials.header_dict(lower=True)))
    return client


async def connected_wire(
    url: str,
    path: str,
    credentials: Credentials,
    timeout_s: float,
    setup_timeout_s: float,
    *,
    compression: str | None = None,
    keepalive_s: float = 0.0,
    keepalive_timeout_s: float = DEFAULT_GRPC_KEEPALIVE_TIMEOUT_S,
) -> GrpcWire:
    """The wire gRPC client for `path` at `url` (host:port), its connection open (TLS: ALPN
    h2), the headers as metadata on every call; one error line if it cannot be reached."""
    host, _, port = url.rpartition(":")
    tls = credentials.tls
    wire = GrpcWire(
        host.strip("[]"),
        int(port),
        path,
        timeout_s,
        tuple(credentials.header_dict(lower=True).items()),
        ssl_context(tls, ("h2",)) if tls is not None else None,
        compression=compression,
        keepalive_s=keepalive_s,
        keepalive_timeout_s=keepalive_timeout_s,
    )
    try:
        await wire.connect(setup_timeout_s)
    except (OSError, asyncio.TimeoutError) as exc:
        wire.close()
        reason = getattr(exc, "strerror", None) or str(exc) or "timed out"
        raise TargetError(f"cannot reach Triton over gRPC at {url}: {reason}") from None
    return wire


def http_client(url: str, credentials: Credentials, conn_timeout: float = 5) -> Any:
    """tritonclient.http.aio client over https or http, sending the headers."""
    import tritonclient.http.aio as httpclient

    if credentials.tls is not None:
        client = httpclient.InferenceServerClient(
            url, conn_timeout=conn_timeout, ssl=True, ssl_context=ssl_context(credentials.tls)
        )
    else:
        client = httpclient.InferenceServerClient(url, conn_timeout=conn_timeout)
    if credentials.headers:
        client.register_plugin(_plugin(credentials.header_dict()))
    return client


def _verify_reason(exc: ssl.SSLCertVerificationError, host: str) -> str:
    message = (exc.verify_message or str(exc)).lower()
    if "expired" in message:
        return "the server's certificate has expired"
    if "not yet valid" in message:
        return "the server's certificate is not valid yet"
    if "hostname" in message or "ip address mismatch" in message:
        return f"the server's certificate is not for {host}"
    if "issuer" in message or "self-signed" in message or "self signed" in message:
        return (
            "the server's certificate is not signed by a trusted CA (--ca-cert names the CA "
            "to trust)"
        )
    return f"the server's certificate was refused: {exc.verify_message or exc}"


def _ssl_reason(exc: ssl.SSLError) -> str:
    text = f"{exc.reason or ''} {exc}".lower()
    if any(
        hint in text for hint in ("wrong version", "record layer", "packet length", "http request")
    ):
        return (
            "the server does not speak TLS (a plaintext server? then use http:// or grpc:// "
            "and drop the TLS flags)"
        )
    if "certificate required" in text or "certificate_required" in text:
        return "the server requires a client certificate (--client-cert and --client-key)"
    if "unknown ca" in text or "bad certificate" in text or "certificate unknown" in text:
        return "the server refused the client certificate (not signed by a CA it trusts)"
    return f"TLS handshake failed: {exc.reason or exc}"


def explain_tls_failure(
    host: str, port: int, tls: TlsSettings, alpn: tuple[str, ...], timeout_s: float = 3.0
) -> str | None:
    """Why a TLS connection to host:port fails, in words; None when the handshake works.

    Blocking (call it in a thread); used only after a connection has already failed.
    """
    context = ssl_context(tls, alpn)
    try:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=host) as wrapped,
        ):
            # TLS 1.3 servers refuse a client certificate (or its absence) after the handshake:
            # an alert, or the connection closed before anything was asked.
            wrapped.settimeout(0.3)
            closed = False
            with contextlib.suppress(TimeoutError):
                closed = wrapped.recv(1) == b""
            if closed:
                if tls.client_cert is None:
                    return (
                        "the server closed the connection right after the TLS handshake: it "
                        "requires a client certificate (--client-cert and --client-key)"
                    )
                return (
                    "the server closed the connection right after the TLS handshake: it "
                    "refused the client certificate"
                )
    except ssl.SSLCertVerificationError as exc:
        return _verify_reason(exc, host)
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError):
        return (
            "the server ended the connection during the TLS handshake (a plaintext server, or "
            "one that wants a client certificate?)"
        )
    except ssl.SSLError as exc:
        return _ssl_reason(exc)
    except OSError:
        return None  # not a TLS problem (refused, unreachable): the caller's message stands
    return None


def speaks_tls(host: str, port: int, alpn: tuple[str, ...], timeout_s: float = 2.0) -> bool:
    """Does a TLS handshake with host:port complete (certificate not checked)? For explaining
    a plaintext connection that failed: the server may want TLS. Blocking."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(list(alpn))
    try:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return True
    except OSError:
        return False


async def plaintext_hint(host: str, port: int, alpn: tuple[str, ...], tls_scheme: str) -> str:
    """' (the server speaks TLS: ...)' when it does, else ''."""
    import asyncio

    if await asyncio.to_thread(speaks_tls, host, port, alpn):
        return f" (the server speaks TLS: use {tls_scheme}:// or --tls)"
    return ""


async def explain_tls_failure_async(
    host: str, port: int, tls: TlsSettings, alpn: tuple[str, ...]
) -> str | None:
    import asyncio

    return await asyncio.to_thread(explain_tls_failure, host, port, tls, alpn)
