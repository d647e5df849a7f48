"""wire/http_wire.py's streamed bodies (what the SSE targets read) against aiohttp's server, an
implementation that is not ours: a 200's body arrives a network read at a time and in order,
anything else arrives whole, and the connection is reused after either."""

from __future__ import annotations

import asyncio

from aiohttp import web

from loadtest.wire.http_wire import WirePool, build_request

WRITES = (b"data: one\n\n", b"data: two\n\ndata: three\n\n", b"data: four\n\n")


async def _streamed(request: web.Request) -> web.StreamResponse:
    """Each write of WRITES a chunk of a chunked body, 50 ms apart (a read each)."""
    await request.read()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for data in WRITES:
        await response.write(data)
        await asyncio.sleep(0.05)
    await response.write_eof()
    return response


async def _refused(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"error": "no such model"}, status=404)


async def _exchange(
    pool: WirePool, port: int, path: str
) -> tuple[list[bytes], tuple[int, bytes, str | None]]:
    pieces: list[bytes] = []
    answer: asyncio.Future[tuple[int, bytes, str | None]] = (
        asyncio.get_running_loop().create_future()
    )

    def done(status: int, body: bytes, error: str | None, _headers: dict[bytes, bytes]) -> None:
        answer.set_result((status, body, error))

    request = build_request(f"127.0.0.1:{port}", path, b"{}", {"Content-Type": "application/json"})
    pool.submit(request, done, on_body=pieces.append)
    return pieces, await asyncio.wait_for(answer, 10)


def test_a_streamed_body_comes_read_by_read_and_a_refusal_comes_whole() -> None:
    connections: list[int] = []

    async def play() -> list[tuple[list[bytes], tuple[int, bytes, str | None]]]:
        app = web.Application()
        app.router.add_post("/stream", _streamed)
        app.router.add_post("/missing", _refused)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        pool = WirePool("127.0.0.1", port, timeout_s=10)
        try:
            await pool.warm(1)  # one connection: every exchange below reuses it
            exchanges = [
                await _exchange(pool, port, "/stream"),
                await _exchange(pool, port, "/missing"),
                await _exchange(pool, port, "/stream"),
            ]
            connections.append(len(pool._all))
            return exchanges
        finally:
            pool.close()
            await runner.cleanup()

    (first, first_end), (refused, refused_end), (again, again_end) = asyncio.run(play())
    for pieces, end in ((first, first_end), (again, again_end)):
        assert pieces == list(WRITES)  # one call per read, each write its own read, in order
        assert end == (200, b"", None)  # the body went to on_body, not to on_done
    assert refused == []
    status, body, error = refused_end
    assert status == 404 and b"no such model" in body and error is None
    assert connections == [1]  # kept alive after a streamed body and after a refusal
