"""The prompts of a text model's sample library: where they come from, their token counts, and
the samples that carry them.

A model takes text prompts when it has a BYTES input: `text_input` (TensorRT-LLM's name, which
llm_known and the OpenAI target use), else its only BYTES input. Its prompts come from, in order:
- a recorded trace's rows (`PromptSettings.trace`): one prompt per row, of the row's input
  length, its max_tokens the row's output length, shared hash blocks with --shared-prefix;
- --input-data, a prompts file (engine/prompts/files.py);
- --input-tokens / --output-tokens, synthetic lengths drawn from the run's sample seed;
each rendered or counted with the run's tokenizer (--tokenizer, else one token per word).
The output length goes to the model's `max_tokens` input; where a source gives none, the
sample's own draw from the model's `loadtest.range.max_tokens` stays.

`prompt_plan` decides the texts and lengths (no samples needed); `build_prompts` writes them
into samples drawn as usual for the model's other inputs (engine/samples.py hands in the draw),
so `stream`, `ignore_eos` and the like keep their model-stated values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadtest.core.prompts import MAX_TRACE_PROMPT_TOKENS, PromptSettings, TraceLengths
from loadtest.core.target import ModelSpec, Sample, TensorSpec
from loadtest.engine.prompts.files import read_prompt_file
from loadtest.engine.prompts.render import render_blocked, render_texts
from loadtest.engine.prompts.tokenizer import PromptTokenizer, tokenizer_for
from loadtest.errors import SettingsError
from loadtest.rules.prompt_counts import NO_LENGTH

PROMPT_INPUT = "text_input"
MAX_TOKENS_INPUT = "max_tokens"
IGNORE_EOS_INPUT = "ignore_eos"  # TensorRT-LLM's name: run to max_tokens, past any EOS
INPUT_STREAM = 0x494E  # "IN": synthetic input lengths
OUTPUT_STREAM = 0x4F5554  # "OUT": synthetic output lengths


def prompt_input(model: ModelSpec) -> TensorSpec | None:
    """The model's prompt: its BYTES `text_input`, else its only BYTES input; None if neither."""
    texts = [t for t in model.inputs if t.datatype == "BYTES"]
    named = [t for t in texts if t.name == PROMPT_INPUT]
    if named:
        return named[0]
    return texts[0] if len(texts) == 1 else None


def max_tokens_input(model: ModelSpec) -> TensorSpec | None:
    return next((t for t in model.inputs if t.name == MAX_TOKENS_INPUT), None)


@dataclass(frozen=True)
class PromptPlan:
    """The library's prompts: each sample's text, its token count by `tokenizer`, and its
    output length (NO_LENGTH: the model's own draw), with where they came from in words."""

    texts: list[str]
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    tokenizer: str
    source: str

    def __len__(self) -> int:
        return len(self.texts)


def _check_budget(lengths: np.ndarray, what: str) -> None:
    total = int(lengths.sum())
    if total > MAX_TRACE_PROMPT_TOKENS:
        raise SettingsError(
            f"{what}: {total:,} prompt tokens in all, over the {MAX_TRACE_PROMPT_TOKENS:,} "
            "loadtest holds in memory (every worker keeps every prompt and its request)"
        )


def _clipped(lengths: np.ndarray) -> tuple[np.ndarray, int]:
    """Lengths below 1 raised to 1 (no request has an empty prompt or max_tokens 0), and how
    many were."""
    low = lengths < 1
    return np.maximum(lengths, 1), int(low.sum())


def _from_trace(
    trace: TraceLengths, tokenizer: PromptTokenizer, seed: int, settings: PromptSettings
) -> PromptPlan:
    inputs, raised_in = _clipped(trace.input_tokens.astype(np.int64))
    _check_budget(inputs, trace.source)
    notes = []
    if settings.shared_prefix and trace.hash_ids is not None:
        texts = render_blocked(tokenizer, inputs, trace.hash_ids, seed)
        notes.append("shared prefixes: each hash id one 512-token block of the same text")
    else:
        texts = render_texts(tokenizer, inputs, seed)
    if trace.output_tokens is None and settings.output_tokens is not None:
        rng = np.random.Generator(np.random.PCG64([seed, OUTPUT_STREAM]))
        outputs = settings.output_tokens.draw(len(inputs), rng)
        notes.append(
            f"no output lengths in the trace: max_tokens {settings.output_tokens.describe()}"
        )
    elif trace.output_tokens is None:
        outputs = np.full(len(inputs), NO_LENGTH, dtype=np.int64)
        notes.append("no output lengths in the trace: max_tokens drawn as for the model")
    else:
        outputs, raised_out = _clipped(trace.output_tokens.astype(np.int64))
        if raised_out:
            notes.append(f"{raised_out} rows of output length 0 sent with max_tokens 1")
    if raised_in:
        notes.append(f"{raised_in} rows of input length 0 sent with 1 token")
    source = f"{trace.source}: one prompt per row ({len(inputs):,}), lengths from the trace"
    return PromptPlan(texts, inputs, outputs, tokenizer.name, "; ".join([source, *notes]))


def _synthetic(
    settings: PromptSettings, count: int, tokenizer: PromptTokenizer, seed: int
) -> PromptPlan:
    if settings.input_tokens is not None:
        rng = np.random.Generator(np.random.PCG64([seed, INPUT_STREAM]))
        inputs = settings.input_tokens.draw(count, rng)
        _check_budget(inputs, f"--input-tokens {settings.input_tokens.spec} × {count} samples")
        if int(inputs.min()) <= tokenizer.specials:
            raise SettingsError(
                f"--input-tokens {settings.input_tokens.spec}: a prompt needs at least one "
                f"token beside the {tokenizer.specials} special tokens the tokenizer adds"
            )
        texts = render_texts(tokenizer, inputs, seed)
        what = f"input {settings.input_tokens.describe()} tokens"
    else:
        texts = []
        inputs = np.zeros(0, dtype=np.int64)
        what = "input text drawn as for the model"
    outputs = np.full(count, NO_LENGTH, dtype=np.int64)
    if settings.output_tokens is not None:
        rng = np.random.Generator(np.random.PCG64([seed, OUTPUT_STREAM]))
        outputs = settings.output_tokens.draw(count, rng)
        what += f", max_tokens {settings.output_tokens.describe()}"
    return PromptPlan(texts, inputs, outputs, tokenizer.name, f"{count} synthetic prompts: {what}")


def _from_file(
    path: Path, settings: PromptSettings, tokenizer: PromptTokenizer, seed: int
) -> PromptPlan:
    read = read_prompt_file(path, settings.input_format)
    texts = [e.text for e in read.entries]
    inputs = tokenizer.counts(texts)
    _check_budget(inputs, f"--input-data {path}")
    outputs = np.fromiter(
        (NO_LENGTH if e.output_tokens is None else e.output_tokens for e in read.entries),
        np.int64,
        len(texts),
    )
    how = "max_tokens from the file"
    if settings.output_tokens is not None:
        rng = np.random.Generator(np.random.PCG64([seed, OUTPUT_STREAM]))
        outputs = settings.output_tokens.draw(len(texts), rng)
        how = f"max_tokens {settings.output_tokens.describe()} (--output-tokens, over the file's)"
    elif read.form == "sharegpt":
        answers = [e.answer or "" for e in read.entries]
        outputs = np.maximum(tokenizer.counts(answers) - tokenizer.specials, 1)
        how = "max_tokens = the gpt answer's tokens (special tokens excluded), as vLLM's benchmark"
    elif (outputs == NO_LENGTH).all():
        how = "max_tokens drawn as for the model (the file gives none)"
    elif (outputs == NO_LENGTH).any():
        how += f"; {int((outputs == NO_LENGTH).sum())} without one drawn as for the model"
    skipped = (
        f", {read.skipped} conversations skipped (no human turn followed by a gpt answer)"
        if read.skipped
        else ""
    )
    source = f"{path.name} ({read.form}): {len(texts):,} prompts{skipped}; {how}"
    return PromptPlan(texts, inputs, outputs, tokenizer.name, source)


def prompt_plan(
    model: ModelSpec,
    count: int,
    seed: int,
    settings: PromptSettings,
    input_data: Path | None,
    tokenizer: PromptTokenizer,
) -> PromptPlan:
    """The prompts for `model` (see the module docstring), counted or rendered by `tokenizer`;
    SettingsError, one line, for flags the model or each other cannot take."""
    if prompt_input(model) is None:
        given = settings.flags_given()
        flags = given or ([settings.trace.source] if settings.trace else ["--input-data"])
        raise SettingsError(f"{flags[0]}: model {model.name} takes no text prompt (no BYTES input)")
    if settings.output_tokens is not None and max_tokens_input(model) is None:
        raise SettingsError(
            f"--output-tokens: model {model.name} has no {MAX_TOKENS_INPUT!r} input to carry it"
        )
    if settings.trace is not None:
        if input_data is not None or settings.input_tokens is not None:
            flag = "--input-data" if input_data is not None else "--input-tokens"
            raise SettingsError(
                f"{flag}: not with {settings.trace.source}, whose rows give each prompt's length"
            )
        if settings.output_tokens is not None and settings.trace.output_tokens is not None:
            raise SettingsError(
                f"--output-tokens: not with {settings.trace.source}, whose rows give each "
                "answer's length"
            )
        return _from_trace(settings.trace, tokenizer, seed, settings)
    if settings.shared_prefix:
        raise SettingsError("--shared-prefix: needs a --trace whose rows carry hash_ids (Mooncake)")
    if input_data is not None:
        if settings.input_tokens is not None:
            raise SettingsError("--input-tokens: not with --input-data, whose prompts are given")
        return _from_file(input_data, settings, tokenizer, seed)
    if settings.input_format is not None:
        raise SettingsError("--input-format: only with --input-data")
    return _synthetic(settings, count, tokenizer, seed)


def _filled(spec: TensorSpec, like: np.ndarray, value: object) -> np.ndarray:
    tensor = np.empty(like.shape, dtype=spec.numpy_dtype)
    tensor[...] = value
    return tensor


def sent_max_tokens(model: ModelSpec, samples: list[Sample]) -> np.ndarray:
    """Each sample's max_tokens as sent (NO_LENGTH where the model has no such input)."""
    spec = max_tokens_input(model)
    if spec is None:
        return np.full(len(samples), NO_LENGTH, dtype=np.int64)
    return np.fromiter(
        (int(np.asarray(s[spec.name]).reshape(-1)[0]) for s in samples), np.int64, len(samples)
    )


def sent_ignore_eos(model: ModelSpec, samples: list[Sample]) -> np.ndarray:
    """Each sample's ignore_eos as sent (False where the model has no such input or the sample
    leaves it out): whether a short answer was the server's to avoid."""
    if not any(t.name == IGNORE_EOS_INPUT for t in model.inputs):
        return np.zeros(len(samples), dtype=bool)
    return np.fromiter(
        (
            IGNORE_EOS_INPUT in s and bool(np.asarray(s[IGNORE_EOS_INPUT]).reshape(-1)[0])
            for s in samples
        ),
        bool,
        len(samples),
    )


def _text_of(sample: Sample, spec: TensorSpec) -> str:
    first = np.asarray(sample[spec.name]).reshape(-1)[0]
    return first.decode("utf-8", "replace") if isinstance(first, bytes) else str(first)


@dataclass(frozen=True)
class PromptLibrary:
    """A text model's samples with what the report says of them: each sample's prompt tokens
    by `tokenizer` (the client's count), its max_tokens as sent (NO_LENGTH: none), and where the
    prompts came from."""

    samples: list[Sample]
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    tokenizer: str
    source: str


def build_prompts(
    model: ModelSpec,
    count: int,
    seed: int,
    settings: PromptSettings,
    input_data: Path | None,
    draw: Callable[[int], list[Sample]],
) -> PromptLibrary:
    """The library: `prompt_plan`'s prompts written into `draw(n)` samples (drawn as usual for
    the model's other inputs), each counted by the run's tokenizer."""
    tokenizer = tokenizer_for(settings.tokenizer)
    plan = prompt_plan(model, count, seed, settings, input_data, tokenizer)
    base = draw(len(plan) if plan.texts else count)
    text_spec = prompt_input(model)
    assert text_spec is not None, "prompt_plan checked it"
    tokens_spec = max_tokens_input(model)
    samples: list[Sample] = []
    for k, sample in enumerate(base):
        filled = dict(sample)
        if plan.texts:
            filled[text_spec.name] = _filled(
                text_spec, sample[text_spec.name], plan.texts[k].encode()
            )
        out = int(plan.output_tokens[k])
        if tokens_spec is not None and out != NO_LENGTH:
            filled[tokens_spec.name] = _filled(tokens_spec, sample[tokens_spec.name], out)
        samples.append(filled)
    inputs = plan.input_tokens
    if not plan.texts:  # the model's own drawn text: counted here, by the same tokenizer
        inputs = tokenizer.counts([_text_of(s, text_spec) for s in samples])
    return PromptLibrary(
        samples, inputs, sent_max_tokens(model, samples), plan.tokenizer, plan.source
    )
