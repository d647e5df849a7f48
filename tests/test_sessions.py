"""Multi-turn sessions (`loadtest sessions`): ordering, the growing conversation, a failing turn,
the ShareGPT reader, the think-time law and bad flags.

Against the stub served in-process with llm_known's fast known-answer law (tests/stream_law.py:
first token a + b·words of the prompt after the request, then one every c), so the conversation
each turn carries is visible in its TTFT: with word counting, turn k's prompt is every earlier
prompt and answer placeholder plus its own.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest
from stream_law import FAST_LAW_MS, law_repository
from typer.testing import CliRunner

from loadtest.cli import app
from loadtest.core.lengths import length_law_named
from loadtest.core.prompts import PromptSettings
from loadtest.core.records import NOT_SET_NS, Status
from loadtest.core.sessions import ANSWER_PLACEHOLDER, SessionPlan, think_time_named
from loadtest.core.units import NS_PER_MS
from loadtest.engine.prompts.files import read_conversations
from loadtest.engine.prompts.sessions import AnswerFiller, session_plan
from loadtest.engine.prompts.tokenizer import tokenizer_for
from loadtest.engine.sessions import SessionPlayer, SessionRun
from loadtest.errors import ExitCode, SettingsError
from loadtest.rules.sessions import session_figures
from loadtest.stub.catalog import Behaviour, Catalog
from loadtest.stub.grpc_server import start_grpc
from loadtest.stub.http_server import start_http
from loadtest.stub.process import running_stub
from loadtest.stub.sse import ERROR_AFTER_FIELD
from loadtest.targets.openai_sse import OpenAiSseTarget
from loadtest.targets.triton_sse import TritonSseTarget
from loadtest.targets.triton_stream import TritonStreamTarget

A_MS, B_MS, C_MS = FAST_LAW_MS
MS = NS_PER_MS
PROMPT, ANSWER, TURNS, THINK_MS = 5, 4, 3, 30.0
TARGETS = {
    "openai": lambda url: OpenAiSseTarget(url, "llm_known"),
    "openai-chat": lambda url: OpenAiSseTarget(url, "llm_known", chat=True),
    "http-stream": lambda url: TritonSseTarget(url.removeprefix("http://"), "llm_known"),
    "grpc-stream": lambda url: TritonStreamTarget(url, "llm_known"),
}


def _sample(max_tokens: int = ANSWER, **extra: object) -> dict[str, np.ndarray]:
    sample = {
        "text_input": np.array([b"warm up"], dtype=object),
        "max_tokens": np.array([max_tokens], dtype=np.int32),
        "stream": np.array([True]),
    }
    for name, value in extra.items():
        sample[name] = np.array([value])
    return sample


def _plan(sessions: int) -> SessionPlan:
    settings = PromptSettings(
        input_tokens=length_law_named(f"fixed:{PROMPT}"),
        output_tokens=length_law_named(f"fixed:{ANSWER}"),
    )
    return session_plan(
        sessions, length_law_named(f"fixed:{TURNS}"), settings, None, tokenizer_for(None), 7
    )


def _play(
    repository: Path, protocol: str, plan: SessionPlan, samples: list, sample_of_session: list
) -> SessionRun:
    """`plan` against the stub in-process: sessions 50 ms apart, THINK_MS between turns."""

    async def play() -> SessionRun:
        stop: Callable[[], Awaitable[object]]
        if protocol == "grpc-stream":  # the stub's grpc.aio side answers ModelStreamInfer
            grpc_server, port = await start_grpc(Catalog(repository), "127.0.0.1", 0)
            url, stop = f"127.0.0.1:{port}", lambda: grpc_server.stop(None)
        else:
            server = await start_http(Catalog(repository), "127.0.0.1", 0, behaviour=Behaviour())
            url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

            async def stop() -> None:
                server.close()

        target = TARGETS[protocol](url)
        try:
            await target.open()
            await target.prepare(samples)
            count = len(plan.sessions)
            return await SessionPlayer(
                target,
                plan,
                np.arange(count, dtype=np.int64) * 50 * MS,
                np.asarray(sample_of_session, dtype=np.int32),
                np.full(plan.turns, int(THINK_MS * MS), dtype=np.int64),
                AnswerFiller(tokenizer_for(None), 7).text,
            ).run()
        finally:
            await target.close()
            await stop()

    return asyncio.run(play())


@pytest.mark.parametrize("protocol", list(TARGETS))
def test_turns_follow_the_previous_answer_and_carry_the_conversation(tmp_path, protocol):
    """Per session, turn k+1 is due at turn k's completion + the think time and is never sent
    before it; and its TTFT from the send follows a + b·words of the whole conversation so far
    (every earlier prompt and answer placeholder): the history reached the server."""
    run = _play(law_repository(tmp_path), protocol, _plan(3), [_sample()], [0, 0, 0])
    records = run.records
    assert (records.status == Status.OK).all(), records.error_kinds
    for s in range(3):
        rows = np.flatnonzero(run.session == s)
        assert run.turn[rows].tolist() == list(range(TURNS))
        assert records.scheduled_ns[rows[0]] == run.start_ns[s]
        for before, after in itertools.pairwise(rows):
            due = records.completed_ns[before] + int(THINK_MS * MS)
            assert records.scheduled_ns[after] == due
            assert records.issued_ns[after] >= due
    assert (records.final_count == ANSWER).all()
    from_send_ms = (records.first_part_ns - records.issued_ns) / MS
    for k in range(TURNS):
        words = PROMPT * (k + 1) + ANSWER * k
        measured = float(np.median(from_send_ms[run.turn == k]))
        assert abs(measured - (A_MS + B_MS * words)) < 20.0, (k, measured)
    figures = session_figures(records, run.session, run.turn)
    assert figures.completed == 3 and figures.failed == 0 and figures.never_sent == 0
    assert [t.ttft.count for t in figures.by_turn] == [3, 3, 3]
    # TTFT from the due time grows with the history: b·(PROMPT + ANSWER) more per turn
    p50 = [t.ttft.p50_ns / MS for t in figures.by_turn]
    step = B_MS * (PROMPT + ANSWER)
    assert all(later - earlier > step / 2 for earlier, later in itertools.pairwise(p50))
    ends = [records.completed_ns[run.session == s].max() - run.start_ns[s] for s in range(3)]
    assert figures.duration.count == 3 and figures.duration.p50_ns == sorted(ends)[1]


@pytest.mark.parametrize("protocol", ["openai-chat", "http-stream", "grpc-stream"])
def test_a_failing_turn_ends_its_session_and_its_later_turns_are_never_sent(tmp_path, protocol):
    """Session 1's base sample makes the stub fail mid-answer: its first turn is a failed
    query, its two later turns never leave, and the figures count them so; session 0 is whole."""
    samples = [_sample(), _sample(**{ERROR_AFTER_FIELD: 2})]
    run = _play(law_repository(tmp_path), protocol, _plan(2), samples, [0, 1])
    records = run.records
    failed = run.session == 1
    assert (records.status[~failed] == Status.OK).all()
    assert records.status[failed].tolist() == [Status.ERROR, Status.PENDING, Status.PENDING]
    assert (records.issued_ns[failed][1:] == NOT_SET_NS).all()
    figures = session_figures(records, run.session, run.turn)
    assert (figures.completed, figures.failed, figures.never_sent) == (1, 1, 2)
    assert (figures.turns_sent, figures.turns_failed, figures.not_sent_stopped) == (4, 1, 0)
    assert figures.duration.count == 1


def test_sharegpt_sessions_take_every_human_turn_in_order(tmp_path):
    """One session per conversation, its human turns in order, each max_tokens the following
    gpt answer's words; a trailing unanswered turn is dropped and a conversation without a pair
    skipped, both counted in the source line."""
    path = tmp_path / "chats.json"
    first = [
        {"from": "human", "value": "one two"},
        {"from": "gpt", "value": "a b c"},
        {"from": "human", "value": "three"},
        {"from": "gpt", "value": "d e f g h"},
        {"from": "human", "value": "left unanswered"},
    ]
    second = [{"from": "gpt", "value": "no question"}]
    path.write_text(json.dumps([{"conversations": first}, {"conversations": second}]))
    read = read_conversations(path)
    assert (read.skipped, read.unanswered) == (1, 1)
    plan = session_plan(3, None, PromptSettings(), path, tokenizer_for(None), 0)
    assert [[(t.prompt, t.max_tokens) for t in s] for s in plan.sessions] == [
        [("one two", 3), ("three", 5)]
    ] * 3
    assert "1 human turns without a gpt answer" in plan.source
    assert "conversations reused" in plan.source


def test_think_time_laws_draw_what_they_say_and_refuse_bad_values():
    rng = np.random.Generator(np.random.PCG64(0))
    assert (think_time_named("fixed:250").draw_ns(4, rng) == 250 * MS).all()
    drawn = think_time_named("uniform:10:20").draw_ns(2000, rng)
    assert drawn.min() >= 10 * MS and drawn.max() <= 20 * MS
    mean = think_time_named("exponential:100").draw_ns(20000, rng).mean() / MS
    assert 95 < mean < 105
    for bad in ("gauss:1", "fixed", "fixed:-1", "uniform:5:1", "fixed:nan", "lognormal:0:1"):
        with pytest.raises(SettingsError):
            think_time_named(bad)


def test_the_placeholder_answer_has_the_answers_token_count():
    filler = AnswerFiller(tokenizer_for(None), 3)
    assert len(filler.text(0, 1, 9).split()) == 9
    assert filler.text(0, 1, 9) == filler.text(0, 1, 9) != filler.text(1, 1, 9)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["--protocol", "grpc"],
            "sessions play over openai, openai-chat, http-stream, grpc-stream only",
        ),
        (["--turns", "fixed:2"], "need --input-tokens and --output-tokens"),
        ([], "sessions need --turns LAW"),
        (["--rate", "0", "--turns", "fixed:2"], "--rate must be > 0"),
        (["--turns", "fixed:2", "--input-data", "x.json"], "--turns: not with --input-data"),
    ],
)
def test_bad_flags_are_one_line_before_any_connection(args, says):
    result = CliRunner().invoke(app, ["sessions", "--url", "http://127.0.0.1:9", *args])
    assert isinstance(result.exception, SettingsError), result.output
    assert says in str(result.exception) and "\n" not in str(result.exception)
    assert result.exception.exit_code == ExitCode.ERROR


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--turns", "fixed:2", "--think-time", "soon"], "unknown --think-time law"),
        (["--turns", "gauss:3"], "unknown length law"),
    ],
)
def test_a_malformed_law_is_a_usage_error_exit_2(args, says):
    """As every malformed value (README's exit codes): 2, with the law's own reason."""
    result = CliRunner().invoke(app, ["sessions", "--url", "http://127.0.0.1:9", *args])
    assert result.exit_code == 2, result.output
    assert says in " ".join(result.output.replace("│", " ").split())  # unwrapped from its box


@pytest.mark.parametrize("protocol", ["openai-chat", "grpc-stream"])
def test_the_command_end_to_end_against_the_stub(tmp_path, protocol):
    """The CLI prints what each figure is and writes them; a failure-free run exits 0."""
    out = tmp_path / "sessions.json"
    stub_args = ["--grpc-server", "grpcio"] if protocol == "grpc-stream" else []
    with running_stub("--repository", str(law_repository(tmp_path)), *stub_args) as stub:
        url = stub.grpc_url if protocol == "grpc-stream" else f"http://{stub.http_url}"
        run = subprocess.run(
            [sys.executable, "-m", "loadtest.cli", "sessions", "--protocol", protocol,
             "--url", url, "--embedded", "never", "--sessions", "3",
             "--rate", "20", "--turns", "uniform:1:3", "--input-tokens", "fixed:4",
             "--output-tokens", "fixed:3", "--think-time", "fixed:10", "--json", str(out)],
            capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
    assert run.returncode == 0, run.stderr
    for line in ("from its due time", "placeholders", "think time: fixed 10 ms", "turn 1 ("):
        assert line in run.stdout, run.stdout
    data = json.loads(out.read_text())
    assert data["definitions"]["answers_carried"] == ANSWER_PLACEHOLDER
    assert data["sessions"]["sessions"] == data["sessions"]["completed"] == 3
