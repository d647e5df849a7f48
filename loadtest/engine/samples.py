"""The sample library: real input tensors, built once before a run and referenced by index.

Inputs come from the model's own metadata (names, dtypes, shapes) or from data the user gives
(--input-data: .npz, .npy, perf_analyzer JSON or pictures, read and checked by
`engine.inputs`). Random data follows the model's declared value ranges: the suite's configs
carry `loadtest.range.<input>` = "low,high" parameters, because an index tensor (BERT token
ids, DLRM sparse features) with out-of-range values is rejected by the model, not merely slow.
Dynamic dimensions (-1) need a size: `shapes` overrides, else 1.

A BYTES input (a text prompt) gets seeded random text instead: lowercase words, each element of
its own length drawn from the same `loadtest.range.<input>` parameter read as "shortest,longest"
characters (else DEFAULT_TEXT_LENGTHS), so the library holds prompts of different lengths as a
real one would; `core.target.prompt_length` gives each sample's, and `prompt_lengths` the whole
library's, indexed like the records' sample_index. Prompts shaped by the prompt flags (token
lengths, a prompts file, a trace's lengths; core/prompts.PromptSettings) are engine/prompts/'s:
`prompt_library` builds them on samples drawn here for the model's other inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from loadtest.core.prompts import PromptSettings
from loadtest.core.target import ModelSpec, Sample, Target, TensorSpec, prompt_length
from loadtest.engine.inputs import load_input_data
from loadtest.engine.prompts.library import PromptLibrary, build_prompts, prompt_input
from loadtest.errors import SettingsError

RANGE_PARAMETER_PREFIX = "loadtest.range."
DEFAULT_VALUE_RANGE = (0, 2)  # integers in [low, high)
DEFAULT_TEXT_LENGTHS = (16, 256)  # characters per BYTES element, shortest and longest
TEXT_ALPHABET = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz     ", dtype=np.uint8)  # ~1 in 6 a space


def _concrete_shape(spec: TensorSpec, override: tuple[int, ...] | None) -> tuple[int, ...]:
    if override is not None:
        if len(override) != len(spec.shape) or any(
            want not in (-1, got) for want, got in zip(spec.shape, override, strict=True)
        ):
            raise SettingsError(
                f"--shape {spec.name}:{','.join(map(str, override))} does not fit the model's "
                f"shape {list(spec.shape)}"
            )
        return override
    return tuple(1 if d < 0 else d for d in spec.shape)


def _value_range(spec: TensorSpec, parameters: Mapping[str, str]) -> tuple[int, int]:
    text = parameters.get(RANGE_PARAMETER_PREFIX + spec.name)
    if text is None:
        return DEFAULT_TEXT_LENGTHS if spec.datatype == "BYTES" else DEFAULT_VALUE_RANGE
    try:
        low, high = (int(v) for v in text.split(","))
    except ValueError:
        raise SettingsError(
            f"model parameter {RANGE_PARAMETER_PREFIX + spec.name}={text!r} is not 'low,high'"
        ) from None
    if spec.datatype == "BYTES" and not 0 <= low <= high:
        raise SettingsError(
            f"model parameter {RANGE_PARAMETER_PREFIX + spec.name}={text!r}: text lengths need "
            "0 ≤ shortest ≤ longest"
        )
    return low, high


def _random_text(
    shape: tuple[int, ...], lengths: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """A BYTES tensor: each element seeded random text of its own length in [shortest, longest]."""
    tensor = np.empty(shape, dtype=object)
    shortest, longest = lengths
    for index in np.ndindex(*shape):
        length = int(rng.integers(shortest, longest + 1))
        tensor[index] = TEXT_ALPHABET[rng.integers(0, len(TEXT_ALPHABET), length)].tobytes()
    return tensor


def _random_tensor(
    spec: TensorSpec, shape: tuple[int, ...], value_range: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    dtype = spec.numpy_dtype
    if spec.datatype == "BYTES":
        return _random_text(shape, value_range, rng)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":  # its range, if the model states one ("1,2" = always true), in [0, 2)
        low, high = max(0, value_range[0]), min(2, value_range[1])
        return rng.integers(low, high, size=shape).astype(bool)
    low, high = value_range
    return rng.integers(low, high, size=shape).astype(dtype)


def _check_shapes(model: ModelSpec, shapes: Mapping[str, tuple[int, ...]]) -> None:
    unknown = set(shapes) - {t.name for t in model.inputs}
    if unknown:
        raise SettingsError(f"--shape names unknown input(s): {', '.join(sorted(unknown))}")
    for spec in model.inputs:
        if spec.name in shapes:
            _concrete_shape(spec, shapes[spec.name])


def _check_batch_size(model: ModelSpec, batch_size: int) -> None:
    if model.max_batch_size == 0 and batch_size != 1:
        raise SettingsError(f"model {model.name} does not batch; batch size must be 1")
    if model.max_batch_size and batch_size > model.max_batch_size:
        raise SettingsError(
            f"batch size {batch_size} exceeds model {model.name}'s max_batch_size "
            f"{model.max_batch_size}"
        )


def random_samples(
    model: ModelSpec,
    count: int,
    seed: int = 0,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    batch_size: int = 1,
) -> list[Sample]:
    """`count` seeded random samples; each tensor has a leading batch dim when the model batches."""
    shapes = shapes or {}
    _check_shapes(model, shapes)
    _check_batch_size(model, batch_size)
    rng = np.random.Generator(np.random.PCG64(seed))
    plan = []
    for spec in model.inputs:
        shape = _concrete_shape(spec, shapes.get(spec.name))
        if model.max_batch_size:
            shape = (batch_size, *shape)
        plan.append((spec, shape, _value_range(spec, model.parameters)))
    return [
        {spec.name: _random_tensor(spec, shape, vr, rng) for spec, shape, vr in plan}
        for _ in range(count)
    ]


def load_samples(
    path: Path,
    model: ModelSpec,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    batch_size: int = 1,
) -> list[Sample]:
    """User-given data in any form `engine.inputs` reads (.npz, .npy, perf_analyzer JSON,
    pictures); a text model's prompts file is `prompt_library`'s, and other BYTES inputs are
    refused."""
    text = [spec.name for spec in model.inputs if spec.datatype == "BYTES"]
    if text:
        raise SettingsError(
            f"--input-data cannot fill BYTES input(s) {', '.join(text)}: a prompts file fills a "
            "model's 'text_input' (or its only BYTES input); drop --input-data and loadtest "
            "generates text"
        )
    _check_shapes(model, shapes or {})
    _check_batch_size(model, batch_size)
    return load_input_data(path, model, shapes, batch_size)


def prompt_library(
    model: ModelSpec,
    sample_count: int,
    sample_seed: int,
    input_data: Path | None = None,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    batch_size: int = 1,
    prompts: PromptSettings | None = None,
) -> PromptLibrary | None:
    """A text model's shaped prompts (prompt flags, a trace's lengths, or a prompts file as
    --input-data), with their token counts; None when nothing shapes them."""
    prompts = prompts or PromptSettings()
    if not prompts.given and (input_data is None or prompt_input(model) is None):
        return None
    return build_prompts(
        model,
        sample_count,
        sample_seed,
        prompts,
        input_data,
        lambda count: random_samples(model, count, sample_seed, shapes, batch_size),
    )


def sample_library(
    model: ModelSpec,
    sample_count: int,
    sample_seed: int,
    input_data: Path | None = None,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    batch_size: int = 1,
    prompts: PromptSettings | None = None,
) -> list[Sample]:
    """A text model's shaped prompts (`prompt_library`), else the user's samples (--input-data)
    when given, else `sample_count` seeded random ones."""
    shaped = prompt_library(
        model, sample_count, sample_seed, input_data, shapes, batch_size, prompts
    )
    if shaped is not None:
        return shaped.samples
    if input_data is not None:
        return load_samples(input_data, model, shapes, batch_size)
    return random_samples(model, sample_count, sample_seed, shapes, batch_size)


def prompt_lengths(samples: list[Sample]) -> np.ndarray:
    """Each sample's own input length (core.target.prompt_length), indexed like sample_index."""
    return np.array([prompt_length(sample) for sample in samples], dtype=np.int64)


async def open_with_samples(
    target: Target,
    sample_count: int,
    sample_seed: int,
    input_data: Path | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
    batch_size: int = 1,
    prompts: PromptSettings | None = None,
) -> tuple[ModelSpec, list[Sample]]:
    """Open the target and prepare the sample library on it (raises TargetError/SettingsError)."""
    model = await target.open()
    samples = sample_library(
        model, sample_count, sample_seed, input_data, shapes, batch_size, prompts
    )
    await target.prepare(samples)
    return model, samples
