"""The suite's small real decoder (gpt_tiny_l2_d128), in-process: its graph, KV cache, tokenizer,
greedy loop and the native streamed target. All fast: the model is 1 M parameters, built once.

The real-Triton half (served over the gRPC stream, `loadtest server` on it) is in
tests/test_decoder_triton.py.
"""

from __future__ import annotations

import ast
import asyncio
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loadtest.core.records import TIMEOUT
from loadtest.core.schedule import Schedule
from loadtest.core.units import NS_PER_MS
from loadtest.engine.runner import Runner
from loadtest.engine.samples import random_samples
from loadtest.errors import SettingsError, TargetError
from loadtest.models import SOURCE_REPOSITORY, SUITE, build_repository, check_repository, gpt
from loadtest.models.bpe import EOS_TOKEN
from loadtest.models.config import model_config, read_config
from loadtest.models.decoding import CONTEXT_KEY, Decoder, GenerationError
from loadtest.models.flops import count_flops
from loadtest.rules.tokens import SERVER_COUNT, token_figures
from loadtest.targets.native_decoder import NativeDecoderTarget

NAME = "gpt_tiny_l2_d128"
SHAPE = gpt.GPT_TINY_L2_D128
PROMPTS = ("Kiba pigebaba vam, sukilu mozopinu.", "hello world", "xkqj fw abcde zzz qq " * 6)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("decoder_repository")
    build_repository(repository, [NAME], seed=0)
    return repository


@pytest.fixture(scope="module")
def decoder(repository: Path) -> Decoder:
    version = repository / NAME / "1"
    return Decoder(str(version / "model.onnx"), str(version / "tokenizer.json"))


def _answer(decoder: Decoder, text: str, max_tokens: int, **rules: object) -> list[int]:
    return [token.id for token in decoder.tokens(text, max_tokens, **rules)]  # type: ignore[arg-type]


# -- the graph --------------------------------------------------------------------------------


def test_kv_cache_decode_equals_a_full_recompute(decoder: Decoder) -> None:
    """Each decode step feeds one token and the cache, and its logits are the logits of the
    whole sequence run from scratch (what the cache saves, not changes)."""
    prompt = decoder.encode(PROMPTS[0])
    logits, *cache = decoder.run(prompt, None)
    ids = list(prompt)
    for step in range(12):
        ids.append(int(np.argmax(logits[0])))
        logits, *cache = decoder.run(ids[-1:], cache)
        assert all(c.shape == (1, SHAPE.heads, len(ids), SHAPE.head_dim) for c in cache), step
        full, *_ = decoder.run(ids, None)
        np.testing.assert_allclose(logits, full, rtol=0, atol=1e-4)
    assert len(set(ids[len(prompt) :])) > 1  # an answer, not one token repeated


def test_flops_grow_with_the_prompt_and_match_the_graph() -> None:
    """Per-token FLOPs counted from the graph equal the analytic formula, and a prefill's grow
    with its length (quadratically in attention)."""
    model = SUITE[NAME].generate(0)
    assert count_flops(model, SUITE[NAME].flops_dims) == SHAPE.flops_per_token(0)
    assert SUITE[NAME].approx_flops == SHAPE.flops_per_token(0)
    pinned = {gpt.SEQUENCE: 64, gpt.PAST: 0, gpt.TOTAL: 64}
    assert count_flops(model, pinned) == SHAPE.prefill_flops(64)
    assert SHAPE.prefill_flops(256) > 4 * SHAPE.prefill_flops(64) > 16 * SHAPE.flops_per_token(0)
    assert {p.key: p.value for p in model.metadata_props} == {CONTEXT_KEY: str(SHAPE.context)}


# -- the loop ---------------------------------------------------------------------------------


def test_greedy_answers_are_deterministic_for_a_seed(repository: Path, tmp_path: Path) -> None:
    version = repository / NAME / "1"
    first = Decoder(str(version / "model.onnx"), str(version / "tokenizer.json"))
    again = Decoder(str(version / "model.onnx"), str(version / "tokenizer.json"))
    other_weights = tmp_path / "seed1.onnx"
    other_weights.write_bytes(gpt.build(1, SHAPE, NAME).SerializeToString())
    other = Decoder(str(other_weights), str(version / "tokenizer.json"))
    for text in PROMPTS:
        answer = _answer(first, text, 20)
        assert len(answer) == 20 and answer == _answer(again, text, 20)
        assert answer != _answer(other, text, 20)


def test_streamed_text_joins_to_the_decoded_answer(decoder: Decoder) -> None:
    for text in PROMPTS:
        tokens = list(decoder.tokens(text, 40, ignore_eos=True))
        ids = [t.id for t in tokens]
        joined = "".join(t.text for t in tokens)
        assert joined == decoder.tokenizer.decode(ids, skip_special_tokens=True)
        assert joined  # real text came out


def test_end_of_sequence_rules(decoder: Decoder) -> None:
    """EOS ends an answer (counted as its last token) unless ignore_eos; before min_tokens it
    cannot be chosen. The real EOS is rare under random weights, so the test names as EOS the
    token greedy decoding picks 4th."""
    plain = _answer(decoder, PROMPTS[0], 12)
    real_eos = decoder.eos_id
    try:
        decoder.eos_id = plain[3]
        stops = plain.index(plain[3]) + 1
        generation = decoder.start(decoder.encode(PROMPTS[0]), 12)
        while not generation.finished:
            generation.step()
        assert generation.ids == plain[:stops] and generation.stopped_by_eos
        assert _answer(decoder, PROMPTS[0], 12, ignore_eos=True) == plain
        held = _answer(decoder, PROMPTS[0], 12, min_tokens=stops + 1)
        assert held[: stops - 1] == plain[: stops - 1] and held[stops - 1] != plain[3]
        assert len(held) >= stops + 1
    finally:
        decoder.eos_id = real_eos
    assert decoder.tokenizer.id_to_token(real_eos) == EOS_TOKEN


def test_requests_the_model_cannot_answer_say_why(decoder: Decoder) -> None:
    with pytest.raises(GenerationError, match=r"max_tokens must be ≥ 1"):
        decoder.start([1, 2], 0)
    with pytest.raises(GenerationError, match=r"≥ min_tokens"):
        decoder.start([1, 2], 4, min_tokens=5)
    with pytest.raises(GenerationError, match=r"exceed the model's context of 1024 tokens"):
        decoder.start([1] * 1000, 25)
    assert decoder.start([], 4).prompt == [decoder.eos_id]  # empty prompt: from <|endoftext|>


# -- the build --------------------------------------------------------------------------------


def test_the_build_is_byte_identical_in_another_process(repository: Path, tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from loadtest.models import build_repository; "
        f"build_repository(Path(sys.argv[1]), [{NAME!r}], seed=0)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "4321"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, env=env)
    here, there = repository / NAME / "1", tmp_path / NAME / "1"
    for name in ("model.onnx", "tokenizer.json", "model.py", "decoding.py"):
        assert (here / name).read_bytes() == (there / name).read_bytes(), name


def test_stale_or_missing_side_files_are_rebuilt_and_reported(tmp_path: Path) -> None:
    build_repository(tmp_path, [NAME])
    model_py = tmp_path / NAME / "1" / "model.py"
    model_py.write_text(model_py.read_text() + "# edited\n")
    assert not build_repository(tmp_path, [NAME])[0].skipped  # an edited model.py: rebuilt
    assert build_repository(tmp_path, [NAME])[0].skipped
    (tmp_path / NAME / "1" / "tokenizer.json").unlink()
    (problem,) = check_repository(tmp_path, [NAME])
    assert "1/tokenizer.json is missing" in problem and "loadtest models build" in problem


def test_serving_code_imports_nothing_from_loadtest() -> None:
    """model.py and decoding.py run inside Triton's Python stub, copied into the repository."""
    for relative in ("decoding.py", "python_backend/decoder_model.py"):
        tree = ast.parse((SOURCE_REPOSITORY.parent / "loadtest" / "models" / relative).read_text())
        modules = {
            alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names
        }
        modules |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {m for m in modules if m.startswith("loadtest")}, relative


def test_the_config_speaks_the_known_answer_models_interface() -> None:
    """Same tensors as llm_known (TensorRT-LLM's names), so every client of one drives both."""
    known = read_config(SOURCE_REPOSITORY / "llm_known" / "config.pbtxt")
    config = model_config(SUITE[NAME])
    assert list(config.input) == list(known.input) and list(config.output) == list(known.output)
    assert config.model_transaction_policy.decoupled and config.backend == "python"
    assert config.max_batch_size == 0


# -- the native streamed target -----------------------------------------------------------------


def _play_native(target: NativeDecoderTarget, count: int, gap_ms: float, seed: int = 3):  # type: ignore[no-untyped-def]
    async def play():  # type: ignore[no-untyped-def]
        spec = await target.open()
        samples = random_samples(spec, 4, seed=seed)
        await target.prepare(samples)
        due = (np.arange(count) * gap_ms * NS_PER_MS).astype(np.int64)
        schedule = Schedule(due, (np.arange(count) % len(samples)).astype(np.int32))
        try:
            return samples, (await Runner(schedule, target).run(handle_sigint=False)).records
        finally:
            await target.close()

    return asyncio.run(play())


def test_native_target_streams_every_token_on_the_schedule(
    repository: Path, decoder: Decoder
) -> None:
    target = NativeDecoderTarget.from_repository(repository, NAME)
    samples, records = _play_native(target, count=8, gap_ms=15)
    assert records.ok.all() and records.streamed.all()
    max_tokens = np.array([int(s["max_tokens"][0]) for s in samples])[records.sample_index]
    assert (records.final_count == max_tokens).all() and (records.parts == max_tokens).all()
    assert (records.first_part_ns > records.scheduled_ns).all()
    assert (records.completed_ns > records.first_part_ns).all()
    figures = token_figures(records)
    assert figures is not None and figures.token_source == SERVER_COUNT
    assert figures.tokens == int(max_tokens.sum())
    # its text is the in-process loop's
    target = NativeDecoderTarget.from_repository(repository, NAME)

    async def whole() -> dict[str, np.ndarray]:
        await target.open()
        await target.prepare(samples[:1])
        try:
            return await target.infer_outputs(0)
        finally:
            await target.close()

    outputs = asyncio.run(whole())
    text = samples[0]["text_input"][0].decode()
    expected = "".join(t.text for t in decoder.tokens(text, int(samples[0]["max_tokens"][0]), True))
    assert outputs["text_output"][0].decode() == expected
    assert int(outputs["num_output_tokens"][0]) == int(samples[0]["max_tokens"][0])


def test_native_target_times_out_and_refuses_bad_samples(repository: Path, tmp_path: Path) -> None:
    target = NativeDecoderTarget.from_repository(repository, NAME, timeout_s=0.002)
    _, records = _play_native(target, count=2, gap_ms=1)
    assert not records.ok.any() and records.error_kinds == [TIMEOUT]
    with pytest.raises(TargetError, match=r"sample 0: the prompt's .* exceed the model's context"):
        target = NativeDecoderTarget.from_repository(repository, NAME)

        async def bad() -> None:
            await target.open()
            try:
                sample = {
                    "text_input": np.array([b"a b " * 600], dtype=object),
                    "max_tokens": np.array([500], dtype=np.int32),
                }
                await target.prepare([sample])
            finally:
                await target.close()

        asyncio.run(bad())
    (tmp_path / NAME).mkdir()
    (tmp_path / NAME / "config.pbtxt").write_bytes(
        (repository / NAME / "config.pbtxt").read_bytes()
    )
    with pytest.raises(TargetError, match=r"model.onnx is missing.*loadtest models build"):
        NativeDecoderTarget.from_repository(tmp_path, NAME)


def test_its_bound_is_per_token_not_one_latency(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from loadtest.commands.common import target_latency_ns
    from loadtest.commands.models import app

    with pytest.raises(
        SettingsError, match=r"gpt_tiny_l2_d128 has no Server latency bound: .*TTFT"
    ):
        target_latency_ns(NAME, None)
    assert target_latency_ns(NAME, 2000.0) == 2_000_000_000  # loadtest's end-to-end check
    result = CliRunner().invoke(
        app, ["list", "--repository", str(tmp_path)], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    (row,) = [line for line in result.output.splitlines() if line.startswith(f"│ {NAME} ")]
    assert "MLPerf LLM: p99 TTFT and TPOT" in row and "~1.31 MFLOP" in row and "~4.2 MB" in row


def test_a_decoder_missing_its_tokenizer_is_not_taken_as_built(repository: Path, tmp_path: Path):
    import shutil

    from loadtest.errors import ModelBuildError
    from loadtest.server.deployment import ensure_model_built

    shutil.copytree(repository / NAME, tmp_path / NAME)
    ensure_model_built(tmp_path, NAME, print)  # all there: nothing to do, nothing refused
    (tmp_path / NAME / "1" / "tokenizer.json").unlink()
    with pytest.raises(ModelBuildError, match=r"no .*1/tokenizer.json\).*loadtest models build"):
        ensure_model_built(tmp_path, NAME, print)
