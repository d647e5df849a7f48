"""The suite decoder (gpt_tiny_l2_d128) served by a real embedded Triton over the gRPC stream.

One server for the module (the model built into a temporary repository, ~1 s, and loaded, ~2 s).
What must hold: `loadtest server` on it ends VALID or INVALID by the rules, never in an error;
the server's token counts equal max_tokens (ignore_eos); the streamed text_output is, response by
response, the text of the tokens the in-process loop (models/decoding.py) produces for the same
prompt; a cancelled request stops at its next token.
"""

from __future__ import annotations

import asyncio
import json
import queue
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from test_cli import expected_exit_code, loadtest

from loadtest.core.schedule import Schedule
from loadtest.core.units import NS_PER_MS
from loadtest.engine.runner import Runner
from loadtest.engine.samples import random_samples
from loadtest.models import build_repository
from loadtest.models.decoding import Decoder
from loadtest.rules.tokens import SERVER_COUNT
from loadtest.targets.triton_stream import TritonStreamTarget

pytestmark = pytest.mark.triton

NAME = "gpt_tiny_l2_d128"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("decoder_triton")
    build_repository(repository, [NAME])
    return repository


@pytest.fixture(scope="module")
def served(repository: Path) -> Iterator[object]:
    from loadtest.server.embedded import EmbeddedTriton

    with EmbeddedTriton(repository, models=[NAME]) as server:
        yield server


def test_a_short_server_run_is_judged_by_the_rules(served, repository: Path, tmp_path: Path):
    out = tmp_path / "run"
    result = loadtest(
        "server", "--url", served.grpc_url, "--protocol", "grpc-stream", "--embedded", "never",
        "--repository", str(repository), "--model", NAME, "--qps", "5", "--duration", "2",
        "--min-queries", "10", "--target-latency", "2000", "--mlperf-model", "llama2-70b",
        "--workers", "1", "--output", str(out), "--no-live",
    )  # fmt: skip
    assert result.returncode in (0, 3, 5), result.stderr
    data = json.loads((out / "result.json").read_text())
    assert result.returncode == expected_exit_code(data), result.stderr
    checks = {c["name"]: c["passed"] for c in data["verdict"]["checks"]}
    assert checks["no failed queries"] is True
    tokens = data["tokens"]
    assert tokens["token_source"] == SERVER_COUNT and tokens["one_token_answers"] == 0
    assert tokens["queries"] >= 5 and tokens["tokens"] >= 16 * tokens["queries"]


def test_server_token_counts_are_the_requested_lengths(served):
    async def play():  # type: ignore[no-untyped-def]
        target = TritonStreamTarget(served.grpc_url, NAME)
        spec = await target.open()
        samples = random_samples(spec, 6, seed=11)
        await target.prepare(samples)
        due = (np.arange(12) * 40 * NS_PER_MS).astype(np.int64)
        schedule = Schedule(due, (np.arange(12) % 6).astype(np.int32))
        try:
            return samples, (await Runner(schedule, target).run(handle_sigint=False)).records
        finally:
            await target.close()

    samples, records = asyncio.run(play())
    assert records.ok.all() and records.streamed.all()
    max_tokens = np.array([int(s["max_tokens"][0]) for s in samples])[records.sample_index]
    assert (records.final_count == max_tokens).all()  # num_output_tokens summed, from the server
    assert (records.parts == max_tokens).all()  # one token per response


def _stream(url: str, text: str, max_tokens: int) -> list[tuple[bytes, int]]:
    """(text_output, num_output_tokens) of each response to one streamed request."""
    answers: queue.Queue[tuple[object, object]] = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    inputs = []
    for name, datatype, value in (
        ("text_input", "BYTES", np.array([text.encode()], dtype=object)),
        ("max_tokens", "INT32", np.array([max_tokens], dtype=np.int32)),
        ("stream", "BOOL", np.array([True])),
        ("ignore_eos", "BOOL", np.array([True])),
    ):
        tensor = grpcclient.InferInput(name, [1], datatype)
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    responses = []
    try:
        client.async_stream_infer(NAME, inputs, request_id="1")
        while True:
            result, error = answers.get(timeout=30)
            assert error is None, error
            responses.append(
                (result.as_numpy("text_output")[0], int(result.as_numpy("num_output_tokens")[0]))
            )
            if result.get_response().parameters["triton_final_response"].bool_param:
                return responses
    finally:
        client.stop_stream()
        client.close()


def test_streamed_text_is_the_in_process_loops_tokens(served, repository: Path):
    version = repository / NAME / "1"
    decoder = Decoder(str(version / "model.onnx"), str(version / "tokenizer.json"))
    for text, max_tokens in (("Kiba pigebaba vam, sukilu.", 24), ("qwe rty uiop " * 20, 9)):
        responses = _stream(served.grpc_url, text, max_tokens)
        expected = list(decoder.tokens(text, max_tokens, ignore_eos=True))
        assert [count for _, count in responses] == [1] * max_tokens
        assert [piece.decode() for piece, _ in responses] == [t.text for t in expected]
        joined = b"".join(piece for piece, _ in responses).decode()
        assert joined == decoder.tokenizer.decode([t.id for t in expected])


def test_a_cancelled_request_stops_at_its_next_token(served):
    """Closing the stream mid-answer cancels the request; the model stops before its next step
    (and logs it) instead of generating the rest unseen."""
    client = grpcclient.InferenceServerClient(served.grpc_url)
    seen: queue.Queue[object] = queue.Queue()
    client.start_stream(callback=lambda result, error: seen.put(error))
    text = grpcclient.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"one two"], dtype=object))
    count = grpcclient.InferInput("max_tokens", [1], "INT32")
    count.set_data_from_numpy(np.array([1000], dtype=np.int32))
    stream = grpcclient.InferInput("stream", [1], "BOOL")
    stream.set_data_from_numpy(np.array([True]))
    client.async_stream_infer(NAME, [text, count, stream], request_id="1")
    assert seen.get(timeout=30) is None  # the first token is out
    client.stop_stream(cancel_requests=True)
    client.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if "of 1000 tokens" in served.log_path.read_text(errors="replace"):
            break
        time.sleep(0.05)
    log = served.log_path.read_text(errors="replace")
    (line,) = [line for line in log.splitlines() if "of 1000 tokens" in line]
    assert f"{NAME}: cancelled after" in line


def test_compare_sets_triton_against_the_in_process_loop(served, repository: Path):
    """`compare` at one low rate, Triton's gRPC stream against the same loop in-process: every
    answer on both sides exactly max_tokens long, and the overhead fields present and finite."""
    from decoder_compare import decoder_setup, play

    from loadtest.report.compare_report import compare_json

    played = play(decoder_setup(repository, served.grpc_url, 4, 1.5))
    assert [run.target for run in played.result.runs] == ["triton-grpc-stream", "native"]
    assert played.result.agreement == {"triton-grpc-stream": 0.0}  # token counts agree
    for run in played.result.runs:
        records = run.measurement.outcome.records
        ok = records.ok
        assert ok.sum() == records.issued.sum() >= 4
        assert (records.final_count[ok] == played.max_tokens[records.sample_index[ok]]).all()
    data = json.loads(
        json.dumps(
            compare_json(played.setup, played.session, played.result, {}, 0.0), allow_nan=False
        )
    )
    (row,) = data["token_overhead"]["rows"]
    for figure in ("ttft", "tpot"):
        values = row[figure]
        for key in ("p50_overhead_ns", "p99_overhead_ns", "p50_ratio", "p99_ratio"):
            assert isinstance(values[key], (int, float)), (figure, key, values[key])
        for key in ("p99_overhead_interval_ns", "p99_ratio_interval"):
            assert all(isinstance(v, float) for v in values[key]), (figure, key, values[key])
    assert row["triton"]["tokens"] == row["native"]["tokens"] > 0
    assert data["configurations"]["triton"]["intra_op_thread_count"] == "1"
    assert data["configurations"]["native"]["intra_op_threads"] == 1
    assert "Triton 2.51" in data["compared"][0] and "Python backend" in data["compared"][0]
