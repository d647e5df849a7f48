"""What the stub asks of a client beyond a well-formed request: TLS, and a token.

`StubTls` serves both listeners over TLS (with `client_ca`: mutual TLS, a client certificate that
CA signed is required). `TokenGate` checks `Authorization: Bearer TOKEN`, or Basic auth whose
password is TOKEN (so `user:TOKEN@host` in a URL passes too); `expires_after` > 0 accepts only
that many requests and then refuses every one, the way a token revoked mid-run would.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StubTls:
    cert: Path
    key: Path
    client_ca: Path | None = None

    def ssl_context(self, alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
        """A server context offering `alpn` (HTTP/1.1 for the HTTP side, h2 for gRPC)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.cert), str(self.key))
        if self.client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(str(self.client_ca))
        context.set_alpn_protocols(list(alpn))
        return context

    def grpc_credentials(self) -> Any:
        import grpc

        pair = (self.key.read_bytes(), self.cert.read_bytes())
        if self.client_ca is None:
            return grpc.ssl_server_credentials([pair])
        return grpc.ssl_server_credentials(
            [pair], root_certificates=self.client_ca.read_bytes(), require_client_auth=True
        )


class TokenGate:
    """Accepts requests carrying the token; counts them, for `expires_after`."""

    def __init__(self, token: str, expires_after: int = 0) -> None:
        self._token = token.encode()
        self.expires_after = expires_after
        self.accepted = 0

    def _carries_token(self, authorization: bytes | None) -> bool:
        if not authorization:
            return False
        scheme, _, credential = authorization.strip().partition(b" ")
        credential = credential.strip()
        if scheme.lower() == b"bearer":
            return hmac.compare_digest(credential, self._token)
        if scheme.lower() == b"basic":
            try:
                decoded = base64.b64decode(credential, validate=True)
            except (binascii.Error, ValueError):
                return False
            return hmac.compare_digest(decoded.partition(b":")[2], self._token)
        return False

    def admits(self, authorization: bytes | None) -> bool:
        if not self._carries_token(authorization):
            return False
        if self.expires_after and self.accepted >= self.expires_after:
            return False
        self.accepted += 1
        return True
