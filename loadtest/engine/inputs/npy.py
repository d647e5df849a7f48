"""Per-input array files: `.npy` (numpy.save) and perf_analyzer's raw binary files.

Conventions (README, "Real inputs"):
- `DIR/<input>.npy`, one file per input: each array is one sample (the model's shape) or a stack
  of samples along axis 0 (one more dimension than the model's shape).
- `DIR/<sample>/<input>.npy`: one subdirectory per sample (taken in name order), each file one
  sample.
- one `.npy` file: for a model with one input (any file name), as the first convention.
- `DIR/<input>` with no suffix: perf_analyzer's directory form, the raw row-major bytes of one
  batch-1 sample in the model's dtype; one sample. Files named like a model output are
  perf_analyzer's expected outputs and are skipped (loadtest does not check outputs from them).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from loadtest.core.target import ModelSpec, TensorSpec
from loadtest.engine.inputs.checks import UserTensors, check_names, data_error, declared_shape

NPY_MAGIC = b"\x93NUMPY"


def load_npy(path: Path) -> np.ndarray:
    """One .npy array; anything else (a pickle, a truncated file) is one clear line."""
    try:
        with path.open("rb") as f:
            if f.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise data_error(path, "is not an .npy file (as written by numpy.save)")
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise data_error(path, f"cannot read it: {exc}") from None
    if not isinstance(array, np.ndarray):
        raise data_error(path, "is not an .npy array")
    return array


def _samples_of(path: Path, spec: TensorSpec, array: np.ndarray) -> list[np.ndarray]:
    """One sample (the model's rank) or a stack of them (one more dimension)."""
    rank = len(spec.shape)
    if array.ndim == rank:
        return [array]
    if array.ndim == rank + 1:
        return list(array)
    raise data_error(
        path,
        f"input {spec.name} has shape {list(array.shape)}: want one sample {list(spec.shape)} "
        f"or a stack of them [N, {', '.join(map(str, spec.shape))}] (-1 = any size)",
    )


def read_npy_files(where: Path, model: ModelSpec, files: Mapping[str, Path]) -> UserTensors:
    """`files` maps each input name to its .npy file."""
    check_names(where, model, list(files))
    return {t.name: _samples_of(files[t.name], t, load_npy(files[t.name])) for t in model.inputs}


def read_single_npy(path: Path, model: ModelSpec) -> UserTensors:
    names = [t.name for t in model.inputs]
    if len(names) == 1:
        return read_npy_files(path, model, {names[0]: path})
    if path.stem in names:
        return read_npy_files(path, model, {path.stem: path})  # reports the missing inputs
    raise data_error(
        path,
        f"one .npy file is for a model with one input; model {model.name} has "
        f"{', '.join(names)}: give a directory with one <input>.npy each",
    )


def read_sample_dirs(path: Path, model: ModelSpec, dirs: list[Path]) -> UserTensors:
    """DIR/<sample>/<input>.npy, one sample per subdirectory, in name order."""
    data: dict[str, list[np.ndarray]] = {t.name: [] for t in model.inputs}
    for sample_dir in dirs:
        files = {f.stem: f for f in sample_dir.glob("*.npy")}
        check_names(path, model, list(files), where=f"sample {sample_dir.name}/ ")
        for spec in model.inputs:
            array = load_npy(files[spec.name])
            if array.ndim != len(spec.shape):
                raise data_error(
                    files[spec.name],
                    f"input {spec.name} has shape {list(array.shape)}: a sample directory holds "
                    f"one sample, shape {list(spec.shape)}",
                )
            data[spec.name].append(array)
    return data


def read_raw_dir(
    path: Path, model: ModelSpec, files: Mapping[str, Path], shapes: Mapping[str, tuple[int, ...]]
) -> UserTensors:
    """perf_analyzer's directory form: DIR/<input> holds one sample's raw little-endian bytes."""
    check_names(path, model, list(files))
    data: dict[str, list[np.ndarray]] = {}
    for spec in model.inputs:
        shape = declared_shape(spec, shapes, path)
        raw = files[spec.name].read_bytes()
        want = int(np.prod(shape)) * spec.numpy_dtype.itemsize
        if len(raw) != want:
            raise data_error(
                files[spec.name],
                f"input {spec.name} holds {len(raw)} bytes; shape {list(shape)} of "
                f"{spec.numpy_dtype} is {want} bytes",
            )
        little = np.frombuffer(raw, dtype=spec.numpy_dtype.newbyteorder("<"))
        data[spec.name] = [little.astype(spec.numpy_dtype).reshape(shape)]
    return data
