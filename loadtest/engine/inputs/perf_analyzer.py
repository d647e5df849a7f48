"""perf_analyzer's `--input-data` JSON, so files made for perf_analyzer work unchanged.

The format (docs/input_data.md, from perf_analyzer's docs/input_data.md and
src/data_loader.cc): `{"data": [{"<input>": TENSOR, ...}, ...]}`, one entry per batch-1 request,
where TENSOR is
- a list of values, row-major (flattened; nested lists are flattened too), the model's shape;
- `{"b64": "..."}`: the raw little-endian row-major bytes, base64;
- `{"content": <list or {"b64": ...}>, "shape": [...]}`: with its own shape (without the batch
  dimension), for inputs with dynamic dimensions; "shape" is optional.
Without "shape" a tensor has the model's shape, --shape filling dynamic dimensions.
`"data"` may instead hold lists of entries (perf_analyzer's per-sequence streams): loadtest has no
sequence batching, so it takes the streams' entries one after another. `"validation_data"`
(expected outputs) is not read. A "model" key in an entry is allowed and ignored, as there.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.core.target import ModelSpec, TensorSpec
from loadtest.engine.inputs.checks import UserTensors, check_names, data_error, declared_shape

IGNORED_KEYS = ("model",)  # perf_analyzer allows it in an entry


def _entries(path: Path, document: Any) -> list[Mapping[str, Any]]:
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise data_error(path, 'is not perf_analyzer input data: want {"data": [{...}, ...]}')
    data = document["data"]
    if all(isinstance(e, list) for e in data) and data:
        data = [entry for stream in data for entry in stream]  # streams, one after another
    bad = [i for i, e in enumerate(data) if not isinstance(e, dict)]
    if bad:
        raise data_error(
            path,
            f'"data"[{bad[0]}] is not an object of input tensors (perf_analyzer does not mix '
            "objects and streams)",
        )
    return data


def _shape(path: Path, at: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise data_error(path, f'{at}: "shape" must be a list of non-negative integers')
    return tuple(value)


def _from_b64(path: Path, at: str, spec: TensorSpec, text: Any) -> np.ndarray:
    if not isinstance(text, str):
        raise data_error(path, f'{at}: the value of "b64" must be a string')
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise data_error(path, f"{at}: bad base64 ({exc})") from None
    if len(raw) % spec.numpy_dtype.itemsize:
        raise data_error(
            path,
            f"{at}: {len(raw)} bytes is not a whole number of {spec.numpy_dtype} values",
        )
    return np.frombuffer(raw, dtype=spec.numpy_dtype.newbyteorder("<")).astype(spec.numpy_dtype)


def _from_list(path: Path, at: str, spec: TensorSpec, values: list[Any]) -> np.ndarray:
    """JSON numbers -> the model's dtype, refusing what would change a value on the way."""
    dtype = spec.numpy_dtype
    try:
        array = np.asarray(values).ravel()
    except ValueError:
        raise data_error(path, f"{at}: ragged nested lists") from None
    if array.size == 0:
        return array.astype(dtype)
    kind = array.dtype.kind
    if kind not in "biuf":
        raise data_error(path, f"{at}: values must be numbers (found {array.dtype} values)")
    if dtype.kind == "b":
        if kind == "f" or not np.isin(array, (0, 1)).all():
            raise data_error(path, f"{at}: a BOOL input takes true/false or 0/1")
    elif dtype.kind in "iu":
        if kind == "f":
            raise data_error(path, f"{at}: the model wants {dtype}; found non-integer values")
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise data_error(path, f"{at}: values out of the range of {dtype}")
    return array.astype(dtype)


def _tensor(
    path: Path, at: str, spec: TensorSpec, value: Any, shapes: Mapping[str, tuple[int, ...]]
) -> np.ndarray:
    shape: tuple[int, ...] | None = None
    content = value
    if isinstance(value, dict):
        if "shape" in value:
            shape = _shape(path, at, value["shape"])
        if "b64" in value:
            content = value
        elif "content" in value:
            content = value["content"]
        else:
            raise data_error(path, f'{at}: an object tensor needs "content" or "b64"')
    if isinstance(content, dict) and "b64" in content:
        flat = _from_b64(path, at, spec, content["b64"])
    elif isinstance(content, list):
        flat = _from_list(path, at, spec, content)
    else:
        raise data_error(path, f'{at}: want a list of values, {{"b64": ...}} or {{"content": ...}}')
    if shape is None:
        shape = declared_shape(spec, shapes, path)
    if flat.size != int(np.prod(shape)):
        raise data_error(path, f"{at}: {flat.size} values do not fill shape {list(shape)}")
    return flat.reshape(shape)


def read_perf_analyzer_json(
    path: Path, model: ModelSpec, shapes: Mapping[str, tuple[int, ...]]
) -> UserTensors:
    try:
        document = json.loads(path.read_text())  # NaN/Infinity parse, as perf_analyzer's do
    except (OSError, UnicodeDecodeError) as exc:
        raise data_error(path, f"cannot read it: {exc}") from None
    except json.JSONDecodeError as exc:
        raise data_error(path, f"is not JSON: {exc}") from None
    entries = _entries(path, document)
    data: dict[str, list[np.ndarray]] = {t.name: [] for t in model.inputs}
    for index, entry in enumerate(entries):
        names = [k for k in entry if k not in IGNORED_KEYS]
        check_names(path, model, names, where=f'"data"[{index}] ')
        for spec in model.inputs:
            at = f'"data"[{index}] input {spec.name}'
            data[spec.name].append(_tensor(path, at, spec, entry[spec.name], shapes))
    return data
