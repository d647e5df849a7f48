"""`resnet50`: ResNet-50 v1.5 as an inference export has it, with seeded random weights.

Faithful in structure, shapes and cost: the torchvision/MLPerf v1.5 variant (the stride-2 sits in
the 3x3 conv of the first bottleneck of stages 2-4, not in its 1x1), BatchNorm folded into each
conv's weight and bias as an exporter's constant folding leaves it, so the graph is
Conv(+Relu), MaxPool, Add, GlobalAveragePool, Flatten and Gemm. 25.5 M parameters (torchvision's
25.56 M less the BN scales/shifts folded away), ≈4.1 G multiply-adds per 224x224 image.

Weights: He-normal convs, then a random BatchNorm (γ≈1, β, running mean/var near 0/1) folded
in. The last BN of each residual branch gets a small γ (0.2), like the near-zero γ that trained
ResNets end up with and torchvision's zero_init_residual, so 16 residual additions do not blow
the activations up; logits come out finite and O(1–10). The values mean nothing: load tests
need the arithmetic, not the accuracy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx

from loadtest.models.onnx_graph import BATCH, FLOAT, GraphBuilder

IMAGE = 224
CLASSES = 1000
BN_EPSILON = 1e-5
# (bottleneck blocks, width, stride of the first block) per stage; out channels = 4 * width
STAGES = ((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2))
EXPANSION = 4


def conv_bn(
    g: GraphBuilder,
    x: str,
    in_ch: int,
    out_ch: int,
    kernel: int,
    stride: int,
    relu: bool,
    gamma: float = 1.0,
    group: int = 1,
) -> str:
    """Conv with a BatchNorm folded in: w' = w·γ/√(σ²+ε), b' = β − μ·γ/√(σ²+ε). `group` > 1 is
    a grouped conv (ResNeXt, in retinanet); the draws for group 1 are unchanged."""
    fan_in = in_ch // group * kernel * kernel
    w = g.rng.standard_normal((out_ch, in_ch // group, kernel, kernel), dtype=np.float32)
    w *= np.float32(math.sqrt(2.0 / fan_in))
    bn_gamma = (gamma * (1.0 + 0.1 * g.rng.standard_normal(out_ch))).astype(np.float32)
    bn_beta = (0.01 * g.rng.standard_normal(out_ch)).astype(np.float32)
    bn_mean = (0.01 * g.rng.standard_normal(out_ch)).astype(np.float32)
    bn_var = g.rng.uniform(0.9, 1.1, out_ch).astype(np.float32)
    scale = bn_gamma / np.sqrt(bn_var + np.float32(BN_EPSILON))
    weight = g.constant("conv_weight", w * scale[:, None, None, None], parameter=True)
    bias = g.constant("conv_bias", (bn_beta - bn_mean * scale).astype(np.float32), parameter=True)
    pad = kernel // 2
    grouped: dict[str, Any] = {"group": group} if group > 1 else {}
    y = g.node(
        "Conv",
        [x, weight, bias],
        kernel_shape=[kernel, kernel],
        strides=[stride, stride],
        pads=[pad, pad, pad, pad],
        **grouped,
    )
    return g.node("Relu", [y]) if relu else y


def _bottleneck(g: GraphBuilder, x: str, in_ch: int, width: int, stride: int) -> str:
    out_ch = width * EXPANSION
    y = conv_bn(g, x, in_ch, width, 1, 1, relu=True)
    y = conv_bn(g, y, width, width, 3, stride, relu=True)  # v1.5: the stride is here
    y = conv_bn(g, y, width, out_ch, 1, 1, relu=False, gamma=0.2)
    shortcut = x
    if stride != 1 or in_ch != out_ch:
        shortcut = conv_bn(g, x, in_ch, out_ch, 1, stride, relu=False)
    return g.node("Relu", [g.node("Add", [y, shortcut])])


def build(seed: int) -> onnx.ModelProto:
    """input FP32 [batch, 3, 224, 224] -> logits FP32 [batch, 1000]."""
    g = GraphBuilder("resnet50", seed)
    x = g.input("input", FLOAT, [BATCH, 3, IMAGE, IMAGE])
    y = conv_bn(g, x, 3, 64, 7, 2, relu=True)
    y = g.node("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    channels = 64
    for blocks, width, stride in STAGES:
        for block in range(blocks):
            y = _bottleneck(g, y, channels, width, stride if block == 0 else 1)
            channels = width * EXPANSION
    y = g.node("Flatten", [g.node("GlobalAveragePool", [y])], axis=1)
    fc_w = g.normal("fc_weight", [CLASSES, channels], 0.01)
    fc_b = g.normal("fc_bias", [CLASSES], 0.01)
    g.node("Gemm", [y, fc_w, fc_b], out="logits", transB=1)
    g.output("logits", FLOAT, [BATCH, CLASSES])
    return g.model(f"ResNet-50 v1.5, BN folded, random weights ({g.parameter_count:,} parameters)")
