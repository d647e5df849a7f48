"""Issue #28 deliverable 6 / #29 deliverable 4: a text model's prompts (engine/prompts/).

Length laws drawn as documented, prompts rendered to exact token counts (the word rule and a
Hugging Face tokenizer.json trained here), prompts files (JSON lines, ShareGPT) and their
refusals, a trace's lengths and shared hash blocks, and the server's prompt count against the
client's. What reaches the server is checked against the stub's llm_known, whose first token is
due a + b·words after the request (tests/stream_law.py): a prompt of the wrong length would
miss that law by b per word.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import numpy as np
import pytest
from stream_law import FAST_LAW_MS, law_repository

from loadtest.core.arrivals import Timestamps
from loadtest.core.lengths import MAX_TOKENS, length_law_named, lognormal_parameters
from loadtest.core.prompts import HASH_BLOCK_TOKENS, PromptSettings
from loadtest.core.records import NO_COUNT, Records, Status
from loadtest.core.schedule import Schedule, schedule_of
from loadtest.core.units import NS_PER_MS
from loadtest.engine.prompts.from_trace import trace_prompts
from loadtest.engine.prompts.tokenizer import WORD_RULE, HfTokenizer, WordTokenizer
from loadtest.engine.runner import Runner
from loadtest.engine.samples import prompt_library
from loadtest.engine.traces import read_trace
from loadtest.errors import SettingsError
from loadtest.rules.prompt_counts import prompt_figures
from loadtest.stub.catalog import Behaviour, Catalog
from loadtest.stub.http_server import start_http
from loadtest.targets.openai_sse import OpenAiSseTarget, openai_model_spec

A_MS, B_MS, C_MS = FAST_LAW_MS
MODEL = openai_model_spec("llm_known")


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64([seed, stream]))


# -- length laws ----------------------------------------------------------------------------------


def test_each_law_draws_as_documented_for_a_seed():
    """fixed, uniform (both ends included), normal rounded and clipped, lognormal with the
    lengths' own mean and SD: each the documented numpy construction, value for value."""
    n = 2000
    assert (length_law_named("fixed:7").draw(5, _rng(1, 2)) == 7).all()
    uniform = length_law_named("uniform:3:5").draw(n, _rng(1, 2))
    assert (uniform == _rng(1, 2).integers(3, 6, size=n)).all()
    assert set(uniform.tolist()) == {3, 4, 5}
    normal = length_law_named("normal:4:6").draw(n, _rng(1, 2))
    expected = np.clip(np.rint(_rng(1, 2).normal(4, 6, size=n)), 1, MAX_TOKENS)
    assert (normal == expected).all() and normal.min() == 1  # clipped, not redrawn
    assert normal.mean() > 4  # the clipped mass sits on 1, above the normal's own draws
    mu, sigma = lognormal_parameters(200, 100)
    assert sigma == pytest.approx(math.sqrt(math.log(1.25)))
    lognormal = length_law_named("lognormal:200:100").draw(20_000, _rng(3, 4))
    assert (lognormal == np.rint(_rng(3, 4).lognormal(mu, sigma, size=20_000))).all()
    assert lognormal.mean() == pytest.approx(200, rel=0.03)
    assert lognormal.std() == pytest.approx(100, rel=0.06)


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("fixed:0", "whole number ≥ 1"),
        ("fixed:2.5", "whole number ≥ 1"),
        ("uniform:9:3", "above HI"),
        ("uniform:3", "uniform:LO:HI"),
        ("normal:nan:3", "not a finite number"),
        ("normal:100:inf", "not a finite number"),
        ("lognormal:-5:2", "negative"),
        ("normal:0:5", "MEAN must be > 0"),
        ("fixed:2000000", "over 1,000,000"),
        ("poisson:3", "unknown length law"),
    ],
)
def test_bad_laws_are_one_line(spec, why):
    with pytest.raises(SettingsError) as error:
        length_law_named(spec)
    assert why in str(error.value) and "\n" not in str(error.value)


# -- rendering ------------------------------------------------------------------------------------


def _train_tokenizer(path: Path) -> Path:
    """A byte-level BPE with a BOS added to every text, trained on seeded words: merges cut
    words into pieces, so its counts differ from the word rule's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, rng.integers(2, 8))) for _ in range(3000)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(
        [" ".join(words[i : i + 20]) for i in range(0, 3000, 20)], trainer
    )
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", bos)]
    )
    tokenizer.save(str(path))
    return path


@pytest.fixture(scope="module")
def bpe(tmp_path_factory) -> Path:
    pytest.importorskip("tokenizers")
    return _train_tokenizer(tmp_path_factory.mktemp("tokenizer") / "tokenizer.json")


def test_synthetic_prompts_have_exactly_their_drawn_lengths_by_either_tokenizer(bpe):
    law = length_law_named("uniform:1:300")
    words = prompt_library(MODEL, 40, 5, prompts=PromptSettings(law, length_law_named("fixed:9")))
    assert words is not None and words.tokenizer == WORD_RULE
    expected = law.draw(40, _rng(5, 0x494E))
    assert (words.input_tokens == expected).all()
    texts = [s["text_input"][0].decode() for s in words.samples]
    assert [len(t.split()) for t in texts] == expected.tolist()
    assert all(int(s["max_tokens"][0]) == 9 for s in words.samples)
    assert (words.output_tokens == 9).all()
    assert all(set(s) == {"text_input", "max_tokens"} for s in words.samples)
    hf = prompt_library(MODEL, 40, 5, prompts=PromptSettings(law, tokenizer=bpe))
    assert hf is not None and str(bpe) in hf.tokenizer
    counted = HfTokenizer(bpe).counts([s["text_input"][0].decode() for s in hf.samples])
    assert (counted == expected).all() and (hf.input_tokens == expected).all()
    again = prompt_library(MODEL, 40, 5, prompts=PromptSettings(law, tokenizer=bpe))
    assert again is not None and [s["text_input"][0] for s in again.samples] == [
        s["text_input"][0] for s in hf.samples
    ]  # seeded: the same text run to run


def test_a_bad_tokenizer_or_a_model_without_prompts_is_one_line(tmp_path, bpe):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    cases = [
        (MODEL, PromptSettings(tokenizer=tmp_path / "missing.json"), "no such file"),
        (MODEL, PromptSettings(tokenizer=bad), "not a Hugging Face tokenizer.json"),
        (
            MODEL,
            PromptSettings(input_tokens=length_law_named("fixed:1"), tokenizer=bpe),
            "at least one token beside",
        ),
    ]
    spec = openai_model_spec("m")
    numeric = type(spec)("resnet", "", 0, (spec.inputs[1],), ())
    cases.append((numeric, PromptSettings(input_tokens=length_law_named("fixed:3")), "no text"))
    cases.append((MODEL, PromptSettings(shared_prefix=True), "--shared-prefix"))
    for model, settings, why in cases:
        with pytest.raises(SettingsError) as error:
            prompt_library(model, 4, 1, prompts=settings)
        assert why in str(error.value) and "\n" not in str(error.value), str(error.value)


# -- prompts files ---------------------------------------------------------------------------------


def _write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _sharegpt(path: Path) -> Path:
    conversations = [
        {"conversations": [{"from": "human", "value": "tell me a story about a cat"},
                           {"from": "gpt", "value": "once upon a time there was a cat"}]},
        {"conversations": [{"from": "system", "value": "be brief"},
                           {"from": "human", "value": "why"},
                           {"from": "gpt", "value": "because it is so and so"}]},
        {"conversations": [{"from": "gpt", "value": "an answer with no question"}]},
    ]  # fmt: skip
    path.write_text(json.dumps(conversations))
    return path


def _play(repository: Path, samples, count: int, gap_ms: float) -> Records:
    """The stub's llm_known over the OpenAI API, in process: `count` queries `gap_ms` apart,
    cycling the samples."""

    async def play() -> Records:
        server = await start_http(Catalog(repository), "127.0.0.1", 0, behaviour=Behaviour())
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        target = OpenAiSseTarget(url, "llm_known")
        try:
            await target.open()
            await target.prepare(samples)
            due = (np.arange(count) * gap_ms * NS_PER_MS).astype(np.int64)
            schedule = Schedule(due, (np.arange(count) % len(samples)).astype(np.int32))
            return (await Runner(schedule, target).run(handle_sigint=False)).records
        finally:
            await target.close()
            server.close()

    return asyncio.run(play())


def _ttft_error(records: Records, words: np.ndarray) -> float:
    """The median relative miss of each TTFT against a + b·words (words of its sample)."""
    ttft = records.first_part_ns - records.scheduled_ns
    expected = (A_MS + B_MS * words[records.sample_index]) * NS_PER_MS
    return float(np.median(np.abs(ttft - expected) / expected))


def test_jsonl_and_sharegpt_prompts_reach_the_server_with_their_lengths(tmp_path):
    """Each file's prompts go out as written: llm_known's first token comes a + b·words after
    the request (b = 4 ms a word, so prompts of 3 and 40 words are 148 ms apart), each answer
    is the file's max_tokens (ShareGPT: the gpt answer's words), and the server's prompt count
    (usage.prompt_tokens, words) equals the client's word count on every query."""
    repository = law_repository(tmp_path)
    long = " ".join(["word"] * 40)
    jsonl = _write_jsonl(tmp_path / "prompts.jsonl", [
        {"text": "three short words", "max_tokens": 4},
        {"prompt": long, "output_tokens": 6},
    ])  # fmt: skip
    sharegpt = _sharegpt(tmp_path / "sharegpt.json")
    for path, words, answers in ((jsonl, [3, 40], [4, 6]), (sharegpt, [7, 1], [8, 6])):
        library = prompt_library(MODEL, 64, 1, path)
        assert library is not None and len(library.samples) == 2
        assert library.input_tokens.tolist() == words
        assert library.output_tokens.tolist() == answers
        records = _play(repository, library.samples, 6, 60)
        assert records.ok.all()
        assert (records.final_count == np.array(answers)[records.sample_index]).all()
        assert _ttft_error(records, np.array(words)) < 0.10
        figures = prompt_figures(
            records, library.input_tokens, library.output_tokens, library.tokenizer, library.source
        )
        assert figures.compared == 6 and figures.mismatched == 0
    assert "1 conversations skipped" in prompt_library(MODEL, 64, 1, sharegpt).source  # type: ignore[union-attr]


def test_a_client_tokenizer_that_disagrees_with_the_server_is_a_counted_mismatch(tmp_path, bpe):
    """Prompts rendered by a BPE with a BOS: the client counts BOS + one token per word, the
    stub counts words, so every query is a mismatch of exactly −1, and the server's count is
    what the records keep."""
    repository = law_repository(tmp_path)
    library = prompt_library(
        MODEL, 3, 2, prompts=PromptSettings(length_law_named("uniform:5:20"), tokenizer=bpe)
    )
    assert library is not None
    records = _play(repository, library.samples, 6, 40)
    figures = prompt_figures(
        records, library.input_tokens, library.output_tokens, library.tokenizer, library.source
    )
    assert figures.compared == 6 and figures.mismatched == 6 and figures.mismatch_rate == 1.0
    assert figures.mean_difference == -1.0
    assert (records.prompt_count == library.input_tokens[records.sample_index] - 1).all()
    assert "≠ the client's on 6 of 6 queries (100.0 %" in figures.counts_line()


def test_prompt_figures_compare_only_queries_with_a_server_count():
    records = Records(np.zeros(4, np.int64), np.array([0, 1, 0, 1], np.int32))
    records.issued_ns[:] = 0
    records.status[:] = [Status.OK, Status.OK, Status.OK, Status.ERROR]
    records.prompt_count[:] = [5, NO_COUNT, 6, 9]
    figures = prompt_figures(records, np.array([5, 7]), np.array([3, -1]), "words", "test")
    assert (figures.compared, figures.mismatched, figures.not_reported) == (2, 1, 1)
    assert figures.mean_difference == 0.5 and figures.sent_input_tokens == 24
    assert figures.max_tokens is not None and figures.max_tokens.max == 3
    assert "definitions" in figures.to_json() and figures.to_json()["mismatch_rate"] == 0.5


@pytest.mark.parametrize(
    ("lines", "why"),
    [
        (['{"text": "fine"}', "{broken"], "line 2: not JSON"),
        (['{"text": "a", "max_tokens": NaN}'], "line 1: max_tokens nan is not a finite number"),
        (['{"text": "a", "max_tokens": -3}'], "line 1: max_tokens -3 is not a whole number ≥ 1"),
        (['{"text": "a", "max_tokens": 2.5}'], "line 1: max_tokens 2.5 is not a whole number"),
        (['{"text": "a", "output_tokens": true}'], "line 1: output_tokens True is not a number"),
        (["", '{"words": "a"}'], "line 2: has no 'text' (or 'prompt')"),
        (['{"text": "  "}'], "line 1: text is empty"),
        (["[1, 2]"], "entry 0: is not an object with a 'conversations' list"),
        (['{"a": 1}', "", "  "], "line 1: has no 'text'"),
        (["   "], "is empty"),
        (["hello"], "neither JSON lines of prompts nor a ShareGPT list"),
    ],
)
def test_a_malformed_prompts_file_is_one_line_naming_the_file_and_line(tmp_path, lines, why):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SettingsError) as error:
        prompt_library(MODEL, 4, 1, path)
    line = str(error.value)
    assert line.startswith(f"--input-data {path}") and why in line and "\n" not in line, line


def test_input_format_forces_the_form_and_sharegpt_refusals_name_the_entry(tmp_path):
    jsonl = _write_jsonl(tmp_path / "p.jsonl", [{"text": "a b"}])
    with pytest.raises(SettingsError, match="a ShareGPT file is a JSON list"):
        prompt_library(MODEL, 4, 1, jsonl, prompts=PromptSettings(input_format="sharegpt"))
    bad = tmp_path / "sg.json"
    bad.write_text(json.dumps([{"conversations": [{"from": "human", "value": 3}]}]))
    with pytest.raises(SettingsError, match=r"entry 0: a turn's 'value' is not a string"):
        prompt_library(MODEL, 4, 1, bad)


# -- traces ----------------------------------------------------------------------------------------


def _mooncake(path: Path, rows: list[dict[str, object]]) -> Path:
    return _write_jsonl(path, rows)


def test_a_traces_lengths_reach_each_query_through_its_own_sample(tmp_path):
    """One prompt per row: the replayed rows name their samples by position, the schedule plays
    row k with sample k, and each prompt has its row's words and max_tokens; then the stub
    answers each query with its row's output length after a + b·(its row's input length)."""
    rows = [
        {"timestamp": 30 * k, "input_length": n, "output_length": m, "hash_ids": [k]}
        for k, (n, m) in enumerate([(5, 3), (60, 2), (5, 7), (20, 4), (1, 5)])
    ]
    path = _mooncake(tmp_path / "trace.jsonl", rows)
    law, lengths = trace_prompts(Timestamps.of(read_trace(path)), path, None, False)
    assert lengths is not None and law.rows is not None
    assert law.rows.sample is not None and law.rows.sample.tolist() == [0, 1, 2, 3, 4]
    library = prompt_library(MODEL, 64, 1, prompts=PromptSettings(trace=lengths))
    assert library is not None
    words = [len(s["text_input"][0].split()) for s in library.samples]
    assert words == [5, 60, 5, 20, 1]
    assert library.output_tokens.tolist() == [3, 2, 7, 4, 5]
    assert library.samples[0]["text_input"][0] != library.samples[2]["text_input"][0]
    schedule = schedule_of(law.arrivals(0, 0, 0, 0), len(library.samples), 1)
    assert schedule.sample_index.tolist() == [0, 1, 2, 3, 4]
    records = _play(law_repository(tmp_path), library.samples, 5, 40)
    assert records.ok.all() and records.final_count.tolist() == [3, 2, 7, 4, 5]
    assert _ttft_error(records, np.array(words)) < 0.10


def test_shared_hash_ids_render_to_the_same_prefix_text(tmp_path):
    """Rows sharing hash ids start with the same text, 512 words a block; a row whose length
    ends inside a block carries that block's start; a different id is different text."""
    rows = [
        {"timestamp": 0, "input_length": 1100, "output_length": 2, "hash_ids": [11, 12, 13]},
        {"timestamp": 1, "input_length": 1024, "output_length": 2, "hash_ids": [11, 12]},
        {"timestamp": 2, "input_length": 700, "output_length": 2, "hash_ids": [11, 14]},
        {"timestamp": 3, "input_length": 600, "output_length": 2, "hash_ids": [15, 12]},
    ]
    path = _mooncake(tmp_path / "trace.jsonl", rows)
    _, lengths = trace_prompts(Timestamps.of(read_trace(path)), path, "mooncake", True)
    assert lengths is not None and lengths.hash_ids == ((11, 12, 13), (11, 12), (11, 14), (15, 12))
    library = prompt_library(MODEL, 1, 9, prompts=PromptSettings(shared_prefix=True, trace=lengths))
    assert library is not None
    texts = [s["text_input"][0].decode().split() for s in library.samples]
    assert [len(t) for t in texts] == [1100, 1024, 700, 600]
    block = HASH_BLOCK_TOKENS
    assert texts[0][: 2 * block] == texts[1]  # both blocks 11 and 12, word for word
    assert texts[0][:block] == texts[2][:block]  # block 11 alone
    assert texts[2][block:] != texts[0][block:700]  # 14 is not 12
    assert texts[3][block:600] == texts[0][block:600]  # block 12 after another first block
    assert texts[3][:block] != texts[0][:block]
    other = prompt_library(MODEL, 1, 10, prompts=PromptSettings(shared_prefix=True, trace=lengths))
    assert (
        other is not None
        and other.samples[0]["text_input"][0] != library.samples[0]["text_input"][0]
    )


def test_trace_prompt_refusals(tmp_path):
    plain = tmp_path / "times.csv"
    plain.write_text("time_ms,input_tokens,output_tokens\n0,5,3\n10,6,4\n")
    law = Timestamps.of(read_trace(plain))
    with pytest.raises(SettingsError, match=r"--shared-prefix: .* has no hash_ids"):
        trace_prompts(law, plain, None, True)
    law, lengths = trace_prompts(law, plain, None, False)
    assert lengths is not None and lengths.hash_ids is None
    for settings, why in (
        (PromptSettings(trace=lengths, output_tokens=length_law_named("fixed:3")), "whose rows"),
        (PromptSettings(trace=lengths, input_tokens=length_law_named("fixed:3")), "whose rows"),
    ):
        with pytest.raises(SettingsError, match=why):
            prompt_library(MODEL, 4, 1, prompts=settings)
    times_only = tmp_path / "only.csv"
    times_only.write_text("time_ms\n0\n10\n")
    only = Timestamps.of(read_trace(times_only))
    assert trace_prompts(only, times_only, None, False) == (only, None)


def test_the_word_tokenizer_counts_whitespace_words():
    words = WordTokenizer()
    assert words.count("  a b\tc\n d ") == 4 and words.counts(["", "x y"]).tolist() == [0, 2]
