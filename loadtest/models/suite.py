"""The benchmark suite: what each model is, how it is served, and the latency bound it is held to.

One frozen `SuiteModel` per model, gathered in the read-only `SUITE` mapping (a constant, not a
registry: nothing adds to it at run time). Everything the rest of the package needs about a
model comes from here — the generator, the tensors (with the value range of integer inputs,
which a load generator needs to make valid requests), the Triton serving settings, and the MLPerf
Server latency bound (target latency at a percentile; mlperf.conf: resnet50 15 ms, bert 130 ms,
dlrm-v2 60 ms, all at the 99th percentile).

Default build (`loadtest models build`): tiny, resnet50, bert_l4_h256, dlrm_small — about 350 MB
together. bert_large (1.3 GB) is built only when named or with `--all`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import onnx

from loadtest.core.units import NS_PER_MS
from loadtest.models import bert, dlrm, resnet50, tiny

MLPERF_SERVER_PERCENTILE = 0.99

# `loadtest server` with no --model/--qps: the tiny MLP at a rate any laptop sustains, so the
# default run measures the client and the server, and passes its bound (ours, 10 ms p99).
DEFAULT_SERVER_MODEL = "tiny"
DEFAULT_SERVER_QPS = 100.0


@dataclass(frozen=True)
class TensorDecl:
    """One model input or output. `dims` exclude the batch dimension (as config.pbtxt has them).

    `value_range` = [low, high) for integer inputs that index something (token ids, embedding
    rows): values outside it are errors, not merely slow, so configs state it.
    """

    name: str
    datatype: str  # Triton name without TYPE_: "FP32", "INT64"
    dims: tuple[int, ...]
    value_range: tuple[int, int] | None = None


@dataclass(frozen=True)
class SuiteModel:
    name: str
    description: str
    generate: Callable[[int], onnx.ModelProto]  # seed -> model
    inputs: tuple[TensorDecl, ...]
    outputs: tuple[TensorDecl, ...]
    target_latency_ns: int
    latency_source: str  # whose bound: MLPerf's (the full-size model's, for scaled ones) or ours
    default_build: bool = True
    percentile: float = MLPERF_SERVER_PERCENTILE
    max_batch_size: int = 8
    max_queue_delay_us: int = 1000
    intra_op_threads: int = 0  # 0 = onnxruntime's default (one per core)
    inter_op_threads: int = 1
    gpu_config: bool = True  # also write configs/gpu.pbtxt (KIND_GPU + TensorRT accelerator)
    approx_bytes: int = 0  # size of model.onnx, for the listing before it is built


_BERT_INPUTS = (
    TensorDecl("input_ids", "INT64", (384,), (0, 30522)),
    TensorDecl("attention_mask", "INT64", (384,), (0, 2)),
    TensorDecl("token_type_ids", "INT64", (384,), (0, 2)),
)
_BERT_OUTPUTS = (
    TensorDecl("start_logits", "FP32", (384,)),
    TensorDecl("end_logits", "FP32", (384,)),
)

_MODELS = (
    SuiteModel(
        name="tiny",
        description="MLP 16-64-16: measures the client, protocol and server, not a model",
        generate=tiny.build,
        inputs=(TensorDecl("INPUT0", "FP32", (16,)),),
        outputs=(TensorDecl("OUTPUT0", "FP32", (16,)),),
        target_latency_ns=10 * NS_PER_MS,
        latency_source="loadtest",
        max_batch_size=64,
        max_queue_delay_us=100,
        intra_op_threads=1,
        gpu_config=False,
        approx_bytes=9_000,
    ),
    SuiteModel(
        name="resnet50",
        description="ResNet-50 v1.5, BN folded, 25.5 M params, 4.1 GMAC/image (faithful)",
        generate=resnet50.build,
        inputs=(TensorDecl("input", "FP32", (3, 224, 224)),),
        outputs=(TensorDecl("logits", "FP32", (1000,)),),
        target_latency_ns=15 * NS_PER_MS,
        latency_source="MLPerf",
        max_batch_size=32,
        approx_bytes=102_000_000,
    ),
    SuiteModel(
        name="bert_l4_h256",
        description="BERT SQuAD seq 384 scaled to 4 layers, hidden 256, 4 heads, 11 M params",
        generate=functools.partial(bert.build, shape=bert.BERT_L4_H256, name="bert_l4_h256"),
        inputs=_BERT_INPUTS,
        outputs=_BERT_OUTPUTS,
        target_latency_ns=130 * NS_PER_MS,
        latency_source="MLPerf bert",
        max_batch_size=8,
        max_queue_delay_us=2000,
        approx_bytes=44_000_000,
    ),
    SuiteModel(
        name="bert_large",
        description="BERT-large SQuAD seq 384: 24 layers, hidden 1024, 334 M params (faithful)",
        generate=functools.partial(bert.build, shape=bert.BERT_LARGE, name="bert_large"),
        inputs=_BERT_INPUTS,
        outputs=_BERT_OUTPUTS,
        target_latency_ns=130 * NS_PER_MS,
        latency_source="MLPerf",
        default_build=False,
        max_batch_size=8,
        max_queue_delay_us=2000,
        approx_bytes=1_336_000_000,
    ),
    SuiteModel(
        name="dlrm_small",
        description="DLRM-v2 (DCNv2) with 26 tables scaled to 10 000 rows each, 49 M params",
        generate=functools.partial(dlrm.build, shape=dlrm.DLRM_SMALL, name="dlrm_small"),
        inputs=(
            TensorDecl("dense_features", "FP32", (13,)),
            TensorDecl("sparse_features", "INT64", (26,), (0, dlrm.DLRM_SMALL.rows)),
        ),
        outputs=(TensorDecl("probability", "FP32", (1,)),),
        target_latency_ns=60 * NS_PER_MS,
        latency_source="MLPerf dlrm-v2",
        max_batch_size=256,
        approx_bytes=197_000_000,
    ),
)

SUITE: Mapping[str, SuiteModel] = MappingProxyType({m.name: m for m in _MODELS})
DEFAULT_BUILD: tuple[str, ...] = tuple(m.name for m in _MODELS if m.default_build)
