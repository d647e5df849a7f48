"""`retinanet`: MLPerf's SSD-Large since v2.1 — RetinaNet, ResNeXt50-32x4d + FPN, 800x800,
OpenImages' 264 MLPerf classes — with seeded random weights and its post-processing in the graph.

Why RetinaNet, not SSD-ResNet34 1200x1200: RetinaNet is what MLPerf Inference measures now (it
replaced SSD-ResNet34 in v2.1), and both share the same Server bound (100 ms p99), so the newer
model is the one a result can be compared with.

The torchvision `retinanet_resnext50_32x4d_fpn` the MLPerf reference exports:
- backbone ResNeXt50-32x4d (bottlenecks 3-4-6-3, 32 groups of width 4·2^stage, the stride in the
  grouped 3x3, BatchNorm frozen and folded into the convs);
- FPN on C3-C5 (1x1 laterals to 256, nearest 2x top-down, 3x3 outputs) plus P6 and P7 (3x3
  stride-2 convs on P5 and relu(P6)): 5 levels, strides 8-128;
- heads shared across levels: 4 x (3x3 conv 256 + ReLU), then 9·264 class logits (prior bias
  -log(99)) and 9·4 box deltas per cell; anchors 32-512 at three scales (2^0, 2^1/3, 2^2/3) and
  aspect ratios 0.5, 1, 2, rounded as torchvision's AnchorGenerator does;
- `postprocess_detections` in the graph: per level the 1000 best (anchor, class) sigmoid scores,
  boxes decoded (BoxCoder weights 1, size clamp log(1000/16)) and clipped to the image, then
  NonMaxSuppression per class (IoU 0.5, score > 0.05) and the best 300 per image.
≈38 M parameters; ≈ 1 x 10^11 multiply-adds per 800x800 image (see `loadtest models list`).

Differences from the reference export, both for Triton: detections are padded to a fixed 300
rows (see detection.py) instead of a variable-length list, and the batch axis is kept.

Scaled variant `retinanet_320`: the same network on 320x320 images (6.25x fewer pixels, levels
40x40 down to 3x3); everything else, the weights' shapes included, is the faithful model's.

Input `image` FP32 [batch, 3, S, S], normalised (ImageNet mean/std, as the reference's transform
leaves it). Outputs `boxes` FP32 [batch, 300, 4] (x1, y1, x2, y2 in pixels), `scores` FP32
[batch, 300], `labels` INT64 [batch, 300] (0-263, -1 = padding), `num_detections` INT64 [batch, 1].
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from loadtest.models.detection import decode_boxes, gather_rows, nms_top_k
from loadtest.models.onnx_graph import BATCH, FLOAT, INT64, GraphBuilder
from loadtest.models.resnet50 import conv_bn

CLASSES = 264
DETECTIONS = 300
CANDIDATES_PER_LEVEL = 1000
SCORE_THRESHOLD = 0.05
IOU_THRESHOLD = 0.5
FPN_CHANNELS = 256
GROUPS = 32
STAGES = ((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2))  # (blocks, planes, stride)
ANCHOR_SIZES = (32, 64, 128, 256, 512)
ASPECT_RATIOS = (0.5, 1.0, 2.0)
ANCHORS_PER_CELL = 9
SIZE_CLAMP = math.log(1000.0 / 16)
PRIOR = 0.01
# Std of the class-logit conv: random weights then give logits around the prior (-4.6) with std
# ~1, so the finest level has thousands of candidates above the 0.05 threshold and the coarsest
# few, and NMS has real work (the heads see un-normalised FPN outputs of std ~10-100 here, so
# torchvision's init std 0.01 would saturate every score at 1).
CLASS_LOGIT_STD = 0.003
BOX_DELTA_STD = 0.001  # box deltas of std ~0.3: boxes near their anchors, as trained ones are


def _bottleneck(g: GraphBuilder, x: str, in_ch: int, planes: int, stride: int) -> str:
    width = planes * 2  # int(planes * 4 / 64) * 32
    out_ch = planes * 4
    y = conv_bn(g, x, in_ch, width, 1, 1, relu=True)
    y = conv_bn(g, y, width, width, 3, stride, relu=True, group=GROUPS)
    y = conv_bn(g, y, width, out_ch, 1, 1, relu=False, gamma=0.2)
    shortcut = x
    if stride != 1 or in_ch != out_ch:
        shortcut = conv_bn(g, x, in_ch, out_ch, 1, stride, relu=False)
    return g.node("Relu", [g.node("Add", [y, shortcut])])


Conv = tuple[str, str]  # (weight, bias) initializers, applied at one or several levels


def _conv(
    g: GraphBuilder, in_ch: int, out_ch: int, kernel: int, std: float = 0.0, bias: float = 0.0
) -> Conv:
    """A plain conv's parameters; He-normal unless `std` is given."""
    weight = g.normal(
        "conv_weight",
        [out_ch, in_ch, kernel, kernel],
        std or math.sqrt(2.0 / (in_ch * kernel * kernel)),
    )
    return weight, g.filled("conv_bias", [out_ch], bias)


def _apply(g: GraphBuilder, x: str, params: Conv, kernel: int, stride: int = 1) -> str:
    pad = kernel // 2
    return g.node(
        "Conv",
        [x, *params],
        kernel_shape=[kernel, kernel],
        strides=[stride, stride],
        pads=[pad, pad, pad, pad],
    )


def level_sizes(image: int) -> list[int]:
    """Feature-map side of P3-P7 for a square `image` (conv arithmetic, pads k//2)."""
    sizes, side = [], image
    for _ in range(7):  # stem conv, max pool, stages 2-4, P6, P7: each halves, rounding up
        side = (side + 1) // 2
        sizes.append(side)
    return sizes[2:]


def level_anchors(image: int, side: int, size: int) -> np.ndarray:
    """[side*side*9, 4] anchors of one level as (x centre, y centre, width, height), in the
    head's (row, column, anchor) order: torchvision's AnchorGenerator (rounded base anchors)."""
    scales = np.asarray([size, int(size * 2 ** (1 / 3)), int(size * 2 ** (2 / 3))], np.float64)
    ratios = np.asarray(ASPECT_RATIOS, np.float64)
    h_ratios = np.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    base = np.round(np.stack([-ws, -hs, ws, hs], axis=1) / 2)
    stride = image // side
    shifts = np.arange(side, dtype=np.float64) * stride
    shift_y, shift_x = np.meshgrid(shifts, shifts, indexing="ij")
    shift = np.stack([shift_x, shift_y, shift_x, shift_y], axis=-1).reshape(-1, 1, 4)
    corners = (shift + base[None]).reshape(-1, 4)
    width = corners[:, 2] - corners[:, 0]
    height = corners[:, 3] - corners[:, 1]
    centre = np.stack([corners[:, 0] + 0.5 * width, corners[:, 1] + 0.5 * height], axis=1)
    return np.concatenate([centre, np.stack([width, height], 1)], axis=1).astype(np.float32)


def _backbone(g: GraphBuilder, x: str) -> list[tuple[str, int]]:
    y = conv_bn(g, x, 3, 64, 7, 2, relu=True)
    y = g.node("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    channels, outputs = 64, []
    for blocks, planes, stride in STAGES:
        for block in range(blocks):
            y = _bottleneck(g, y, channels, planes, stride if block == 0 else 1)
            channels = planes * 4
        outputs.append((y, channels))
    return outputs[1:]  # C3, C4, C5


def _fpn(g: GraphBuilder, features: list[tuple[str, int]]) -> list[str]:
    laterals = [_conv(g, ch, FPN_CHANNELS, 1) for _, ch in features]
    outputs = [_conv(g, FPN_CHANNELS, FPN_CHANNELS, 3) for _ in features]
    top = _apply(g, features[-1][0], laterals[-1], 1)
    results = [_apply(g, top, outputs[-1], 3)]
    for index in (1, 0):
        lateral = _apply(g, features[index][0], laterals[index], 1)
        up = g.node(
            "Resize",
            [top, "", g.constant("up2", np.asarray([1, 1, 2, 2], dtype=np.float32))],
            mode="nearest",
        )
        top = g.node("Add", [lateral, up])
        results.insert(0, _apply(g, top, outputs[index], 3))
    p6 = _apply(g, results[-1], _conv(g, FPN_CHANNELS, FPN_CHANNELS, 3), 3, 2)
    p7 = _apply(g, g.node("Relu", [p6]), _conv(g, FPN_CHANNELS, FPN_CHANNELS, 3), 3, 2)
    return [*results, p6, p7]


def _head(g: GraphBuilder, final_out: int, final_std: float, final_bias: float) -> list[Conv]:
    tower = [_conv(g, FPN_CHANNELS, FPN_CHANNELS, 3) for _ in range(4)]
    return [*tower, _conv(g, FPN_CHANNELS, final_out, 3, final_std, final_bias)]


def _run_head(g: GraphBuilder, x: str, head: list[Conv], width: int) -> str:
    """Tower + final conv on one level -> [B, H*W*9, width] in (row, column, anchor) order."""
    for params in head[:-1]:
        x = g.node("Relu", [_apply(g, x, params, 3)])
    y = _apply(g, x, head[-1], 3)
    y = g.node("Transpose", [y], perm=[0, 2, 3, 1])
    return g.node("Reshape", [y, g.ints("head_shape", [0, -1, width])])


def build(seed: int, image: int = 800, name: str = "retinanet") -> onnx.ModelProto:
    """image FP32 [batch, 3, image, image] -> 300 detections per image (module docstring)."""
    g = GraphBuilder(name, seed)
    x = g.input("image", FLOAT, [BATCH, 3, image, image])
    levels = _fpn(g, _backbone(g, x))
    class_head = _head(
        g, ANCHORS_PER_CELL * CLASSES, CLASS_LOGIT_STD, -math.log((1 - PRIOR) / PRIOR)
    )
    box_head = _head(g, ANCHORS_PER_CELL * 4, BOX_DELTA_STD, 0.0)
    boxes, scores, labels = [], [], []
    for level, side, size in zip(levels, level_sizes(image), ANCHOR_SIZES, strict=True):
        logits = _run_head(g, level, class_head, CLASSES)  # [B, n, 264]
        deltas = _run_head(g, level, box_head, 4)  # [B, n, 4]
        flat = g.node("Sigmoid", [g.node("Reshape", [logits, g.ints("flatten", [0, -1])])])
        k = min(CANDIDATES_PER_LEVEL, side * side * ANCHORS_PER_CELL * CLASSES)
        top_scores, top_index = g.multi("TopK", [flat, g.ints("level_k", [k])], 2, axis=-1)
        classes = g.ints("classes", [CLASSES])
        anchor_index = g.node("Div", [top_index, classes])
        anchors = g.node(
            "Gather", [g.constant("anchors", level_anchors(image, side, size)), anchor_index]
        )
        picked = gather_rows(g, deltas, anchor_index)
        boxes.append(decode_boxes(g, picked, anchors, 1.0, 1.0, SIZE_CLAMP, float(image)))
        scores.append(top_scores)
        labels.append(g.node("Mod", [top_index, classes]))
    all_boxes = g.node("Concat", boxes, axis=1)  # [B, M, 4]
    all_scores = g.node("Concat", scores, axis=1)  # [B, M]
    all_labels = g.node("Concat", labels, axis=1)  # [B, M]
    # one class per candidate: scores [B, 264, M], zero where the candidate is another class
    class_ids = g.constant("class_ids", np.arange(CLASSES, dtype=np.int64).reshape(1, -1, 1))
    mine = g.node("Equal", [g.node("Unsqueeze", [all_labels, g.ints("axis_1", [1])]), class_ids])
    per_class = g.node(
        "Where",
        [mine, g.node("Unsqueeze", [all_scores, g.ints("axis_1", [1])]), g.scalar("zero", 0.0)],
    )
    candidates = sum(
        min(CANDIDATES_PER_LEVEL, s * s * ANCHORS_PER_CELL * CLASSES) for s in level_sizes(image)
    )
    det = nms_top_k(
        g, all_boxes, per_class, candidates, IOU_THRESHOLD, SCORE_THRESHOLD, DETECTIONS, DETECTIONS
    )
    for tensor, out in zip(det, ("boxes", "scores", "labels", "num_detections"), strict=True):
        g.node("Identity", [tensor], out=out)
    g.output("boxes", FLOAT, [BATCH, DETECTIONS, 4])
    g.output("scores", FLOAT, [BATCH, DETECTIONS])
    g.output("labels", INT64, [BATCH, DETECTIONS])
    g.output("num_detections", INT64, [BATCH, 1])
    return g.model(
        f"RetinaNet ResNeXt50-32x4d FPN {image}x{image}, {CLASSES} classes, NMS in graph, "
        f"random weights ({g.parameter_count:,} parameters)"
    )
