"""The HTTP generate_stream (SSE) target against the stub's known-answer streaming model.

The stub serves `llm_known`'s config from a copied repository with a fast law (a = 40 ms,
b = 4 ms per word, c = 10 ms per token), so the meter's figures are known without Triton: exact
token counts, TTFT from the schedule, TPOT = c, an error event under a 200 failing its query,
--timeout counting a timeout; and the event parser alone, fed the body in any split.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from stream_law import FAST_LAW_MS, law_repository

from loadtest.core.schedule import Schedule
from loadtest.core.settings import Protocol
from loadtest.core.units import NS_PER_MS
from loadtest.engine.runner import Runner
from loadtest.stub.catalog import Behaviour, Catalog
from loadtest.stub.grpc_server import start_grpc
from loadtest.stub.grpc_wire_server import WireGrpcServer
from loadtest.stub.http_server import start_http
from loadtest.stub.sse import ERROR_AFTER_FIELD, MID_STREAM_ERROR
from loadtest.targets import sse_client, triton_target
from loadtest.targets.transport import Credentials
from loadtest.targets.triton_sse import SseAnswer, TritonSseTarget
from loadtest.targets.triton_stream import TritonStreamTarget

A_MS, B_MS, C_MS = FAST_LAW_MS
MS = NS_PER_MS


@pytest.fixture
def fast_repository(tmp_path: Path) -> Path:
    """llm_known's config with the fast law."""
    return law_repository(tmp_path)


def _sample(text: bytes, max_tokens: int, error_after: int | None = None):
    sample = {
        "text_input": np.array([text], dtype=object),
        "max_tokens": np.array([max_tokens], dtype=np.int32),
        "stream": np.array([True]),
    }
    if error_after is not None:
        sample[ERROR_AFTER_FIELD] = np.array([error_after], dtype=np.int32)
    return sample


def _play(
    repository: Path,
    samples,
    count: int,
    gap_ms: float,
    timeout_s: float = 30.0,
    protocol: str = "http-stream",
):
    """`protocol`: http-stream, or grpc-stream as "grpc-stream/<client>/<stub's gRPC server>"
    (GRPC_WAYS)."""

    async def play():
        if protocol == "http-stream":
            server = await start_http(Catalog(repository), "127.0.0.1", 0, behaviour=Behaviour())
            port = server.sockets[0].getsockname()[1]
            target = TritonSseTarget(f"127.0.0.1:{port}", "llm_known", timeout_s=timeout_s)
        else:
            _, client, server_kind = protocol.split("/")
            if server_kind == "grpcio":
                server, port = await start_grpc(Catalog(repository), "127.0.0.1", 0)
            else:
                server = WireGrpcServer(Catalog(repository), Behaviour())
                port = await server.start("127.0.0.1", 0, None)
            url = f"127.0.0.1:{port}"
            target = TritonStreamTarget(url, "llm_known", timeout_s=timeout_s, load_client=client)
        try:
            await target.open()
            assert target.decoupled
            await target.prepare(samples)
            due = (np.arange(count) * gap_ms * MS).astype(np.int64)
            schedule = Schedule(due, (np.arange(count) % len(samples)).astype(np.int32))
            return await Runner(schedule, target).run(handle_sigint=False)
        finally:
            await target.close()
            if protocol == "http-stream":
                server.close()
            elif isinstance(server, WireGrpcServer):
                await server.stop()
            else:
                await server.stop(None)

    return asyncio.run(play()).records


# grpc-stream as "grpc-stream/<the target's client>/<the stub's gRPC server>": the wire client
# against grpc.aio's server (an independent HTTP/2 end) and the stub's own wire server, and
# grpc.aio's client, the cross-check.
GRPC_WAYS = ["grpc-stream/wire/grpcio", "grpc-stream/wire/wire", "grpc-stream/grpcio/grpcio"]


@pytest.mark.parametrize("protocol", ["http-stream", *GRPC_WAYS])
def test_exact_token_counts_and_the_known_timing(fast_repository, protocol):
    samples = [_sample(b"one two three", 5), _sample(b"a b c d e f g", 9)]
    records = _play(fast_repository, samples, 8, gap_ms=60, protocol=protocol)
    assert records.ok.all() and records.streamed.all()
    tokens = np.array([5, 9])[records.sample_index]
    words = np.array([3, 7])[records.sample_index]
    assert (records.final_count == tokens).all() and (records.parts == tokens).all()
    ttft = records.first_part_ns - records.scheduled_ns
    expected = (A_MS + B_MS * words) * MS
    tpot = (records.completed_ns - records.first_part_ns) / (tokens - 1)
    # a loaded 2-core machine delays a wake-up now and then: the median is held to 10 %
    assert np.median(np.abs(ttft - expected) / expected) < 0.10
    assert np.median(np.abs(tpot - C_MS * MS) / (C_MS * MS)) < 0.10


@pytest.mark.parametrize("protocol", ["http-stream", *GRPC_WAYS])
def test_an_error_mid_stream_is_a_failed_query_never_a_short_success(fast_repository, protocol):
    """Over SSE the error event comes under the 200 already sent; over gRPC, an error_message
    after two tokens on a stream that goes on."""
    samples = [_sample(b"warm up", 3), _sample(b"some words", 6, error_after=2)]
    records = _play(fast_repository, samples, 4, gap_ms=20, protocol=protocol)
    bad = records.sample_index == 1
    assert records.errored[bad].all() and records.ok[~bad].all()
    kinds = {records.error_kinds[code] for code in records.error_code[bad]}
    named = protocol.split("/")[0].replace("-", " ")
    assert kinds == {f"{named}: {MID_STREAM_ERROR}"}
    assert (records.parts[bad] == 2).all()  # the two tokens before the error were seen
    assert (records.final_count[~bad] == 3).all()


@pytest.mark.parametrize("protocol", ["http-stream", *GRPC_WAYS])
def test_timeout_closes_the_stream_and_counts_a_timeout(fast_repository, protocol):
    """Over gRPC a timed-out request retires its shared stream, which is cancelled once its
    other queries are over: the queries around it still succeed."""
    samples = [_sample(b"one", 2), _sample(b"one", 60)]  # 54 ms vs 634 ms
    records = _play(fast_repository, samples, 4, gap_ms=50, timeout_s=0.3, protocol=protocol)
    slow = records.sample_index == 1
    assert all(records.error_kinds[c] == "timeout" for c in records.error_code[slow])
    assert records.ok[~slow].all() and (records.final_count[~slow] == 2).all()


class _Seen:
    def __init__(self) -> None:
        self.parts = 0
        self.ended: str | None = None  # "ok", or the error kind, once done

    def first(self) -> None:
        pass

    def part(self, count: int = 1) -> None:
        self.parts += count

    def final(self, count, prompt_count=None):
        pass

    def done(self, error):
        self.ended = "ok" if error is None else error


BODY = (
    b'data: {"text_output":"a","num_output_tokens":1}\n\n'
    b": a comment\n\n"
    b'data: {"text_output":"bc","num_output_tokens":[2]}\r\n\r\n'
    b'data: {"text_output":"d","num_output_tokens":3}\n\n'
)


@pytest.mark.parametrize("step", [1, 2, 7, len(BODY)])
def test_the_parser_finds_every_event_however_the_body_is_split(step):
    seen = _Seen()
    answer = SseAnswer(seen)
    for k in range(0, len(BODY), step):
        assert answer.feed(BODY[k : k + step]) is None
    assert answer.end() is None
    assert answer.events == seen.parts == 3 and answer.count == 6


def test_a_whole_answer_in_one_chunk_is_parsed_in_slices_that_give_the_loop_turns(monkeypatch):
    """A server that sends a 600-event answer at once: parsed a slice at a time, every event
    counted as in one go, and the loop runs other callbacks (the issuer's sends) between slices
    instead of after the whole answer."""
    monkeypatch.setattr(sse_client, "SLICE_S", 0.0)  # a turn after every slice
    event = b'data: {"text_output":"a","num_output_tokens":1}\n\n'
    body = event * 600

    async def play() -> tuple[int, list[int]]:
        seen = _Seen()
        answer = SseAnswer(seen)
        seen_by_turns: list[int] = []

        def turn() -> None:  # another callback wanting the loop: how far the parse had got
            seen_by_turns.append(seen.parts)
            if seen.parts < 600:
                asyncio.get_running_loop().call_soon(turn)

        asyncio.get_running_loop().call_soon(turn)
        queries = sse_client.SseQueries(
            "http stream", "http://127.0.0.1:1/", Credentials(), 1.0, lambda body: ""
        )
        query = sse_client._StreamedQuery(queries, answer)
        query.body(body)  # the pool hands over one read: the whole answer
        query.answered(200, b"", None, {})  # ... and its end at once: it waits for the feed
        assert seen.ended is None
        while seen.ended is None:
            await asyncio.sleep(0)
        assert seen.ended == "ok" and answer.count == 600
        return seen.parts, seen_by_turns

    parts, turns = asyncio.run(play())
    assert parts == 600
    assert len(body) > sse_client.SLICE_BYTES  # several slices
    assert len([n for n in turns if 0 < n < 600]) >= len(body) // sse_client.SLICE_BYTES - 1


def test_the_parser_says_no_count_when_the_server_sends_none_and_fails_on_an_error():
    answer = SseAnswer(_Seen())
    assert answer.feed(b'data: {"text_output":"a"}\n\ndata: {"text_output":"b"}') is None
    assert answer.end() is None and answer.events == 2 and answer.count is None
    failing = SseAnswer(_Seen())
    error = failing.feed(b'data: {"num_output_tokens":1}\n\ndata: {"error":"boom 42"}\n\n')
    assert error == "http stream: boom N" and failing.events == 1


@pytest.mark.parametrize(
    ("event", "tokens"),
    [
        (b'{"text_output":"a","num_output_tokens":3}', 3),
        (b'{"num_output_tokens": 4, "text_output":"a"}', 4),  # a space: json.loads
        (b'{"text_output":"said \\"num_output_tokens\\":9","num_output_tokens":[1,2]}', 3),
        (b'{"text_output":"error","num_output_tokens":2}', 2),  # the word alone is no error
        (b'{"text_output":"no count"}', None),
    ],
)
def test_the_fast_path_reads_the_count_json_would(event, tokens):
    answer = SseAnswer(_Seen())
    assert answer.feed(b"data: " + event + b"\n\n") is None
    assert answer.count == tokens and answer.events == 1


@pytest.mark.parametrize(
    "event",
    [b'{"error":"x"}', b'{"error" : "x"}', b'{"num_output_tokens":1,"error":"x"}', b"[1]", b"{"],
)
def test_every_error_object_or_bad_event_fails_the_query(event):
    assert SseAnswer(_Seen()).feed(b"data: " + event + b"\n\n") is not None


def test_http_stream_is_a_protocol_over_http_with_its_own_target():
    assert not Protocol("http-stream").over_grpc and Protocol("grpc-stream").over_grpc
    target = triton_target("http://127.0.0.1:8000", "http-stream", "llm_known")
    assert isinstance(target, TritonSseTarget) and target.capabilities.streams_parts


@pytest.mark.parametrize("compression", ["gzip", "deflate"])
def test_grpc_stream_requests_compressed_as_asked_are_answered_alike(fast_repository, compression):
    """--grpc-compression on grpc-stream: each request message compressed (grpc-encoding), which
    grpc.aio's server decompresses; the answers are what they are uncompressed."""

    async def play():
        server, port = await start_grpc(Catalog(fast_repository), "127.0.0.1", 0)
        target = TritonStreamTarget(f"127.0.0.1:{port}", "llm_known", grpc_compression=compression)
        try:
            await target.open()
            await target.prepare([_sample(b"one two three", 5)])
            schedule = Schedule((np.arange(4) * 20 * MS).astype(np.int64), np.zeros(4, np.int32))
            return (await Runner(schedule, target).run(handle_sigint=False)).records
        finally:
            await target.close()
            await server.stop(None)

    records = asyncio.run(play())
    assert records.ok.all() and (records.final_count == 5).all() and (records.parts == 5).all()
