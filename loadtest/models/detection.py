"""Object-detection post-processing inside the ONNX graph: box decoding and NonMaxSuppression
down to a fixed number of detections per image, shared by `retinanet` and `ssd_mobilenet`.

Why in the graph: MLPerf's detection models are measured with their post-processing (the
reference RetinaNet's torchvision `postprocess_detections`, SSD-MobileNet's TensorFlow
`BatchMultiClassNonMaxSuppression`), and it is real work on the CPU (tens of thousands of
candidate boxes sorted and suppressed per image). Why a fixed count: Triton batches requests on
axis 0, so every output needs one shape per sample; detections are padded to `k` rows
(boxes 0, scores 0, labels -1) and `num_detections` says how many rows are real — the layout of
TensorFlow's detection API that MLPerf's SSD-MobileNet graph uses.
"""

from __future__ import annotations

import numpy as np

from loadtest.models.onnx_graph import FLOAT, INT64, GraphBuilder


def decode_boxes(
    g: GraphBuilder,
    deltas: str,
    anchors: str,
    center_scale: float,
    size_scale: float,
    size_clamp: float | None,
    clip_max: float,
) -> str:
    """deltas [B, n, 4] (d_c0, d_c1, d_s0, d_s1) against anchors [B or 1, n, 4] given as
    (center0, center1, size0, size1) -> corner boxes (lo0, lo1, hi0, hi1) clipped to
    [0, clip_max]: center = d_c·scale·size + center, size = exp(min(d_s·scale, clamp))·size.
    torchvision's BoxCoder is (x, y) with scales 1 and clamp log(1000/16); TensorFlow's SSD
    coder is (y, x) with scales 1/10 and 1/5 and no clamp."""
    d_center, d_size = g.multi("Split", [deltas, g.ints("split_2_2", [2, 2])], 2, axis=2)
    a_center, a_size = g.multi("Split", [anchors, g.ints("split_2_2", [2, 2])], 2, axis=2)
    if center_scale != 1.0:
        d_center = g.node("Mul", [d_center, g.scalar("center_scale", center_scale)])
    if size_scale != 1.0:
        d_size = g.node("Mul", [d_size, g.scalar("size_scale", size_scale)])
    if size_clamp is not None:
        d_size = g.node("Min", [d_size, g.scalar("size_clamp", size_clamp)])
    center = g.node("Add", [g.node("Mul", [d_center, a_size]), a_center])
    half = g.node("Mul", [g.node("Mul", [g.node("Exp", [d_size]), a_size]), g.scalar("half", 0.5)])
    corners = g.node(
        "Concat", [g.node("Sub", [center, half]), g.node("Add", [center, half])], axis=2
    )
    return g.node("Clip", [corners, g.scalar("clip_low", 0.0), g.scalar("clip_high", clip_max)])


def gather_rows(g: GraphBuilder, rows: str, index: str) -> str:
    """rows [B, n, 4], index [B, k] (int64) -> [B, k, 4]: each image's own rows."""
    expanded = g.node(
        "Expand", [g.node("Unsqueeze", [index, g.ints("axis_2", [2])]), g.ints("x4", [1, 1, 4])]
    )
    return g.node("GatherElements", [rows, expanded], axis=1)


def nms_top_k(
    g: GraphBuilder,
    boxes: str,
    scores: str,
    boxes_per_image: int,
    iou_threshold: float,
    score_threshold: float,
    max_per_class: int,
    k: int,
    label_offset: int = 0,
) -> tuple[str, str, str, str]:
    """Per-class NonMaxSuppression, then the `k` best survivors of each image.

    boxes [B, N, 4] corners, scores [B, C, N] -> (boxes [B, k, 4], scores [B, k],
    labels [B, k] INT64 (class + label_offset, -1 for padding), num_detections [B, 1] INT64).
    The selected boxes' scores are scattered into an otherwise-zero [B, C, N] tensor whose
    flattened TopK picks the best k across classes (scores above the threshold are > 0).
    """
    selected = g.node(
        "NonMaxSuppression",
        [
            boxes,
            scores,
            g.ints("nms_max_per_class", [max_per_class]),
            g.constant("nms_iou", np.asarray([iou_threshold], dtype=np.float32)),
            g.constant("nms_score", np.asarray([score_threshold], dtype=np.float32)),
        ],
    )
    kept = g.node("GatherND", [scores, selected])
    dense = g.node("ScatterND", [g.node("Mul", [scores, g.scalar("zero", 0.0)]), selected, kept])
    flat = g.node("Reshape", [dense, g.ints("flatten_classes", [0, -1])])
    top_scores, top_index = g.multi("TopK", [flat, g.ints("top_k", [k])], 2, axis=-1)
    index_n = g.ints("boxes_per_image", [boxes_per_image])
    label = g.node("Div", [top_index, index_n])
    box_index = g.node("Mod", [top_index, index_n])
    valid = g.node("Greater", [top_scores, g.scalar("zero", 0.0)])
    valid_f = g.node("Cast", [valid], to=FLOAT)
    det_boxes = g.node(
        "Mul",
        [gather_rows(g, boxes, box_index), g.node("Unsqueeze", [valid_f, g.ints("axis_2", [2])])],
    )
    if label_offset:
        label = g.node("Add", [label, g.ints("label_offset", [label_offset])])
    labels = g.node("Where", [valid, label, g.ints("no_label", [-1])])
    count = g.node("ReduceSum", [g.node("Cast", [valid], to=INT64), g.ints("axis_1", [1])])
    return det_boxes, top_scores, labels, count
