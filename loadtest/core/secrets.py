"""Secrets (header values, URL passwords) as a type that cannot be written by accident.

A `Secret` shows as `***` in `str`, `repr`, f-strings and `report.results.plain` (the one path to
JSON); `json.dumps` refuses it outright rather than guess. Only the code that puts it on the wire
calls `reveal()`. URLs are shown and written through `redact_url` alone, and a URL's password is
taken out of it (into an `Authorization: Basic` header) as soon as the settings are built, so what
is left in `TargetSettings.url` can be printed anywhere.

Header values can be given without putting them on a command line (shell history, `ps`):
`NAME:@env:VAR` reads the environment variable, `NAME:@file:PATH` the file (one trailing newline
dropped). Anything else after the first `:` is the value itself.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from loadtest.errors import SettingsError

REDACTED = "***"


class Secret:
    """A string that never shows itself: `str`, `repr` and formatting give `***`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value, for the wire only."""
        return self._value

    def __str__(self) -> str:
        return REDACTED

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __getstate__(self) -> str:  # pickled for worker processes and Ray actors, never shown
        return self._value

    def __setstate__(self, state: str) -> None:
        self._value = state


@dataclass(frozen=True)
class Header:
    """One request header (HTTP) / metadata entry (gRPC) whose value is secret."""

    name: str
    value: Secret

    def __str__(self) -> str:
        return f"{self.name}: {REDACTED}"


# Names valid both as HTTP header names (RFC 9110 tokens) and, lower-cased, as gRPC metadata keys.
_TOKEN = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.-]*$")
# Set by loadtest itself, or by the transport (HTTP/1.1 framing, HTTP/2 pseudo-headers, gRPC).
_RESERVED = {
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "inference-header-content-length",
    "user-agent",
}


def _value_from(spec: str, what: str) -> str:
    """`@env:VAR` -> the variable, `@file:PATH` -> the file's text, else the text itself."""
    if spec.startswith("@env:"):
        variable = spec[len("@env:") :]
        value = os.environ.get(variable)
        if not variable or value is None:
            raise SettingsError(f"{what}: environment variable {variable!r} is not set")
        return value
    if spec.startswith("@file:"):
        path = Path(spec[len("@file:") :])
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            raise SettingsError(f"{what}: cannot read {path}: {reason}") from None
        return text[:-1] if text.endswith("\n") else text
    return spec


def secret_value(spec: str, what: str) -> Secret:
    """A secret from `VALUE`, `@env:VAR` or `@file:PATH`; SettingsError names `what`, never
    the value."""
    value = _value_from(spec, what).strip()
    if not value:
        raise SettingsError(f"{what}: the value is empty")
    if any(ch in value for ch in "\r\n\0"):
        raise SettingsError(f"{what}: the value holds a line break or NUL (not allowed)")
    return Secret(value)


def parse_header(text: str) -> Header:
    """`--header NAME:VALUE` (or `NAME:@env:VAR`, `NAME:@file:PATH`) -> Header.

    The error names the header, never its value.
    """
    name, colon, spec = text.partition(":")
    name = name.strip()
    if not colon or not name:
        raise SettingsError("--header takes NAME:VALUE (or NAME:@env:VAR, NAME:@file:PATH)")
    if not _TOKEN.match(name):
        raise SettingsError(f"--header name {name!r} is not a valid header name")
    lower = name.lower()
    if lower.endswith("-bin"):  # #26: it was refused as one loadtest sets itself
        raise SettingsError(
            f"--header {name}: a name ending in -bin is binary gRPC metadata, which --header "
            "(text, the same for HTTP and gRPC) cannot send"
        )
    if lower in _RESERVED or lower.startswith("grpc-"):
        raise SettingsError(f"--header {name}: loadtest sets this header itself")
    return Header(name, secret_value(spec.strip(), f"--header {name}"))


def redact_url(url: str) -> str:
    """The URL as it may be shown or written: a password becomes `***` (`https://u:***@h:p`).

    Anything that does not parse as a URL with credentials is returned as is; a string that
    looks like it holds credentials but does not parse loses everything before its `@`.
    """
    try:
        parts = urlsplit(url if "://" in url else f"//{url}")
        password = parts.password
    except ValueError:
        return url if "@" not in url else f"{REDACTED}@{url.rsplit('@', 1)[1]}"
    if password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    redacted = urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{hostport}"))
    return redacted if "://" in url else redacted.removeprefix("//")


def split_url_credentials(url: str) -> tuple[str, Header | None]:
    """`scheme://user:password@host` -> (the URL with `***` for the password, the Basic
    Authorization header). A URL without a password is returned unchanged with None; one with a
    user but no password is refused (a token as a user name would otherwise be shown)."""
    try:
        parts = urlsplit(url if "://" in url else f"//{url}")
        user, password = parts.username, parts.password
    except ValueError:
        return url, None
    if user is not None and password is None:
        raise SettingsError(
            "--url names a user but no password: give user:password@host, or send a token "
            "with --header 'Authorization:@env:VAR'"
        )
    if password is None or password == REDACTED:
        return url, None
    token = base64.b64encode(f"{unquote(user or '')}:{unquote(password)}".encode()).decode()
    return redact_url(url), Header("Authorization", Secret(f"Basic {token}"))
