"""`tiny`: a two-layer MLP, 16 -> 64 -> 16, for measuring the load generator rather than a model.

Its compute (≈2 k multiply-adds per sample) is negligible next to any request's overhead, so a
latency measured against it is the cost of the client, the protocol and the server. The file is a
few kilobytes and is committed to git, so a fresh clone can serve it without building anything.
"""

from __future__ import annotations

import math

import onnx

from loadtest.models.onnx_graph import BATCH, FLOAT, GraphBuilder

FEATURES = 16
HIDDEN = 64


def build(seed: int) -> onnx.ModelProto:
    """INPUT0 FP32 [batch, 16] -> Gemm+Relu (64) -> Gemm -> OUTPUT0 FP32 [batch, 16]."""
    g = GraphBuilder("tiny", seed)
    x = g.input("INPUT0", FLOAT, [BATCH, FEATURES])
    w1 = g.normal("fc1_weight", [HIDDEN, FEATURES], math.sqrt(2.0 / FEATURES))
    b1 = g.normal("fc1_bias", [HIDDEN], 0.01)
    h = g.node("Relu", [g.node("Gemm", [x, w1, b1], transB=1)])
    w2 = g.normal("fc2_weight", [FEATURES, HIDDEN], math.sqrt(1.0 / HIDDEN))
    b2 = g.normal("fc2_bias", [FEATURES], 0.01)
    g.node("Gemm", [h, w2, b2], out="OUTPUT0", transB=1)
    g.output("OUTPUT0", FLOAT, [BATCH, FEATURES])
    return g.model("loadtest tiny MLP 16-64-16 (random weights)")
