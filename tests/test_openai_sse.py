"""The OpenAI-compatible target against the stub's OpenAI side, and its event parser alone.

The stub serves llm_known with a fast known-answer law (tests/stream_law.py: a = 40 ms, b = 4 ms
per word, c = 10 ms per token) at /v1/completions and /v1/chat/completions, timed by the same
plan as its generate_stream side, so the two APIs can be held to the same figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from stream_law import FAST_LAW_MS, REPOSITORY, law_repository

from loadtest.core.schedule import Schedule
from loadtest.core.secrets import Header, parse_header
from loadtest.core.settings import Protocol, TargetSettings
from loadtest.core.units import NS_PER_MS
from loadtest.engine.runner import Runner
from loadtest.errors import SettingsError, TargetError
from loadtest.rules.tokens import OPENAI_COUNTING, USAGE_COUNT, token_figures
from loadtest.server import deployment, mix_deployment
from loadtest.server.deployment import EmbeddedMode, resolve
from loadtest.server.mix_deployment import MixMemberTarget, resolve_mix
from loadtest.stub.access import TokenGate
from loadtest.stub.catalog import Behaviour, Catalog
from loadtest.stub.http_server import start_http
from loadtest.stub.openai_sse import WITHOUT_DONE_FIELD
from loadtest.stub.process import running_stub
from loadtest.stub.sse import ERROR_AFTER_FIELD, MID_STREAM_ERROR
from loadtest.targets import target_for
from loadtest.targets.openai_sse import (
    UNOBSERVED,
    OpenAiAnswer,
    OpenAiSseTarget,
    base_url,
    openai_model_spec,
    request_body,
)
from loadtest.targets.triton_sse import TritonSseTarget

A_MS, B_MS, C_MS = FAST_LAW_MS
MS = NS_PER_MS


@pytest.fixture
def fast_repository(tmp_path: Path) -> Path:
    return law_repository(tmp_path)


def _sample(text: bytes, max_tokens: int, **extra: object) -> dict[str, np.ndarray]:
    sample = {
        "text_input": np.array([text], dtype=object),
        "max_tokens": np.array([max_tokens], dtype=np.int32),
    }
    for name, value in extra.items():
        sample[name] = np.array([value])
    return sample


def _play(repository, samples, count, gap_ms, make_target):
    """The runner plays `count` queries `gap_ms` apart, cycling the samples, against the stub
    served in-process; `make_target(url)` builds the target."""

    async def play():
        server = await start_http(Catalog(repository), "127.0.0.1", 0, behaviour=Behaviour())
        target = make_target(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        try:
            await target.open()
            await target.prepare(samples)
            due = (np.arange(count) * gap_ms * MS).astype(np.int64)
            schedule = Schedule(due, (np.arange(count) % len(samples)).astype(np.int32))
            return await Runner(schedule, target).run(handle_sigint=False)
        finally:
            await target.close()
            server.close()

    return asyncio.run(play()).records


def _openai(chat: bool = False):
    return lambda url: OpenAiSseTarget(url, "llm_known", chat=chat)


# -- against the stub ---------------------------------------------------------------------------


@pytest.mark.parametrize("chat", [False, True])
def test_usage_from_the_final_chunk_equals_the_streamed_tokens(fast_repository, chat):
    """The count is the server's usage.completion_tokens, and every token came as a part (the
    chat's opening role-only chunk is not one, nor is the usage chunk)."""
    samples = [_sample(b"one two three", 5), _sample(b"a b c d e f g", 9)]
    records = _play(fast_repository, samples, 6, 40, _openai(chat))
    assert records.ok.all() and records.streamed.all()
    tokens = np.array([5, 9])[records.sample_index]
    assert (records.final_count == tokens).all() and (records.parts == tokens).all()
    figures = token_figures(records, OPENAI_COUNTING)
    assert figures is not None and figures.token_source == USAGE_COUNT
    assert figures.tokens == int(tokens.sum())
    words = np.array([3, 7])[records.sample_index]
    ttft = records.first_part_ns - records.scheduled_ns
    expected = (A_MS + B_MS * words) * MS
    assert np.median(np.abs(ttft - expected) / expected) < 0.10  # as the generate_stream test


@pytest.mark.parametrize("chat", [False, True])
def test_an_error_mid_stream_is_a_failed_query_never_a_short_success(fast_repository, chat):
    """The stub sends two tokens, an error event, then [DONE] (as vLLM does): the query fails
    on the error, whatever follows it."""
    samples = [_sample(b"warm up", 3), _sample(b"some words", 6, **{ERROR_AFTER_FIELD: 2})]
    records = _play(fast_repository, samples, 4, 20, _openai(chat))
    bad = records.sample_index == 1
    assert records.errored[bad].all() and records.ok[~bad].all()
    kinds = {records.error_kinds[code] for code in records.error_code[bad]}
    assert kinds == {f"openai stream: {MID_STREAM_ERROR}"}
    assert (records.parts[bad] == 2).all() and (records.final_count[~bad] == 3).all()


def test_a_body_that_ends_without_done_is_a_failed_query(fast_repository):
    samples = [_sample(b"warm up", 3), _sample(b"no end", 4, **{WITHOUT_DONE_FIELD: True})]
    records = _play(fast_repository, samples, 4, 20, _openai())
    bad = records.sample_index == 1
    assert records.errored[bad].all() and records.ok[~bad].all()
    kinds = {records.error_kinds[code] for code in records.error_code[bad]}
    assert kinds == {"openai stream: the answer ended without data: [DONE] (and no finish_reason)"}
    assert (records.parts[bad] == 4).all()  # every token came, the end did not


def test_ttft_and_tpot_agree_with_http_stream_on_the_same_schedule(fast_repository):
    """Same stub, model, samples and schedule over generate_stream and /v1/completions.

    Each query's TTFT is held against its known answer a + b·words; the two protocols' median
    errors must lie within 2.5 ms of each other, and their median TPOT within 2 % of c (0.2 ms).
    Why these: what differs between the paths (the request body, a chunk's bytes, its parse) costs
    well under 0.1 ms per event; the rest is timer noise of this shared 2-vCPU machine, where each
    TTFT is one wake-up of the stub's timer and one of the client's loop: the median errors came
    out 1.3-2.4 ms per protocol and at most 1.1 ms apart over six pairs of runs at load average 4.
    A meter fault is far outside: a first token stamped at the 200's headers (which the stub
    sends at once) would be 40-80 ms early, a TPOT with the first token counted or the end read
    late off by more than 2 %.
    """
    samples = [_sample(b"one two three", 6), _sample(b"a b c d e f g h i j", 9), _sample(b"x", 12)]
    words = np.array([3, 10, 1])

    def figures(make_target):
        sse_samples = [{**s, "stream": np.array([True])} for s in samples]
        records = _play(fast_repository, sse_samples, 24, 50, make_target)
        assert records.ok.all()
        ttft_ms = (records.first_part_ns - records.scheduled_ns) / MS
        error_ms = ttft_ms - (A_MS + B_MS * words[records.sample_index])
        tpot_ms = (records.completed_ns - records.first_part_ns) / MS / (records.final_count - 1)
        return float(np.median(error_ms)), float(np.median(tpot_ms))

    openai_error, openai_tpot = figures(_openai())
    sse_error, sse_tpot = figures(lambda url: TritonSseTarget(url, "llm_known"))
    assert abs(openai_error - sse_error) <= 2.5, (openai_error, sse_error)
    assert abs(openai_tpot - sse_tpot) <= 0.02 * C_MS, (openai_tpot, sse_tpot)
    assert abs(openai_tpot - C_MS) <= 0.05 * C_MS  # and both read the law's c


def test_an_unknown_model_or_a_silent_server_is_one_line(fast_repository):
    async def open_(model: str, url: str | None = None) -> None:
        server = await start_http(Catalog(fast_repository), "127.0.0.1", 0)
        target = OpenAiSseTarget(url or f"127.0.0.1:{server.sockets[0].getsockname()[1]}", model)
        try:
            await target.open()
        finally:
            await target.close()
            server.close()

    with pytest.raises(TargetError) as error:
        asyncio.run(open_("llama"))
    assert "model 'llama' is not served" in str(error.value) and "'llm_known'" in str(error.value)
    with pytest.raises(TargetError, match="cannot reach an OpenAI-compatible server") as error:
        asyncio.run(open_("llm_known", "http://127.0.0.1:1/v1"))
    assert "\n" not in str(error.value)


def test_the_stub_lists_its_repository_and_refuses_what_it_does_not_serve(fast_repository):
    async def ask(repository: Path | None) -> list[tuple[int, object]]:
        server = await start_http(Catalog(repository), "127.0.0.1", 0)
        base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        answers = []
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(base + "/v1/models") as response:
                    answers.append((response.status, await response.json()))
                for body in (
                    {"model": "llm_known", "prompt": "x", "stream": False},
                    {"model": "other", "prompt": "x", "stream": True},
                ):
                    async with session.post(base + "/v1/completions", json=body) as response:
                        answers.append((response.status, await response.json()))
        finally:
            server.close()
        return answers

    listed, not_streamed, unknown = asyncio.run(ask(fast_repository))
    assert listed[0] == 200 and [m["id"] for m in listed[1]["data"]] == ["llm_known"]
    assert not_streamed[0] == 400 and "stream" in not_streamed[1]["error"]["message"]
    assert unknown[0] == 404 and "`other` does not exist" in unknown[1]["error"]["message"]
    (status, empty), *_ = asyncio.run(ask(None))
    assert status == 200 and empty["data"] == []


# -- the request and the parser alone -----------------------------------------------------------


def test_the_request_asks_for_a_stream_with_usage_and_ignore_eos_only_when_told():
    sample = _sample(b"hello there", 7)
    plain = json.loads(request_body(sample, "m", chat=False, ignore_eos=False))
    assert plain == {
        "model": "m",
        "prompt": "hello there",
        "max_tokens": 7,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chat = json.loads(request_body(sample, "m", chat=True, ignore_eos=True))
    assert chat["messages"] == [{"role": "user", "content": "hello there"}]
    assert (chat["ignore_eos"], chat["min_tokens"], chat["max_tokens"]) == (True, 7, 7)
    assert "prompt" not in chat


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000"),
        ("http://user:***@gw.example:9000/openai/v1/", "http://gw.example:9000/openai"),
        ("https://api.example", "https://api.example:443"),
    ],
)
def test_the_api_base_drops_credentials_and_a_trailing_v1(url, base):
    assert base_url(url, tls=url.startswith("https")) == base


def test_the_declared_model_draws_llm_knowns_samples():
    spec = openai_model_spec("m")
    assert [(t.name, t.datatype) for t in spec.inputs] == [
        ("text_input", "BYTES"),
        ("max_tokens", "INT32"),
    ]
    llm_known = (REPOSITORY / "llm_known" / "config.pbtxt").read_text()
    for key, value in spec.parameters.items():
        assert f'key: "{key}"\n  value {{\n    string_value: "{value}"' in llm_known


class _Seen:
    def __init__(self) -> None:
        self.parts = 0

    def first(self) -> None:
        pass

    def part(self, count: int = 1) -> None:
        self.parts += count

    def final(self, count, prompt_count=None):
        pass

    def done(self, error):
        pass


def _chunk(fields: dict) -> bytes:
    return b"data: " + json.dumps(fields, separators=(",", ":")).encode() + b"\n\n"


CHAT_BODY = (
    _chunk({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    + _chunk({"choices": [{"index": 0, "delta": {"content": "Hel"}}], "usage": None})
    + b": keep-alive\n\n"
    + _chunk({"choices": [{"index": 0, "delta": {"content": 'lo "you"'}}]})
    + _chunk({"choices": [{"index": 0, "delta": {"reasoning_content": "hm"}}]})
    + _chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
    + _chunk({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 7}})
    + b"data: [DONE]\r\n\r\n"
)


@pytest.mark.parametrize("step", [1, 3, 17, len(CHAT_BODY)])
def test_the_parser_counts_content_chunks_and_takes_usage_however_the_body_is_split(step):
    seen = _Seen()
    answer = OpenAiAnswer(seen, chat=True)
    for k in range(0, len(CHAT_BODY), step):
        assert answer.feed(CHAT_BODY[k : k + step]) is None
    assert answer.complete and answer.count == 7 and answer.chunks == seen.parts == 3


@pytest.mark.parametrize(
    ("event", "chunks"),
    [
        (b'{"choices":[{"index":0,"text":"a","finish_reason":null}],"usage":null}', 1),
        (b'{"choices":[{"index":0,"text":"","finish_reason":"stop"}]}', 0),
        (b'{"choices":[{"index":0,"text": "spaced"}]}', 1),  # json.loads
        (b'{"choices":[{"text":"said \\"text\\":\\"x\\""}]}', 1),
        (b'{"choices":[{"text":"error"}]}', 1),  # the word alone is no error
        (b'{"choices":[{"index":0,"text":null}]}', 0),
        (b'{"choices":[{"index":0,"text":"a"},{"index":1,"text":"b"}]}', 2),  # n = 2
    ],
)
def test_the_fast_path_counts_what_json_would(event, chunks):
    seen = _Seen()
    answer = OpenAiAnswer(seen, chat=False)
    assert answer.feed(b"data: " + event + b"\n\n") is None
    assert answer.chunks == seen.parts == chunks and answer.count is None


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            _chunk({"choices": [{"text": "a"}]})
            + _chunk({"error": {"message": "boom 42", "type": "x", "code": 500}})
            + b"data: [DONE]\n\n",
            "openai stream: boom N",
        ),
        (b'data: {"error":"overloaded"}\n\n', "openai stream: overloaded"),
        (b"data: {\n\n", "openai stream: an event that is not JSON"),
        (b"data: [1]\n\n", "openai stream: an event that is not a JSON object"),
    ],
)
def test_an_error_event_fails_the_answer_even_when_done_follows(body, error):
    assert OpenAiAnswer(_Seen(), chat=False).feed(body) == error


def test_no_done_is_an_error_and_nothing_after_done_counts():
    answer = OpenAiAnswer(_Seen(), chat=False)
    assert answer.feed(_chunk({"choices": [{"text": "a"}]})) is None
    assert (
        answer.end()
        == "openai stream: the answer ended without data: [DONE] (and no finish_reason)"
    )
    done = OpenAiAnswer(_Seen(), chat=False)
    tail = _chunk({"choices": [{"text": "late"}]}) + _chunk({"error": "late"})
    assert done.feed(_chunk({"choices": [{"text": "a"}]}) + b"data: [DONE]\n\n" + tail) is None
    assert done.complete and done.chunks == 1


@pytest.mark.parametrize("compact", [True, False])
def test_a_body_that_ends_after_a_finish_reason_is_complete_without_done(compact):
    """transformers serve's shape: usage beside the finish reason on the last event, no [DONE];
    a cut stream (no finish reason) still fails, above."""
    answer = OpenAiAnswer(_Seen(), chat=True)
    last = {"choices": [{"delta": {"content": "b"}, "finish_reason": "length"}],
            "usage": {"completion_tokens": 2}}  # fmt: skip
    events = _chunk({"choices": [{"delta": {"content": "a"}, "finish_reason": None}]})
    events += _chunk(last) if compact else b"data: " + json.dumps(last).encode() + b"\n\n"
    assert answer.feed(events) is None
    assert answer.end() is None
    assert answer.chunks == 2 and answer.count == 2


# -- settings and the embedded Triton -----------------------------------------------------------


def test_ignore_eos_and_the_triton_only_flags_go_where_they_act():
    with pytest.raises(SettingsError, match="--ignore-eos is for --protocol openai"):
        TargetSettings(url="127.0.0.1:8000", protocol=Protocol.HTTP_STREAM, ignore_eos=True)
    for triton_only in ({"server_timeout_s": 1.0}, {"model_version": "2"}):
        with pytest.raises(SettingsError, match="OpenAI-compatible"):
            TargetSettings(url="127.0.0.1:8000", protocol=Protocol.OPENAI, **triton_only)
    settings = TargetSettings(
        url="https://gw.example/openai/v1", protocol=Protocol.OPENAI_CHAT, ignore_eos=True
    )
    target = target_for(settings)
    assert isinstance(target, OpenAiSseTarget) and target.chat and target.ignore_eos
    assert target.capabilities.streams_parts and target.capabilities.triton is None
    assert target.capabilities.unobserved == UNOBSERVED


class _NoTriton:
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("an embedded Triton was started")


@pytest.mark.parametrize("protocol", [Protocol.OPENAI, Protocol.OPENAI_CHAT])
def test_embedded_never_starts_a_triton_for_an_openai_protocol(monkeypatch, protocol):
    """A silent loopback host:port is where `--embedded auto` starts a Triton for Triton's
    protocols (tests/test_deployment.py); never for an OpenAI one, alone or in a mix, and
    `always` is one line."""
    monkeypatch.setattr(deployment, "EmbeddedTriton", _NoTriton)
    monkeypatch.setattr(mix_deployment, "EmbeddedTriton", _NoTriton)
    target = TargetSettings(url="127.0.0.1:1", protocol=protocol, model="llm_known")
    assert not target.is_triton
    with resolve(target, EmbeddedMode.AUTO, Path("model_repository"), print) as found:
        assert found.embedded is None and found.target == target
    with (
        pytest.raises(SettingsError, match="no OpenAI front end"),
        resolve(target, EmbeddedMode.ALWAYS, Path("model_repository"), print),
    ):
        pass
    member = MixMemberTarget("chat", target, url_given=False)
    with (
        pytest.raises(TargetError, match="nothing answers"),
        resolve_mix([member], EmbeddedMode.AUTO, Path("model_repository"), print),
    ):
        pass


# -- the command line: the Bearer key reaches the server, never an output -----------------------

KEY = "sk-openai-test-Qv8"


def _loadtest(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtest.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "160", **env},
    )


def test_without_the_key_the_server_refuses_at_open_in_one_line(fast_repository):
    async def open_(headers: tuple[Header, ...]) -> None:
        gate = TokenGate(KEY)
        server = await start_http(Catalog(fast_repository), "127.0.0.1", 0, gate=gate)
        url = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        target = OpenAiSseTarget(url, "llm_known", headers=headers)
        try:
            await target.open()
        finally:
            await target.close()
            server.close()

    for headers in ((), (parse_header("Authorization:Bearer not-the-key-3"),)):
        with pytest.raises(TargetError) as error:
            asyncio.run(open_(headers))
        line = str(error.value)
        assert "refused the request (HTTP 401: unauthenticated)" in line and "\n" not in line
        assert "not-the-key-3" not in line
    asyncio.run(open_((parse_header(f"Authorization:Bearer {KEY}"),)))  # the key lets it in


def test_the_bearer_key_reaches_the_server_and_no_output_holds_it(fast_repository, tmp_path):
    """The stub requires `Authorization: Bearer KEY` of every request (GET /v1/models, the
    warm-up, each query): a run that did not send it would stop at open (the test above). Then
    every file written and the console are searched for the key."""
    env = {"STUB_KEY": KEY, "LT_AUTH": f"Bearer {KEY}"}
    out = tmp_path / "out"
    with running_stub(
        "--repository", str(fast_repository), "--require-token", "@env:STUB_KEY",
        env={**os.environ, **env},
    ) as stub:  # fmt: skip
        common = [
            "--protocol", "openai-chat", "--url", f"http://{stub.http_url}/v1",
            "--model", "llm_known", "--embedded", "never", "--no-live",
        ]  # fmt: skip
        quick = ["--qps", "20", "--duration", "0.5", "--min-queries", "10",
                 "--target-latency", "1000"]  # fmt: skip
        run = _loadtest(
            "server", *common, *quick, "--header", "Authorization:@env:LT_AUTH", "--records",
            "--output", str(out / "run"), env=env,
        )  # fmt: skip
    assert run.returncode in (0, 3), run.stderr
    data = json.loads((out / "run" / "result.json").read_text())
    assert data["summary"]["completed_ok"] == data["summary"]["issued"] > 0
    assert data["tokens"]["token_source"] == USAGE_COUNT
    assert data["environment"]["server"]["unobserved"] == UNOBSERVED
    assert data["target"]["headers"] == [{"name": "Authorization", "value": "***"}]
    assert "server side" in run.stdout and "not observed" in run.stdout
    written = [p.read_text(errors="replace") for p in out.rglob("*") if p.is_file()]
    assert len(written) == 2  # result.json (its records too), mlperf_log_summary.txt
    for text in [*written, run.stdout, run.stderr]:
        assert KEY not in text


def test_a_silent_openai_url_asks_for_the_server_not_for_triton():
    """--embedded never against an OpenAI-compatible URL where nothing listens: one line that
    names the server, never "start Triton there" (no Triton stands in for an OpenAI server)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]  # closed again: nothing listens there
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.cli", "server", "--protocol", "openai", "--url",
         f"http://127.0.0.1:{port}", "--embedded", "never", "-m", "llm_known", "--qps", "1",
         "--duration", "1", "--target-latency", "100", "--no-live"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert (
        line
        == f"error: nothing answers at http://127.0.0.1:{port} (openai); start the server there"
    )
