"""The sample library: real input tensors, built once before a run and referenced by index.

Inputs come from the model's own metadata (names, dtypes, shapes) or from data the user gives
(`.npz`, one array per input name, first axis = sample). Random data follows the model's declared
value ranges: the suite's configs carry `loadtest.range.<input>` = "low,high" parameters, because an
index tensor (BERT token ids, DLRM sparse features) with out-of-range values is rejected by the
model, not merely slow. Dynamic dimensions (-1) need a size: `shapes` overrides, else 1.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from loadtest.core.target import ModelSpec, Sample, Target, TensorSpec
from loadtest.errors import SettingsError

RANGE_PARAMETER_PREFIX = "loadtest.range."


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
        return (0, 2)
    try:
        low, high = (int(v) for v in text.split(","))
    except ValueError:
        raise SettingsError(
            f"model parameter {RANGE_PARAMETER_PREFIX + spec.name}={text!r} is not 'low,high'"
        ) from None
    return low, high


def _random_tensor(
    spec: TensorSpec, shape: tuple[int, ...], value_range: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    dtype = spec.numpy_dtype
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    low, high = value_range
    return rng.integers(low, high, size=shape).astype(dtype)


def random_samples(
    model: ModelSpec,
    count: int,
    seed: int = 0,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    batch_size: int = 1,
) -> list[Sample]:
    """`count` seeded random samples; each tensor has a leading batch dim when the model batches."""
    shapes = shapes or {}
    unknown = set(shapes) - {t.name for t in model.inputs}
    if unknown:
        raise SettingsError(f"--shape names unknown input(s): {', '.join(sorted(unknown))}")
    if model.max_batch_size == 0 and batch_size != 1:
        raise SettingsError(f"model {model.name} does not batch; batch size must be 1")
    if model.max_batch_size and batch_size > model.max_batch_size:
        raise SettingsError(
            f"batch size {batch_size} exceeds model {model.name}'s max_batch_size "
            f"{model.max_batch_size}"
        )
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


def load_samples(path: Path, model: ModelSpec) -> list[Sample]:
    """User-given data: an .npz with one array per input name, first axis = sample."""
    if not path.is_file():
        raise SettingsError(f"--input-data {path}: no such file")
    if not zipfile.is_zipfile(path):  # np.load would call anything else "pickled data"
        raise SettingsError(
            f"--input-data {path} is not an .npz archive (one array per input name, axis 0 = "
            "sample, as written by numpy.savez)"
        )
    try:
        with np.load(path) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise SettingsError(f"cannot read --input-data {path}: {exc}") from None
    names = [t.name for t in model.inputs]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise SettingsError(f"--input-data {path} lacks input(s): {', '.join(missing)}")
    scalars = [n for n in names if arrays[n].ndim == 0]
    if scalars:
        raise SettingsError(
            f"--input-data {path}: input(s) {', '.join(scalars)} hold a single value (a 0-d "
            "array); axis 0 must index the samples"
        )
    counts = {len(arrays[n]) for n in names}
    if len(counts) != 1:
        raise SettingsError(f"--input-data {path}: inputs hold different numbers of samples")
    count = counts.pop()
    if count == 0:
        raise SettingsError(f"--input-data {path} holds no samples")
    for spec in model.inputs:
        if arrays[spec.name].dtype != spec.numpy_dtype:
            raise SettingsError(
                f"--input-data {path}: input {spec.name} has dtype {arrays[spec.name].dtype}, "
                f"the model wants {spec.numpy_dtype}"
            )
    samples: list[Sample] = []
    for i in range(count):
        sample = {}
        for spec in model.inputs:
            tensor = np.ascontiguousarray(arrays[spec.name][i])
            sample[spec.name] = tensor[np.newaxis] if model.max_batch_size else tensor
        samples.append(sample)
    return samples


def sample_library(
    model: ModelSpec,
    sample_count: int,
    sample_seed: int,
    input_data: Path | None = None,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    batch_size: int = 1,
) -> list[Sample]:
    """The user's samples (--input-data) when given, else `sample_count` seeded random ones."""
    if input_data is not None:
        return load_samples(input_data, model)
    return random_samples(model, sample_count, sample_seed, shapes, batch_size)


async def open_with_samples(
    target: Target,
    sample_count: int,
    sample_seed: int,
    input_data: Path | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
    batch_size: int = 1,
) -> tuple[ModelSpec, list[Sample]]:
    """Open the target and prepare the sample library on it (raises TargetError/SettingsError)."""
    model = await target.open()
    samples = sample_library(model, sample_count, sample_seed, input_data, shapes, batch_size)
    await target.prepare(samples)
    return model, samples
