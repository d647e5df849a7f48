"""`ssd_mobilenet`: SSD-MobileNet-v1 300x300 (MLPerf's SSD-Small, COCO), faithful, random weights.

The TensorFlow object-detection graph MLPerf used (ssd_mobilenet_v1_coco): MobileNet-v1 at depth
multiplier 1.0 (a 3x3 stride-2 conv, then 13 depthwise-separable blocks, BatchNorm folded,
ReLU6), feature maps taken after block 11 (19x19x512) and block 13 (10x10x1024), four extra
layers (1x1 then 3x3 stride-2: 5x5x512, 3x3x256, 2x2x256, 1x1x128), and 1x1 box predictors
(3 anchors per cell on the first map, 6 on the others: 1917 anchors, 91 classes with background).
TensorFlow "SAME" padding (ONNX auto_pad SAME_UPPER). ≈6.8 M parameters, ≈1.2 G multiply-adds.

Post-processing in the graph, as TensorFlow's: sigmoid scores, background dropped, box
decoding with scale factors (10, 10, 5, 5) against the multiple-grid anchors (scales 0.2-0.95,
aspect ratios 1, 2, 1/2, 3, 1/3, the lowest layer reduced to 3 boxes), boxes clipped to [0, 1],
NonMaxSuppression per class (IoU 0.6, score > 1e-8, 100 per class), the best 100 overall.

Input `image` FP32 [batch, 3, 300, 300], NCHW, scaled to [-1, 1] (the TF model's own
preprocessing, x/127.5 - 1; MLPerf feeds it NHWC, here NCHW like the other suite models).
Outputs: `detection_boxes` FP32 [batch, 100, 4] (ymin, xmin, ymax, xmax, normalised),
`detection_scores` FP32 [batch, 100], `detection_classes` INT64 [batch, 100] (COCO ids 1-90,
-1 = padding), `num_detections` INT64 [batch, 1].
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from loadtest.models.detection import decode_boxes, nms_top_k
from loadtest.models.onnx_graph import BATCH, FLOAT, INT64, GraphBuilder

IMAGE = 300
CLASSES = 91  # with background (index 0)
DETECTIONS = 100
# (stride, pointwise output channels) of MobileNet-v1's 13 depthwise-separable blocks
BLOCKS = (
    (1, 64),
    (2, 128),
    (1, 128),
    (2, 256),
    (1, 256),
    (2, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (2, 1024),
    (1, 1024),
)
EXTRA = ((256, 512), (128, 256), (128, 256), (64, 128))  # (1x1 channels, 3x3 stride-2 channels)
FEATURE_SIZES = (19, 10, 5, 3, 2, 1)
MIN_SCALE, MAX_SCALE = 0.2, 0.95
ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)


def anchors() -> np.ndarray:
    """[1917, 4] (ycenter, xcenter, height, width), normalised, in the predictors' order
    (row, column, anchor): TensorFlow's MultipleGridAnchorGenerator for this model."""
    layers = len(FEATURE_SIZES)
    scales = [MIN_SCALE + (MAX_SCALE - MIN_SCALE) * i / (layers - 1) for i in range(layers)]
    scales.append(1.0)
    rows = []
    for layer, size in enumerate(FEATURE_SIZES):
        if layer == 0:
            shapes = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
        else:
            shapes = [(scales[layer], ratio) for ratio in ASPECT_RATIOS]
            shapes.append((math.sqrt(scales[layer] * scales[layer + 1]), 1.0))
        for row in range(size):
            for column in range(size):
                for scale, ratio in shapes:
                    root = math.sqrt(ratio)
                    rows.append(
                        ((row + 0.5) / size, (column + 0.5) / size, scale / root, scale * root)
                    )
    return np.asarray(rows, dtype=np.float32)


def _conv_bn(
    g: GraphBuilder, x: str, in_ch: int, out_ch: int, kernel: int, stride: int, group: int = 1
) -> str:
    """Conv with BatchNorm folded (random scale near 1), then ReLU6."""
    fan_in = in_ch // group * kernel * kernel
    weight = g.normal(
        "conv_weight", [out_ch, in_ch // group, kernel, kernel], math.sqrt(2 / fan_in)
    )
    bias = g.normal("conv_bias", [out_ch], 0.01)
    y = g.node(
        "Conv",
        [x, weight, bias],
        kernel_shape=[kernel, kernel],
        strides=[stride, stride],
        group=group,
        auto_pad="SAME_UPPER",
    )
    return g.node("Clip", [y, g.scalar("relu6_low", 0.0), g.scalar("relu6_high", 6.0)])


def _predictor(g: GraphBuilder, x: str, in_ch: int, per_cell: int, width: int) -> str:
    """1x1 conv to per_cell*width, then [B, H*W*per_cell, width] in (row, column, anchor) order."""
    weight = g.normal("predictor_weight", [per_cell * width, in_ch, 1, 1], math.sqrt(1 / in_ch))
    bias = g.normal("predictor_bias", [per_cell * width], 0.01)
    y = g.node("Conv", [x, weight, bias], kernel_shape=[1, 1])
    y = g.node("Transpose", [y], perm=[0, 2, 3, 1])
    return g.node("Reshape", [y, g.ints("predictor_shape", [0, -1, width])])


def build(seed: int) -> onnx.ModelProto:
    """image FP32 [batch, 3, 300, 300] -> 100 detections per image (see the module docstring)."""
    g = GraphBuilder("ssd_mobilenet", seed)
    x = g.input("image", FLOAT, [BATCH, 3, IMAGE, IMAGE])
    y = _conv_bn(g, x, 3, 32, 3, 2)
    channels = 32
    features: list[tuple[str, int]] = []
    for index, (stride, out_ch) in enumerate(BLOCKS):
        y = _conv_bn(g, y, channels, channels, 3, stride, group=channels)  # depthwise
        y = _conv_bn(g, y, channels, out_ch, 1, 1)  # pointwise
        channels = out_ch
        if index in (10, 12):  # Conv2d_11_pointwise (19x19), Conv2d_13_pointwise (10x10)
            features.append((y, channels))
    for squeeze, out_ch in EXTRA:
        y = _conv_bn(g, _conv_bn(g, y, channels, squeeze, 1, 1), squeeze, out_ch, 3, 2)
        channels = out_ch
        features.append((y, channels))
    box_parts, class_parts = [], []
    for layer, (feature, feature_ch) in enumerate(features):
        per_cell = 3 if layer == 0 else 6
        box_parts.append(_predictor(g, feature, feature_ch, per_cell, 4))
        class_parts.append(_predictor(g, feature, feature_ch, per_cell, CLASSES))
    deltas = g.node("Concat", box_parts, axis=1)  # [B, 1917, 4] (ty, tx, th, tw)
    logits = g.node("Concat", class_parts, axis=1)  # [B, 1917, 91]
    table = anchors()
    anchor_const = g.constant("anchors", table[np.newaxis])
    boxes = decode_boxes(g, deltas, anchor_const, 0.1, 0.2, None, 1.0)
    scores = g.node("Sigmoid", [logits])
    scores = g.node(  # drop the background column, classes first for NonMaxSuppression
        "Slice", [scores, g.ints("from_1", [1]), g.ints("to_91", [CLASSES]), g.ints("axis_2", [2])]
    )
    scores = g.node("Transpose", [scores], perm=[0, 2, 1])
    det = nms_top_k(g, boxes, scores, len(table), 0.6, 1e-8, DETECTIONS, DETECTIONS, 1)
    names = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
    for tensor, name in zip(det, names, strict=True):
        g.node("Identity", [tensor], out=name)
    g.output("detection_boxes", FLOAT, [BATCH, DETECTIONS, 4])
    g.output("detection_scores", FLOAT, [BATCH, DETECTIONS])
    g.output("detection_classes", INT64, [BATCH, DETECTIONS])
    g.output("num_detections", INT64, [BATCH, 1])
    return g.model(
        f"SSD-MobileNet-v1 300x300 COCO, BN folded, NMS in graph, random weights "
        f"({g.parameter_count:,} parameters)"
    )
