"""The real third-party OpenAI-compatible server (tests/openai_servers.py: `transformers serve`
with a tiny random-weight Llama) streams as its fixture says, read with a plain aiohttp client:
one event per token, usage on the last event counted by the server's own tokenizer, and the
deviations from OpenAI's API that a target must know (no [DONE], ignore_eos/min_tokens
refused). If a pinned upgrade changes any of it, these fail and the fixture's notes get fixed.
Each request is a few dozen tokens of a 2-layer model: tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import aiohttp
import numpy as np
import pytest
from openai_servers import OpenAIServer, count_tokens

from loadtest.engine.samples import random_samples
from loadtest.rules.tokens import USAGE_COUNT
from loadtest.targets.openai_sse import MAX_TOKENS_INPUT, openai_model_spec

pytestmark = pytest.mark.openai_server

PROMPT = "load testers measure from the schedule not from the send"


async def _post(url: str, body: dict[str, Any]) -> tuple[int, str, bytes]:
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(url, json=body) as answer,
    ):
        return answer.status, answer.headers.get("Content-Type", ""), await answer.read()


def post(url: str, body: dict[str, Any]) -> tuple[int, str, bytes]:
    """(status, content type, the whole body)."""
    return asyncio.run(_post(url, body))


def events(body: bytes) -> list[dict[str, Any]]:
    """The SSE `data:` payloads, parsed; fails on anything else in the body."""
    parsed = []
    for block in body.decode().split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        parsed.append(json.loads(block[len("data: ") :]))
    return parsed


def test_a_streamed_completion_has_one_event_per_token_and_usage_on_the_last(
    openai_server: OpenAIServer,
) -> None:
    body = {
        "model": openai_server.model,
        "prompt": PROMPT,
        "max_tokens": 12,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    status, content_type, raw = post(f"{openai_server.base_url}/completions", body)
    assert status == 200, raw
    assert content_type.startswith("text/event-stream")
    assert b"[DONE]" not in raw and not openai_server.sends_done
    chunks = events(raw)
    *tokens, last = chunks
    assert len(tokens) == 12 and all(chunk["choices"][0]["text"] for chunk in tokens)
    assert {chunk["id"] for chunk in chunks} == {last["id"]}
    assert {chunk["model"] for chunk in chunks} == {openai_server.answered_model}
    assert all(chunk["object"] == "text_completion" for chunk in chunks)
    assert last["choices"][0]["finish_reason"] == "length" and last["choices"][0]["text"] == ""
    (prompt_tokens,) = count_tokens(openai_server, [PROMPT])
    assert last["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 12,
        "total_tokens": prompt_tokens + 12,
    }
    text = "".join(chunk["choices"][0]["text"] for chunk in tokens)
    # greedy decoding: the same prompt gets the same answer, streamed or not
    status, _, whole = post(f"{openai_server.base_url}/completions", {**body, "stream": False})
    assert status == 200 and json.loads(whole)["choices"][0]["text"] == text
    (answer_tokens,) = count_tokens(openai_server, [text])
    assert 1 <= answer_tokens <= 12  # re-tokenizing merges; never more tokens than generated


def test_a_streamed_chat_completion_counts_the_rendered_prompt(
    openai_server: OpenAIServer,
) -> None:
    content = "how long is a token"
    body = {
        "model": openai_server.model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    status, content_type, raw = post(f"{openai_server.base_url}/chat/completions", body)
    assert status == 200 and content_type.startswith("text/event-stream"), raw
    first, *tokens, last = events(raw)
    assert first["choices"][0]["delta"] == {"role": "assistant"}
    assert len(tokens) == 5 and all(chunk["choices"][0]["delta"]["content"] for chunk in tokens)
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in (first, *tokens, last))
    assert last["choices"][0]["finish_reason"] == "length"
    (rendered,) = count_tokens(openai_server, [f"user: {content}\nassistant:"])
    assert last["usage"]["prompt_tokens"] == rendered
    assert last["usage"]["completion_tokens"] == 5


def test_usage_comes_without_stream_options_too(openai_server: OpenAIServer) -> None:
    body = {"model": openai_server.model, "prompt": PROMPT, "max_tokens": 3, "stream": True}
    status, _, raw = post(f"{openai_server.base_url}/completions", body)
    assert status == 200, raw
    assert openai_server.usage_always
    assert events(raw)[-1]["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize("field,value", [("ignore_eos", True), ("min_tokens", 4)])
def test_ignore_eos_and_min_tokens_are_refused(
    openai_server: OpenAIServer, field: str, value: object
) -> None:
    body = {"model": openai_server.model, "prompt": PROMPT, "max_tokens": 4, "stream": True}
    status, _, raw = post(f"{openai_server.base_url}/completions", {**body, field: value})
    assert status == 422 and field in json.loads(raw)["detail"], raw
    assert not openai_server.accepts_ignore_eos and not openai_server.accepts_min_tokens


def test_models_lists_the_model(openai_server: OpenAIServer) -> None:
    async def get() -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{openai_server.base_url}/models") as answer,
        ):
            assert answer.status == 200, await answer.text()
            return await answer.json()

    listed = asyncio.run(get())
    assert [entry["id"] for entry in listed["data"]] == [openai_server.model]


@pytest.mark.parametrize("protocol", ["openai", "openai-chat"])
def test_loadtest_streams_from_it_and_counts_as_its_usage_says(
    openai_server: OpenAIServer, protocol: str, tmp_path
) -> None:
    """loadtest end to end against the third-party server: every query completes (its missing
    [DONE] ends an answer that said why it finished), each answer's count is the server's usage,
    equal to the content events loadtest counted and to the sample's max_tokens (no EOS token
    in this model), and TTFT comes before the end."""
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable, "-m", "loadtest.cli", "server", "--protocol", protocol,
            "--url", openai_server.base_url, "--model", openai_server.model,
            "--embedded", "never", "--no-live", "--qps", "4", "--duration", "2",
            "--min-queries", "6", "--target-latency", "5000", "--records",
            "--output", str(out),
        ],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip
    # a short run of an unbatched server: VALID or INVALID by the rules (3), never an error
    assert run.returncode in (0, 3), run.stdout + run.stderr
    data = json.loads((out / "result.json").read_text())
    assert data["summary"]["completed_ok"] == data["summary"]["issued"] >= 6
    assert data["tokens"]["token_source"] == USAGE_COUNT
    columns = data["records"]["columns"]
    counts, parts = np.asarray(columns["final_count"]), np.asarray(columns["parts"])
    assert (counts == parts).all() and (counts >= 2).all()
    first, done = np.asarray(columns["first_part_ns"]), np.asarray(columns["completed_ns"])
    assert (first < done).all()
    settings = data["settings"]
    library = random_samples(
        openai_model_spec(openai_server.model), settings["sample_count"], settings["sample_seed"]
    )
    asked = [int(library[i][MAX_TOKENS_INPUT].ravel()[0]) for i in columns["sample_index"]]
    assert asked == counts.tolist()


def test_prompts_rendered_by_its_own_tokenizer_have_the_length_its_usage_counts(
    openai_server: OpenAIServer, tmp_path
) -> None:
    """--tokenizer with the server's own tokenizer.json: each prompt rendered to the drawn
    length is counted the same by the server (usage.prompt_tokens), a mismatch rate of 0 over
    every query, and each answer is the drawn max_tokens (engine/prompts/, docs/STREAMING.md)."""
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable, "-m", "loadtest.cli", "server", "--protocol", "openai",
            "--url", openai_server.base_url, "--model", openai_server.model,
            "--embedded", "never", "--no-live", "--qps", "6", "--duration", "1",
            "--min-queries", "6", "--target-latency", "5000", "--records",
            "--tokenizer", str(openai_server.tokenizer), "--input-tokens", "uniform:8:60",
            "--output-tokens", "uniform:3:9", "--output", str(out),
        ],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip
    assert run.returncode in (0, 3), run.stdout + run.stderr
    data = json.loads((out / "result.json").read_text())
    prompts = data["prompts"]
    assert str(openai_server.tokenizer) in prompts["tokenizer"]
    assert prompts["compared"] == data["summary"]["completed_ok"] >= 6
    assert prompts["mismatched"] == 0 and prompts["mismatch_rate"] == 0.0
    counts = np.asarray(data["records"]["columns"]["final_count"])
    assert ((counts >= 3) & (counts <= 9)).all()
