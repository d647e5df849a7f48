"""The benchmark suite: what each model is, how it is served, and the latency bound it is held to.

One frozen `SuiteModel` per model, gathered in the read-only `SUITE` mapping (a constant, not a
registry: nothing adds to it at run time). Everything the rest of the package needs about a
model comes from here — the generator, the tensors (with the value range of integer inputs,
which a load generator needs to make valid requests), the Triton serving settings, and the MLPerf
Server latency bound (target latency at a percentile; mlperf.conf: resnet50 15 ms, bert 130 ms,
dlrm-v2 60 ms, retinanet 100 ms, rnnt 1000 ms, all at the 99th percentile; SSD-MobileNet's 10 ms
is from MLPerf v0.5, the last round with it in the Server scenario; 3D U-Net has none, MLPerf runs
it only Offline and SingleStream).

Default build (`loadtest models build`): tiny, resnet50, bert_l4_h256, dlrm_small,
retinanet_320, ssd_mobilenet, rnnt_h256, unet3d_64, gpt_tiny_l2_d128 — about 680 MB together.

One model is served differently: `gpt_tiny_l2_d128`, a small real LLM decoder, is a decoupled
(streaming) Python-backend model speaking TensorRT-LLM's text interface (`text_input`,
`max_tokens`, `stream`, ... -> `text_output`, `num_output_tokens`), the same as the hand-written
known-answer model llm_known. Its ONNX graph is the decoder with a KV cache; the build writes its
tokenizer.json, its model.py and the generation loop (models/decoding.py) beside it (`SideFiles`).
Its bound is LoadGen's per-token pair, p99 TTFT and TPOT (`--mlperf-model KEY`), not one
end-to-end latency. The faithful models
too slow for a 2-core machine (bert_large 1.3 GB, retinanet at 800x800, rnnt at hidden 1024,
unet3d on 128³ patches) are built only when named or with `--all`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import onnx

from loadtest.core.units import NS_PER_MS
from loadtest.models import (
    bert,
    dlrm,
    gpt,
    gpt_files,
    resnet50,
    retinanet,
    rnnt,
    ssd_mobilenet,
    tiny,
    unet3d,
)

MLPERF_SERVER_PERCENTILE = 0.99

# `loadtest server` with no --model/--qps: the tiny MLP at a rate any laptop sustains, so the
# default run measures the client and the server, and passes its bound (ours, 10 ms p99).
DEFAULT_SERVER_MODEL = "tiny"
DEFAULT_SERVER_QPS = 100.0


@dataclass(frozen=True)
class TensorDecl:
    """One model input or output. `dims` exclude the batch dimension (as config.pbtxt has them).

    `value_range` = [low, high) for integer inputs that index something (token ids, embedding
    rows): values outside it are errors, not merely slow, so configs state it. `image_preset`
    names how a picture given with --input-data is normalised for an image input (a preset of
    loadtest.engine.inputs.images, after MLPerf's reference preprocessing for the model).
    """

    name: str
    datatype: str  # Triton name without TYPE_: "FP32", "INT64"
    dims: tuple[int, ...]
    value_range: tuple[int, int] | None = None
    image_preset: str | None = None
    optional: bool = False  # a request may leave it out (config `optional: true`)


@dataclass(frozen=True)
class SideFiles:
    """Files a model needs beside model.onnx in its version directory (a tokenizer, the Python
    backend's model.py): their names, and seed -> {name: bytes}, deterministic like the graph."""

    names: tuple[str, ...]
    make: Callable[[int], Mapping[str, bytes]]
    # (name, source) of the files copied verbatim from loadtest's source: a copy that no longer
    # equals its source is stale, and the build replaces it
    copied: tuple[tuple[str, Path], ...] = ()


@dataclass(frozen=True)
class SuiteModel:
    name: str
    description: str
    generate: Callable[[int], onnx.ModelProto]  # seed -> model
    inputs: tuple[TensorDecl, ...]
    outputs: tuple[TensorDecl, ...]
    target_latency_ns: int | None  # None: MLPerf has no Server scenario for it (`no_server`)
    latency_source: str  # whose bound: MLPerf's (the full-size model's, for scaled ones) or ours
    default_build: bool = True
    percentile: float = MLPERF_SERVER_PERCENTILE
    max_batch_size: int = 8
    max_queue_delay_us: int = 1000
    intra_op_threads: int = 0  # 0 = onnxruntime's default (one per core)
    inter_op_threads: int = 1
    gpu_config: bool = True  # also write configs/gpu.pbtxt (KIND_GPU + TensorRT accelerator)
    approx_bytes: int = 0  # size of model.onnx, for the listing before it is built
    approx_flops: int = 0  # per sample (models/flops.py), for the listing before it is built
    no_server: str = ""  # why there is no Server bound, when target_latency_ns is None
    # "onnxruntime": config.pbtxt for the ORT backend (the graph's tensors are the model's).
    # "python": a decoupled Python-backend model whose model.py (a side file) runs the graph.
    backend: str = "onnxruntime"
    side_files: SideFiles | None = None
    # symbolic dimensions other than the batch, pinned to count FLOPs (models/flops.py)
    flops_dims: Mapping[str, int] = field(default_factory=dict)


_BERT_INPUTS = (
    TensorDecl("input_ids", "INT64", (384,), (0, 30522)),
    TensorDecl("attention_mask", "INT64", (384,), (0, 2)),
    TensorDecl("token_type_ids", "INT64", (384,), (0, 2)),
)
_BERT_OUTPUTS = (
    TensorDecl("start_logits", "FP32", (384,)),
    TensorDecl("end_logits", "FP32", (384,)),
)

_MODELS: tuple[SuiteModel, ...] = (
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
        approx_flops=4_096,
    ),
    SuiteModel(
        name="resnet50",
        description="ResNet-50 v1.5, BN folded, 25.5 M params, 4.1 GMAC/image (faithful)",
        generate=resnet50.build,
        inputs=(TensorDecl("input", "FP32", (3, 224, 224), image_preset="mlperf-resnet50"),),
        outputs=(TensorDecl("logits", "FP32", (1000,)),),
        target_latency_ns=15 * NS_PER_MS,
        latency_source="MLPerf",
        max_batch_size=32,
        approx_bytes=102_000_000,
        approx_flops=8_178_368_512,
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
        approx_flops=3_020_292_096,
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
        approx_flops=246_425_321_472,
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
        approx_flops=32_060_928,
    ),
)

_RETINANET_OUTPUTS = (
    TensorDecl("boxes", "FP32", (retinanet.DETECTIONS, 4)),
    TensorDecl("scores", "FP32", (retinanet.DETECTIONS,)),
    TensorDecl("labels", "INT64", (retinanet.DETECTIONS,)),
    TensorDecl("num_detections", "INT64", (1,)),
)
_RNNT_INPUTS = (
    TensorDecl("features", "FP32", (rnnt.RNNT.frames, rnnt.RNNT.features)),
    TensorDecl("feature_length", "INT64", (1,), (1, rnnt.RNNT.frames + 1)),
)
_RNNT_OUTPUTS = (
    TensorDecl("transcript", "INT64", (rnnt.RNNT.frames,)),
    TensorDecl("transcript_length", "INT64", (1,)),
)
UNET3D_NO_SERVER = (
    "MLPerf Inference runs 3D U-Net only in the Offline and SingleStream scenarios (a KiTS "
    "case is seconds of compute, so it has no Server latency bound)"
)


def _unet3d(
    name: str, patch: int, default: bool, description: str, size: int, flops: int
) -> SuiteModel:
    return SuiteModel(
        name=name,
        description=description,
        generate=functools.partial(unet3d.build, patch=patch, name=name),
        inputs=(TensorDecl("image", "FP32", (1, patch, patch, patch)),),
        outputs=(TensorDecl("logits", "FP32", (unet3d.CLASSES, patch, patch, patch)),),
        target_latency_ns=None,
        latency_source="MLPerf: none (Offline and SingleStream only)",
        default_build=default,
        max_batch_size=2,
        approx_bytes=size,
        approx_flops=flops,
        no_server=UNET3D_NO_SERVER,
    )


def _retinanet(name: str, image: int, default: bool, description: str, flops: int) -> SuiteModel:
    return SuiteModel(
        name=name,
        description=description,
        generate=functools.partial(retinanet.build, image=image, name=name),
        inputs=(TensorDecl("image", "FP32", (3, image, image), image_preset="mlperf-retinanet"),),
        outputs=_RETINANET_OUTPUTS,
        target_latency_ns=100 * NS_PER_MS,
        latency_source="MLPerf" if image == 800 else "MLPerf retinanet",
        default_build=default,
        max_batch_size=8,
        max_queue_delay_us=2000,
        approx_bytes=148_700_000,
        approx_flops=flops,
    )


def _rnnt(
    name: str, shape: rnnt.RnntShape, default: bool, description: str, size: int, flops: int
) -> SuiteModel:
    return SuiteModel(
        name=name,
        description=description,
        generate=functools.partial(rnnt.build, shape=shape, name=name),
        inputs=_RNNT_INPUTS,
        outputs=_RNNT_OUTPUTS,
        target_latency_ns=1000 * NS_PER_MS,
        latency_source="MLPerf" if shape == rnnt.RNNT else "MLPerf rnnt",
        default_build=default,
        max_batch_size=16,
        max_queue_delay_us=2000,
        approx_bytes=size,
        approx_flops=flops,
    )


_MODELS = (
    *_MODELS,
    _retinanet(
        "retinanet",
        800,
        False,
        "RetinaNet ResNeXt50-32x4d FPN 800x800, 264 classes, NMS in graph, 38 M params (faithful)",
        402_416_789_504,
    ),
    _retinanet(
        "retinanet_320",
        320,
        True,
        "RetinaNet (as retinanet) on 320x320 images: 6.25x fewer pixels, same weights' shapes",
        64_367_562_752,
    ),
    SuiteModel(
        name="ssd_mobilenet",
        description="SSD-MobileNet-v1 300x300 COCO, NMS in graph, 6.8 M params (faithful)",
        generate=ssd_mobilenet.build,
        inputs=(
            TensorDecl(
                "image",
                "FP32",
                (3, ssd_mobilenet.IMAGE, ssd_mobilenet.IMAGE),
                image_preset="mlperf-ssd-mobilenet",
            ),
        ),
        outputs=(
            TensorDecl("detection_boxes", "FP32", (ssd_mobilenet.DETECTIONS, 4)),
            TensorDecl("detection_scores", "FP32", (ssd_mobilenet.DETECTIONS,)),
            TensorDecl("detection_classes", "INT64", (ssd_mobilenet.DETECTIONS,)),
            TensorDecl("num_detections", "INT64", (1,)),
        ),
        target_latency_ns=10 * NS_PER_MS,
        latency_source="MLPerf v0.5",
        max_batch_size=16,
        approx_bytes=27_300_000,
        approx_flops=2_474_258_816,
    ),
    _rnnt(
        "rnnt",
        rnnt.RNNT,
        False,
        "RNN-T LibriSpeech: LSTM encoder 5x1024, prediction 2x320, joint, greedy decode in "
        "graph, 500 frames, 45 M params (faithful)",
        181_300_000,
        29_416_704_000,
    ),
    _rnnt(
        "rnnt_h256",
        rnnt.RNNT_H256,
        True,
        "RNN-T (as rnnt) with the encoder LSTMs at hidden 256 instead of 1024, 4.8 M params",
        19_400_000,
        2_923_776_000,
    ),
    _unet3d(
        "unet3d",
        128,
        False,
        "3D U-Net KiTS19 on 128³ patches, InstanceNorm, 31 M params (faithful)",
        124_800_000,
        954_597_376_000,
    ),
    _unet3d(
        "unet3d_64",
        64,
        True,
        "3D U-Net (as unet3d) on 64³ patches: 8x fewer voxels, same weights' shapes",
        124_800_000,
        119_324_672_000,
    ),
)

# TensorRT-LLM's streaming interface, llm_known's too (model_repository/llm_known/config.pbtxt).
# Ranges: prompts of 32-512 characters of loadtest's random text (about 20-300 tokens), 16-64
# output tokens, always streamed with ignore_eos, so the requested length is the answer's.
LLM_INPUTS = (
    TensorDecl("text_input", "BYTES", (1,), (32, 512)),
    TensorDecl("max_tokens", "INT32", (1,), (16, 65)),
    TensorDecl("stream", "BOOL", (1,), (1, 2)),
    TensorDecl("ignore_eos", "BOOL", (1,), (1, 2), optional=True),
    TensorDecl("min_tokens", "INT32", (1,), (0, 1), optional=True),
)
LLM_OUTPUTS = (
    TensorDecl("text_output", "BYTES", (1,)),
    TensorDecl("num_output_tokens", "UINT32", (1,)),
)
LLM_NO_SERVER = (
    "an LLM's Server bounds are p99 TTFT and p99 TPOT (--mlperf-model KEY, or --ttft-bound "
    "and --tpot-bound), not one end-to-end latency"
)
_MODELS = (
    *_MODELS,
    SuiteModel(
        name="gpt_tiny_l2_d128",
        description=(
            "GPT-2-style decoder scaled to 2 layers, d_model 128, 4 heads, KV cache, context "
            "1024, byte-level BPE of 2048 trained at build; streamed (decoupled Python backend)"
        ),
        generate=functools.partial(gpt.build, shape=gpt.GPT_TINY_L2_D128, name="gpt_tiny_l2_d128"),
        inputs=LLM_INPUTS,
        outputs=LLM_OUTPUTS,
        target_latency_ns=None,
        latency_source="MLPerf LLM: p99 TTFT and TPOT",
        no_server=LLM_NO_SERVER,
        max_batch_size=0,
        intra_op_threads=1,
        gpu_config=False,
        approx_bytes=4_200_000,
        approx_flops=1_311_744,
        backend="python",
        side_files=SideFiles(
            gpt_files.NAMES,
            functools.partial(gpt_files.side_files, vocab=gpt.GPT_TINY_L2_D128.vocab),
            tuple(gpt_files.SOURCES.items()),
        ),
        flops_dims={gpt.SEQUENCE: 1, gpt.PAST: 0, gpt.TOTAL: 1},
    ),
)

SUITE: Mapping[str, SuiteModel] = MappingProxyType({m.name: m for m in _MODELS})
DEFAULT_BUILD: tuple[str, ...] = tuple(m.name for m in _MODELS if m.default_build)
