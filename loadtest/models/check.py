"""Checks a model repository before a server is started on it, so a bad model fails early with
one clear line instead of deep in Triton's log.

`check_repository` returns problems as lines ("resnet50: 1/model.onnx is missing ..."), empty
when all is well. Per model directory it checks that config.pbtxt (and each configs/*.pbtxt)
parses as a Triton ModelConfig and names its directory, that `loadtest.range.*` parameters are
well formed, that a numeric version directory exists, and for ONNX models that the model file
exists, is the size its build stamp records, parses (its graph only: the weights are skipped,
see onnx_io), and declares the config's inputs and outputs (names, dtypes, dims; with
max_batch_size > 0 the ONNX tensors carry one extra leading batch dimension). TensorRT plans are
checked for presence only, and so are the suite decoder's model.onnx and side files (its config
describes model.py's text interface, not the graph's tensors).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx
from onnx import TensorProto
from tritonclient.grpc import model_config_pb2 as mc

from loadtest.errors import ModelBuildError
from loadtest.models.build import MODEL_FILE, STAMP_FILE, read_stamp
from loadtest.models.config import read_config, value_ranges
from loadtest.models.onnx_io import scan_model
from loadtest.models.suite import SUITE

# ONNX element type -> Triton config data type name
ONNX_TO_TRITON = {
    TensorProto.FLOAT: "TYPE_FP32",
    TensorProto.FLOAT16: "TYPE_FP16",
    TensorProto.DOUBLE: "TYPE_FP64",
    TensorProto.BFLOAT16: "TYPE_BF16",
    TensorProto.INT8: "TYPE_INT8",
    TensorProto.INT16: "TYPE_INT16",
    TensorProto.INT32: "TYPE_INT32",
    TensorProto.INT64: "TYPE_INT64",
    TensorProto.UINT8: "TYPE_UINT8",
    TensorProto.UINT16: "TYPE_UINT16",
    TensorProto.UINT32: "TYPE_UINT32",
    TensorProto.UINT64: "TYPE_UINT64",
    TensorProto.BOOL: "TYPE_BOOL",
    TensorProto.STRING: "TYPE_STRING",
}
ONNX_BACKENDS = {"onnxruntime"}
ONNX_PLATFORMS = {"onnxruntime_onnx"}


def onnx_signature(model: onnx.ModelProto) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{name: (Triton data type, shape with -1 for symbolic dims)} of graph inputs and outputs."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    signature: dict[str, tuple[str, tuple[int, ...]]] = {}
    for value in [*model.graph.input, *model.graph.output]:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
        datatype = ONNX_TO_TRITON.get(tensor_type.elem_type, f"ONNX type {tensor_type.elem_type}")
        signature[value.name] = (datatype, dims)
    return signature


def compare_io(config: mc.ModelConfig, model: onnx.ModelProto, label: str) -> list[str]:
    problems: list[str] = []
    signature = onnx_signature(model)
    batch = (-1,) if config.max_batch_size > 0 else ()
    declared = [*config.input, *config.output]
    graph_inputs = {v.name for v in model.graph.input} - {i.name for i in model.graph.initializer}
    for missing in sorted(graph_inputs - {t.name for t in config.input}):
        problems.append(f"{label}: ONNX input {missing!r} is not declared in the config")
    for tensor in declared:
        if tensor.name not in signature:
            problems.append(f"{label}: {tensor.name!r} is not an input or output of the ONNX model")
            continue
        datatype, shape = signature[tensor.name]
        want_type = mc.DataType.Name(tensor.data_type)
        if datatype != want_type:
            problems.append(
                f"{label}: {tensor.name!r} is {datatype} in ONNX, {want_type} in the config"
            )
        want = batch + tuple(tensor.dims)
        fits = len(want) == len(shape) and all(
            w == -1 or s == -1 or w == s for w, s in zip(want, shape, strict=True)
        )
        if not fits:
            problems.append(
                f"{label}: {tensor.name!r} has shape {list(shape)} in ONNX, "
                f"config says {list(want)} (batch dim included)"
            )
    return problems


def _load_onnx(path: Path, name: str, version: str) -> tuple[onnx.ModelProto | None, list[str]]:
    where = f"{name}: {version}/{path.name}"
    stamp = read_stamp(path.parent)
    if path.name == MODEL_FILE and stamp is not None and stamp.get("bytes") != path.stat().st_size:
        return None, [
            f"{where} does not match its build stamp {STAMP_FILE} (corrupt or modified; "
            f"rebuild with `loadtest models build --model {name} --force`)"
        ]
    try:
        return scan_model(str(path)), []
    except Exception as exc:  # ScanError, protobuf's DecodeError, OSError
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, [f"{where} is not a readable ONNX model (corrupt?): {cause}"]


def _hint(name: str) -> str:
    return f" (run `loadtest models build --model {name}`)" if name in SUITE else ""


def _configs(model_dir: Path) -> list[tuple[str, Path]]:
    found = [("config.pbtxt", model_dir / "config.pbtxt")]
    custom = model_dir / "configs"
    if custom.is_dir():
        found += [(f"configs/{p.name}", p) for p in sorted(custom.glob("*.pbtxt"))]
    return found


def check_model(model_dir: Path) -> list[str]:
    """Problems of one model directory (see the module docstring)."""
    name = model_dir.name
    if not model_dir.is_dir():
        return [f"{name}: no such model directory {model_dir}"]
    if not (model_dir / "config.pbtxt").is_file():
        return [f"{name}: {model_dir}/config.pbtxt is missing"]
    problems: list[str] = []
    configs: list[tuple[str, mc.ModelConfig]] = []
    for label, path in _configs(model_dir):
        try:
            config = read_config(path)
            value_ranges(config)
        except ModelBuildError as exc:
            problems.append(f"{name}: {label}: {exc}")
            continue
        if config.name and config.name != name:
            problems.append(f"{name}: {label} names the model {config.name!r}, not {name!r}")
        configs.append((label, config))
    versions = sorted(p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if not versions and name in SUITE:
        return [*problems, f"{name}: not built, 1/model.onnx is missing{_hint(name)}"]
    if not versions:
        return [*problems, f"{name}: no numeric version directory (e.g. {name}/1/)"]
    if not configs or configs[0][0] != "config.pbtxt":
        return problems
    main = configs[0][1]
    side_files = SUITE[name].side_files if name in SUITE else None
    if side_files is not None:  # the decoder: model.py runs the graph (its I/O is not the config's)
        return problems + [
            f"{name}: {version_dir.name}/{filename} is missing{_hint(name)}"
            for version_dir in versions
            for filename in (MODEL_FILE, *side_files.names)
            if not (version_dir / filename).is_file()
        ]
    is_onnx = main.backend in ONNX_BACKENDS or main.platform in ONNX_PLATFORMS
    filename = main.default_model_filename or ("model.onnx" if is_onnx else "")
    if main.platform == "tensorrt_plan":
        filename = main.default_model_filename or "model.plan"
    if not filename:
        return problems
    for version_dir in versions:
        path = version_dir / filename
        if not path.is_file():
            problems.append(f"{name}: {version_dir.name}/{filename} is missing{_hint(name)}")
            continue
        if not is_onnx:
            continue
        model, load_problems = _load_onnx(path, name, version_dir.name)
        problems += load_problems
        if model is not None:
            for label, config in configs:
                problems += compare_io(config, model, f"{name}: {label}")
    return problems


def check_repository(repository: Path, names: Sequence[str] | None = None) -> list[str]:
    """Problems that would stop Triton loading `names` (default: every model directory)."""
    if not repository.is_dir():
        return [f"model repository {repository} does not exist or is not a directory"]
    if names is None:
        dirs = sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith("."))
    else:
        dirs = [repository / name for name in names]
    problems: list[str] = []
    for model_dir in dirs:
        problems += check_model(model_dir)
    return problems
