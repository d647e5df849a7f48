"""The stub's HTTP/REST side: KServe v2 over HTTP/1.1 keep-alive, parsed by httptools (llhttp).

A raw asyncio Protocol rather than a web framework: each answer is a cached byte string written
straight to the transport, which keeps the stub's cost per request far below the client's.
Shared-memory registration is refused (400), which is what a server without shared memory says.
With a delay (stub --delay-ms; a queue with --servers, stub/service.py) inference answers are
written that much later, and the request's JSON header is read for Triton's "timeout" parameter
(see catalog.Behaviour); without one, bodies are not even looked at. GET /v2/stub/counters is
never cached. POST .../generate_stream answers server-sent events, one token per event, timed by
the model's StreamLaw (stub/sse.py); so do POST /v1/completions and /v1/chat/completions in
OpenAI's shape (stub/openai_sse.py, with GET /v1/models); a streamed request's body is always
read.
With a TokenGate, a request without the token gets 401 (`_GatedHttpServerConnection`: only then
are headers parsed at all); with an ssl context the listener is HTTPS.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any, cast

import httptools

from loadtest.core.units import us_to_s
from loadtest.stub.access import TokenGate
from loadtest.stub.catalog import STUB_VERSION, TIMEOUT_EXPIRED, Behaviour, Catalog
from loadtest.stub.openai_sse import MODELS_PATH, POST_PATHS, models_json, openai_answer
from loadtest.stub.sse import SsePlan, StreamPlan, stream_answer

_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    503: b"Service Unavailable",
}
_HEADER_LENGTH = b"inference-header-content-length"
_COUNTERS = "/v2/stub/counters"
_GENERATE_STREAM = b"/generate_stream"
_OPENAI_POSTS = {path.encode() for path in POST_PATHS}


def _response(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    lines = [b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Error"))]
    for key, value in (headers or {"Content-Type": "application/json"}).items():
        lines.append(f"{key}: {value}".encode())
    lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _json(status: int, payload: Any) -> bytes:
    return _response(status, json.dumps(payload, separators=(",", ":")).encode())


class _Router:
    """(method, path) -> (full response bytes, is it an inference), cached per request line."""

    def __init__(self, catalog: Catalog, behaviour: Behaviour) -> None:
        self.catalog = catalog
        self.behaviour = behaviour
        self._cache: dict[tuple[bytes, bytes], tuple[bytes, bool]] = {}

    def answer(self, method: bytes, url: bytes) -> tuple[bytes, bool]:
        key = (method, url)
        cached = self._cache.get(key)
        if cached is None:
            path = url.decode().split("?")[0]
            if path == _COUNTERS:
                return _response(200, self.behaviour.counters_json()), False
            infer = method == b"POST" and path.endswith("/infer")
            cached = (self._build(method.decode(), path), infer)
            if len(self._cache) < 10_000:
                self._cache[key] = cached
        return cached

    def _build(self, method: str, path: str) -> bytes:
        parts = [p for p in path.split("/") if p]
        if path.rstrip("/") == MODELS_PATH and method == "GET":
            return _json(200, models_json(self.catalog))
        if parts[:1] != ["v2"]:
            return _json(404, {"error": f"unknown path {path}"})
        rest = parts[1:]
        if not rest:
            return _json(200, {"name": "loadtest-stub", "version": STUB_VERSION, "extensions": []})
        if rest in (["health", "live"], ["health", "ready"]):
            return _response(200, b"")
        if rest[0] == "systemsharedmemory" or rest[0] == "cudasharedmemory":
            return _json(400, {"error": "the loadtest stub does not support shared memory"})
        if rest[0] != "models" or len(rest) < 2:
            return _json(404, {"error": f"unknown path {path}"})
        model = self.catalog.model(rest[1])
        tail = rest[2:]
        if len(tail) >= 2 and tail[0] == "versions":
            tail = tail[2:]
        if not tail:
            return _json(200, model.metadata_json())
        if tail == ["ready"]:
            return _response(200, b"")
        if tail == ["config"]:
            return _json(200, model.config_json())
        if tail == ["stats"]:
            return _json(200, {"model_stats": []})
        if tail == ["infer"] and method == "POST":
            body, header_length = model.infer_response_http()
            headers = {
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(header_length),
            }
            return _response(200, body, headers)
        return _json(404, {"error": f"unknown path {path}"})


class _HttpServerConnection(asyncio.Protocol):
    def __init__(self, router: _Router) -> None:
        self.router = router
        self.delay_s = router.behaviour.delay_s
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.header_length = 0
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(_json(400, {"error": "malformed HTTP request"}))
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.delay_s and name.lower() == _HEADER_LENGTH:
            self.header_length = int(value)

    def on_body(self, body: bytes) -> None:
        if self.delay_s or self._streamed():
            self.body.append(body)

    def _streamed(self) -> bool:
        """Is the request being received a generate_stream or OpenAI one (answered in
        events)?"""
        path = self.url.split(b"?")[0]
        return path.endswith(_GENERATE_STREAM) or path in _OPENAI_POSTS

    def _server_timeout_us(self) -> int:
        """Triton's "timeout" parameter of the request just received (0 = none)."""
        body = b"".join(self.body)
        header = body[: self.header_length] if self.header_length else body
        try:
            parameters = json.loads(header).get("parameters") or {}
            return int(parameters.get("timeout", 0))
        except (ValueError, AttributeError, TypeError):
            return 0

    def on_message_complete(self) -> None:
        assert self.transport is not None
        if self.parser.get_method() == b"POST" and self._streamed():
            self._stream()
            return
        response, infer = self.router.answer(self.parser.get_method(), self.url)
        self.url = b""
        keep_alive = self.parser.should_keep_alive()
        if infer:
            behaviour = self.router.behaviour
            behaviour.arrived()
            if self.delay_s:
                timeout_us = self._server_timeout_us()
                self.body, self.header_length = [], 0
                if behaviour.rejects(timeout_us):
                    response, delay = _json(503, {"error": TIMEOUT_EXPIRED}), us_to_s(timeout_us)
                else:
                    delay = behaviour.hold_s()
                asyncio.get_running_loop().call_later(delay, self._send, response, keep_alive)
                return
        self._send(response, keep_alive)

    def _stream(self) -> None:
        """A generate_stream or OpenAI request: its answer's events as its tokens fall due."""
        path = self.url.decode().split("?")[0]
        body, self.body, self.header_length = b"".join(self.body), [], 0
        self.url = b""
        self.router.behaviour.arrived()
        keep_alive = self.parser.should_keep_alive()
        catalog = self.router.catalog
        plan: SsePlan
        if path in POST_PATHS:
            answer = openai_answer(catalog, path, body)
            if isinstance(answer, tuple):
                self._send(_json(*answer), keep_alive)
                return
            plan = answer
        else:
            parts = [p for p in path.split("/") if p]
            plan = StreamPlan(catalog.model(parts[2] if len(parts) > 2 else ""), body)
        stream_answer(plan, self._write, lambda: self._send(b"", keep_alive))

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _send(self, response: bytes, keep_alive: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(response)
        if not keep_alive:
            self.transport.close()


_UNAUTHORIZED = _response(
    401,
    json.dumps({"error": "missing or wrong token"}).encode(),
    {"Content-Type": "application/json", "WWW-Authenticate": "Bearer"},
)


class _GatedHttpServerConnection(_HttpServerConnection):
    """A connection whose every request must carry the gate's token (else 401)."""

    def __init__(self, router: _Router, gate: TokenGate) -> None:
        super().__init__(router)
        self.gate = gate
        self.authorization: bytes | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        if name.lower() == b"authorization":
            self.authorization = value

    def on_message_complete(self) -> None:
        authorization, self.authorization = self.authorization, None
        if self.gate.admits(authorization):
            super().on_message_complete()
            return
        assert self.transport is not None
        self.transport.write(_UNAUTHORIZED)
        self.url = b""
        if not self.parser.should_keep_alive():
            self.transport.close()


async def start_http(
    catalog: Catalog,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    gate: TokenGate | None = None,
    behaviour: Behaviour | None = None,
) -> asyncio.Server:
    """Listen on host:port (0 = any free port); returns the asyncio server."""
    router = _Router(catalog, behaviour or Behaviour())
    loop = asyncio.get_running_loop()

    def connection() -> _HttpServerConnection:
        if gate is None:
            return _HttpServerConnection(router)
        return _GatedHttpServerConnection(router, gate)

    return await loop.create_server(connection, host, port, backlog=1024, ssl=ssl_context)
