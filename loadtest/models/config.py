"""config.pbtxt for the suite: built as tritonclient's ModelConfig message, written and read with
protobuf's text_format — the same schema and parser Triton uses, so no hand-written serializer
can drift from it.

Four kinds of config:
- `model_config(model)`: what config.pbtxt holds. `backend: "onnxruntime"`, KIND_CPU, dynamic
  batching, the ORT backend's `intra_op_thread_count` / `inter_op_thread_count` parameters, and
  one `loadtest.range.<input>` = "low,high" parameter per index input, and one
  `loadtest.image.<input>` = preset per image input (how --input-data pictures are normalised);
  the official backend ignores keys it does not know. The official Triton image serves it with
  its native ONNX Runtime backend; the embedded server with loadtest's Python-based backend of
  the same name.
- `model_config(model, gpu=True)`: configs/gpu.pbtxt, chosen by
  `tritonserver --model-config-name=gpu` (Triton falls back to config.pbtxt for models without
  one). KIND_GPU with the ORT backend's TensorRT execution accelerator at FP16.
- `decoupled_python_config(model)` (what `model_config` gives a `backend="python"` model): the
  streaming decoder, served by its own model.py (a side file), decoupled, unbatched.
- `tensorrt_plan_config(model, name)`: a `platform: "tensorrt_plan"` config for a plan built by
  trtexec from the suite's ONNX (see docker-compose.yml, profile `tensorrt`).
None of the GPU paths can run on the machines this was written on (no GPU, no Docker): they are
checked structurally only.

This module imports tritonclient only for the ModelConfig message.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from loadtest.engine.inputs.images import IMAGE_PARAMETER_PREFIX
from loadtest.errors import ModelBuildError
from loadtest.models.suite import SuiteModel, TensorDecl

RANGE_PREFIX = "loadtest.range."
IMAGE_PREFIX = IMAGE_PARAMETER_PREFIX  # how --input-data pictures are normalised for the input
TRT_WORKSPACE_BYTES = 1 << 30


def _tensor(message: mc.ModelInput | mc.ModelOutput, tensor: TensorDecl) -> None:
    message.name = tensor.name
    config_type = "STRING" if tensor.datatype == "BYTES" else tensor.datatype  # config's name
    message.data_type = mc.DataType.Value(f"TYPE_{config_type}")
    message.dims.extend(tensor.dims)
    if tensor.optional and isinstance(message, mc.ModelInput):
        message.optional = True


def _io(config: mc.ModelConfig, model: SuiteModel) -> None:
    for tensor in model.inputs:
        _tensor(config.input.add(), tensor)
    for tensor in model.outputs:
        _tensor(config.output.add(), tensor)
    for tensor in model.inputs:
        if tensor.value_range is not None:
            low, high = tensor.value_range
            config.parameters[RANGE_PREFIX + tensor.name].string_value = f"{low},{high}"
        if tensor.image_preset is not None:
            config.parameters[IMAGE_PREFIX + tensor.name].string_value = tensor.image_preset


def _threads(config: mc.ModelConfig, model: SuiteModel) -> None:
    config.parameters["intra_op_thread_count"].string_value = str(model.intra_op_threads)
    config.parameters["inter_op_thread_count"].string_value = str(model.inter_op_threads)


def decoupled_python_config(model: SuiteModel) -> mc.ModelConfig:
    """A streaming model served by its own model.py: one request per execution (no batching),
    decoupled (any number of responses per request, FINAL on the last), one CPU instance."""
    config = mc.ModelConfig(name=model.name, backend="python")
    config.max_batch_size = 0
    config.model_transaction_policy.decoupled = True
    _io(config, model)
    config.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)
    _threads(config, model)
    return config


def model_config(model: SuiteModel, gpu: bool = False) -> mc.ModelConfig:
    if model.backend == "python":
        if gpu:
            raise ModelBuildError(f"{model.name}: no GPU config (its model.py runs ORT on CPU)")
        return decoupled_python_config(model)
    config = mc.ModelConfig(name=model.name, backend="onnxruntime")
    config.max_batch_size = model.max_batch_size
    _io(config, model)
    config.dynamic_batching.max_queue_delay_microseconds = model.max_queue_delay_us
    kind = mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(count=1, kind=kind)
    _threads(config, model)
    if gpu:
        accelerators = config.optimization.execution_accelerators
        tensorrt = accelerators.gpu_execution_accelerator.add(name="tensorrt")
        tensorrt.parameters["precision_mode"] = "FP16"
        tensorrt.parameters["max_workspace_size_bytes"] = str(TRT_WORKSPACE_BYTES)
    return config


def tensorrt_plan_config(model: SuiteModel, name: str) -> mc.ModelConfig:
    """For `<name>/1/model.plan` built by trtexec from `model`'s ONNX (same tensors, FP32 I/O)."""
    config = mc.ModelConfig(name=name, platform="tensorrt_plan")
    config.max_batch_size = model.max_batch_size
    _io(config, model)
    config.dynamic_batching.max_queue_delay_microseconds = model.max_queue_delay_us
    config.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_GPU)
    return config


def format_config(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


def parse_config(text: str, source: str) -> mc.ModelConfig:
    """Parse config.pbtxt text; ModelBuildError names `source` and the parser's complaint."""
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ModelBuildError(f"{source} does not parse as a Triton ModelConfig: {exc}") from None
    return config


def read_config(path: Path) -> mc.ModelConfig:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelBuildError(f"cannot read {path}: {exc}") from None
    return parse_config(text, str(path))


def value_ranges(config: mc.ModelConfig) -> dict[str, tuple[int, int]]:
    """The `loadtest.range.<input>` parameters as {input: (low, high)}; ModelBuildError if bad."""
    ranges: dict[str, tuple[int, int]] = {}
    for key, parameter in config.parameters.items():
        if not key.startswith(RANGE_PREFIX):
            continue
        text = parameter.string_value
        try:
            low, high = (int(part) for part in text.split(","))
        except ValueError:
            raise ModelBuildError(
                f"{config.name}: parameter {key} = {text!r} is not 'low,high'"
            ) from None
        if low >= high:
            raise ModelBuildError(f"{config.name}: parameter {key} = {text!r} is an empty range")
        ranges[key[len(RANGE_PREFIX) :]] = (low, high)
    return ranges
