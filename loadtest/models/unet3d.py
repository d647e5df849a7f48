"""`unet3d`: MLPerf's 3D U-Net (KiTS19 kidney-tumour segmentation) on one 128³ patch.

Seeded random weights. The MLCommons reference network (image_segmentation/pytorch/model/
unet3d.py) that MLPerf
Inference's 3d-unet runs on each sliding-window patch: one input channel, filters
32-64-128-256-320 and a 320 bottleneck (5 stride-2 steps, 128³ down to 4³), every conv block a
3x3x3 conv (no bias) + InstanceNorm (affine) + ReLU; each encoder level two blocks (the first with
stride 2), each decoder level a 2x2x2 stride-2 ConvTranspose (with bias), the skip concatenated,
two blocks; a 1x1x1 conv to 3 classes (background, kidney, tumour). The output is the patch's
logits; the harness's sliding window, Gaussian weighting and argmax stay outside, as in MLPerf.

Cost: ≈ 3 x 10^11 multiply-adds per 128³ patch (`loadtest models list` counts them), minutes of
CPU per KiTS case, which is why MLPerf runs it only Offline and SingleStream and gives it no
Server latency bound (`loadtest server --model unet3d` refuses, saying so).

Scaled variant `unet3d_64` (the default build): the same network on 64³ patches (8x fewer
voxels, bottleneck 2³); every weight shape is the faithful model's.

Input `image` FP32 [batch, 1, P, P, P] (CT intensities normalised as the reference's
preprocessing leaves them); output `logits` FP32 [batch, 3, P, P, P].
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from loadtest.models.onnx_graph import BATCH, FLOAT, GraphBuilder

FILTERS = (32, 64, 128, 256, 320)
CLASSES = 3
PATCH = 128
INSTANCE_NORM_EPSILON = 1e-5


def _conv_block(g: GraphBuilder, x: str, in_ch: int, out_ch: int, stride: int = 1) -> str:
    weight = g.normal("conv_weight", [out_ch, in_ch, 3, 3, 3], math.sqrt(2.0 / (in_ch * 27)))
    y = g.node("Conv", [x, weight], kernel_shape=[3, 3, 3], strides=[stride] * 3, pads=[1] * 6)
    scale = g.constant(
        "norm_scale", (1.0 + 0.1 * g.rng.standard_normal(out_ch)).astype(np.float32), True
    )
    shift = g.normal("norm_bias", [out_ch], 0.01)
    y = g.node("InstanceNormalization", [y, scale, shift], epsilon=INSTANCE_NORM_EPSILON)
    return g.node("Relu", [y])


def _upsample(g: GraphBuilder, x: str, in_ch: int, out_ch: int) -> str:
    weight = g.normal("upsample_weight", [in_ch, out_ch, 2, 2, 2], math.sqrt(1.0 / (in_ch * 8)))
    bias = g.normal("upsample_bias", [out_ch], 0.01)
    return g.node("ConvTranspose", [x, weight, bias], kernel_shape=[2, 2, 2], strides=[2, 2, 2])


def build(seed: int, patch: int = PATCH, name: str = "unet3d") -> onnx.ModelProto:
    """image FP32 [batch, 1, patch³] -> logits FP32 [batch, 3, patch³]."""
    if patch % 32:
        raise ValueError(f"the patch side must be a multiple of 32 (5 halvings), got {patch}")
    g = GraphBuilder(name, seed)
    x = g.input("image", FLOAT, [BATCH, 1, patch, patch, patch])
    y = _conv_block(g, _conv_block(g, x, 1, FILTERS[0]), FILTERS[0], FILTERS[0])
    skips = [(y, FILTERS[0])]
    for in_ch, out_ch in zip(FILTERS, [*FILTERS[1:], FILTERS[-1]], strict=True):
        y = _conv_block(g, _conv_block(g, y, in_ch, out_ch, stride=2), out_ch, out_ch)
        skips.append((y, out_ch))
    channels = FILTERS[-1]
    skips.pop()  # the bottleneck's own output is `y`
    for skip, skip_ch in reversed(skips):
        up = _upsample(g, y, channels, skip_ch)
        y = g.node("Concat", [up, skip], axis=1)
        y = _conv_block(g, _conv_block(g, y, 2 * skip_ch, skip_ch), skip_ch, skip_ch)
        channels = skip_ch
    weight = g.normal("output_weight", [CLASSES, channels, 1, 1, 1], math.sqrt(1.0 / channels))
    bias = g.normal("output_bias", [CLASSES], 0.01)
    g.node("Conv", [y, weight, bias], out="logits", kernel_shape=[1, 1, 1])
    g.output("logits", FLOAT, [BATCH, CLASSES, patch, patch, patch])
    return g.model(
        f"3D U-Net (MLPerf KiTS19) on {patch}^3 patches, InstanceNorm, random weights "
        f"({g.parameter_count:,} parameters)"
    )
