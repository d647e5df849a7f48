"""--input-data: the user's own inputs, in the forms users already have them.

The form is told from the path, never from a flag:
- a file: `.npz` (numpy.savez; any zip archive), `.json` (perf_analyzer's input data), `.npy`
  (one input's samples), a picture (.jpg, .png, ...);
- a directory of `<input>.npy` files; of sample subdirectories of `<input>.npy` files; of
  pictures; or of files named exactly like the inputs (perf_analyzer's raw binary directory).
Whatever the form, the samples are checked the same way (`checks.to_samples`).
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

from loadtest.core.target import ModelSpec, Sample
from loadtest.engine.inputs.checks import UserTensors, data_error, to_samples
from loadtest.engine.inputs.images import is_image_file, read_images
from loadtest.engine.inputs.npy import (
    read_npy_files,
    read_raw_dir,
    read_sample_dirs,
    read_single_npy,
)
from loadtest.engine.inputs.npz import read_npz
from loadtest.engine.inputs.perf_analyzer import read_perf_analyzer_json

FORMS = (
    ".npz, perf_analyzer .json, .npy, a picture, or a directory of <input>.npy files, of "
    "sample subdirectories, of pictures, or of raw <input> files"
)


def _read_file(path: Path, model: ModelSpec, shapes: Mapping[str, tuple[int, ...]]) -> UserTensors:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return read_perf_analyzer_json(path, model, shapes)
    if suffix == ".npy":
        return read_single_npy(path, model)
    if is_image_file(path):
        return read_images(path, model, [path], shapes)
    if suffix == ".npz" or zipfile.is_zipfile(path):
        return read_npz(path, model)
    raise data_error(path, f"is not an .npz archive nor another known form ({FORMS})")


def _read_dir(path: Path, model: ModelSpec, shapes: Mapping[str, tuple[int, ...]]) -> UserTensors:
    entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    npys = {p.stem: p for p in entries if p.is_file() and p.suffix.lower() == ".npy"}
    images = [p for p in entries if is_image_file(p)]
    dirs = [p for p in entries if p.is_dir()]
    io_names = {t.name for t in model.inputs} | {t.name for t in model.outputs}
    raw = {p.name: p for p in entries if p.is_file() and p.name in io_names}
    forms = [name for name, found in (("npy", npys), ("pictures", images), ("raw", raw)) if found]
    if len(forms) > 1:
        raise data_error(path, f"mixes {' and '.join(forms)} files; keep one form per directory")
    if npys:
        return read_npy_files(path, model, npys)
    if images:
        return read_images(path, model, images, shapes)
    if raw:
        inputs = {name: p for name, p in raw.items() if name in {t.name for t in model.inputs}}
        return read_raw_dir(path, model, inputs, shapes)
    if dirs:
        return read_sample_dirs(path, model, dirs)
    raise data_error(path, f"holds none of the known forms ({FORMS})")


def load_input_data(
    path: Path,
    model: ModelSpec,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    batch_size: int = 1,
) -> list[Sample]:
    """Checked samples from `path`; SettingsError (one line, exit 1) for anything wrong."""
    shapes = shapes or {}
    try:
        if path.is_dir():
            data = _read_dir(path, model, shapes)
        elif path.is_file():
            data = _read_file(path, model, shapes)
        else:
            raise data_error(path, "no such file or directory")
    except PermissionError as exc:
        raise data_error(path, f"cannot read it: {exc}") from None
    return to_samples(path, model, data, batch_size)
