"""What every input-data form is checked against: the model's names, shapes, dtypes; finite values.

Each reader turns its files into `UserTensors` (input name -> one array per sample, *without* the
batch dimension) and `to_samples` checks them the same way whatever the form, so a wrong file is
the same one clear line (naming the file and the input) for an .npz, an .npy, a JSON or a picture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from loadtest.core.target import ModelSpec, Sample, TensorSpec
from loadtest.errors import SettingsError

UserTensors = Mapping[str, Sequence[np.ndarray]]  # input name -> one array per sample


def data_error(path: Path, message: str) -> SettingsError:
    """The one line a bad input file gives: the flag, the file, what is wrong."""
    return SettingsError(f"--input-data {path}: {message}")


def fits(spec: TensorSpec, shape: tuple[int, ...]) -> bool:
    """Whether a concrete shape fits the model's (-1 = any size)."""
    return len(shape) == len(spec.shape) and all(
        want in (-1, got) for want, got in zip(spec.shape, shape, strict=True)
    )


def declared_shape(
    spec: TensorSpec, shapes: Mapping[str, tuple[int, ...]], path: Path
) -> tuple[int, ...]:
    """The shape of one sample when the file does not say it: the model's, with --shape filling
    the dynamic (-1) dimensions; a dynamic dimension nobody sized is an error, not a guess."""
    shape = shapes.get(spec.name, spec.shape)
    if any(d < 0 for d in shape):
        raise data_error(
            path,
            f"input {spec.name} has dynamic shape {list(spec.shape)}: give --shape "
            f'{spec.name}:D1,D2,... (or a "shape" field in a JSON file)',
        )
    return tuple(shape)


def check_names(path: Path, model: ModelSpec, names: Sequence[str], where: str = "") -> None:
    """Every model input present, nothing that is not one (a typo would otherwise be ignored)."""
    wanted = [t.name for t in model.inputs]
    missing = [n for n in wanted if n not in names]
    if missing:
        raise data_error(path, f"{where}lacks input(s): {', '.join(missing)}")
    unknown = [n for n in names if n not in wanted]
    if unknown:
        raise data_error(
            path,
            f"{where}unknown input(s) {', '.join(unknown)}; model {model.name} has "
            f"{', '.join(wanted)}",
        )


def _check_tensor(path: Path, spec: TensorSpec, index: int, tensor: np.ndarray) -> None:
    at = f"input {spec.name}, sample {index}"
    if tensor.dtype != spec.numpy_dtype:
        raise data_error(path, f"{at} has dtype {tensor.dtype}, the model wants {spec.numpy_dtype}")
    if not fits(spec, tuple(tensor.shape)):
        raise data_error(
            path,
            f"{at} has shape {list(tensor.shape)}, the model wants {list(spec.shape)} "
            "(-1 = any size; the batch dimension excluded)",
        )
    if tensor.dtype.kind == "f" and not np.isfinite(tensor).all():
        raise data_error(path, f"{at} holds non-finite values (nan or inf)")


def _batched(model: ModelSpec, tensors: list[np.ndarray], path: Path, name: str) -> np.ndarray:
    if not model.max_batch_size:
        return tensors[0]
    if len({t.shape for t in tensors}) != 1:
        raise data_error(path, f"input {name}: samples stacked into one batch must have one shape")
    return np.stack(tensors)


def to_samples(
    path: Path, model: ModelSpec, data: UserTensors, batch_size: int = 1
) -> list[Sample]:
    """Checked samples; with batch size B each request stacks B consecutive user samples
    (wrapping around), so a batched run sends the user's data, never padding."""
    check_names(path, model, list(data))
    counts = {len(data[t.name]) for t in model.inputs}
    if len(counts) != 1:
        raise data_error(
            path,
            "inputs hold different numbers of samples ("
            + ", ".join(f"{t.name}: {len(data[t.name])}" for t in model.inputs)
            + ")",
        )
    count = counts.pop()
    if count == 0:
        raise data_error(path, "holds no samples")
    for spec in model.inputs:
        for index, tensor in enumerate(data[spec.name]):
            _check_tensor(path, spec, index, tensor)
    samples: list[Sample] = []
    for first in range(count):
        picks = [(first + k) % count for k in range(batch_size)]
        samples.append(
            {
                spec.name: np.ascontiguousarray(
                    _batched(model, [data[spec.name][i] for i in picks], path, spec.name)
                )
                for spec in model.inputs
            }
        )
    return samples
