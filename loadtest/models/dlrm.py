"""DLRM-v2 (MLPerf's `dlrm-v2`, the torchrec DLRM-DCN) with its embedding tables scaled down.

Faithful to the reference in everything but table size: 13 dense features through a bottom MLP
13-512-256-128 (ReLU), 26 embedding tables of dimension 128, the 27 vectors concatenated
(3456 wide) into a DCNv2 low-rank cross network of 3 layers (rank 512:
x_{l+1} = x_0 ⊙ (U_l V_l x_l + b_l) + x_l), then a top MLP 1024-1024-512-256-1 (ReLU between
layers) and a sigmoid. ≈16 M dense parameters, ≈16 M multiply-adds (32 MFLOPs) per sample.

Scaled (hence the name `dlrm_small`): the reference tables hold up to 40 M rows each (≈ 90 GB in
fp32); here every table has `rows` rows (10 000 by default: 26 × 10 000 × 128 × 4 B = 133 MB),
big enough that random lookups miss the CPU caches as the real ones do. Also simplified: one
index per table (the reference's multi-hot bags with sum pooling become single lookups).

Inputs: `dense_features` FP32 [batch, 13]; `sparse_features` INT64 [batch, 26], column t being
the row of table t, *already hashed into the table's range* [0, rows) by the caller (the
reference does the hashing in preprocessing too). Out-of-range indices make Gather fail, which is
why the config states the range. Output: `probability` FP32 [batch, 1].

Each table is its own initializer looked up by its own Gather on column t of the sparse input,
the layout of torchrec's unfused EmbeddingBagCollection (rather than one concatenated table with
per-table offsets added to the indices).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx

from loadtest.models.onnx_graph import BATCH, FLOAT, INT64, GraphBuilder


@dataclass(frozen=True)
class DlrmShape:
    rows: int = 10_000
    dense: int = 13
    tables: int = 26
    dim: int = 128
    bottom: tuple[int, ...] = (512, 256, 128)
    top: tuple[int, ...] = (1024, 1024, 512, 256, 1)
    cross_layers: int = 3
    cross_rank: int = 512

    @property
    def interaction_width(self) -> int:
        return (self.tables + 1) * self.dim


DLRM_SMALL = DlrmShape()


def _linear(g: GraphBuilder, x: str, fan_in: int, fan_out: int, relu: bool) -> str:
    weight = g.normal("fc_weight", [fan_out, fan_in], math.sqrt((2.0 if relu else 1.0) / fan_in))
    bias = g.normal("fc_bias", [fan_out], 0.01)
    y = g.node("Gemm", [x, weight, bias], transB=1)
    return g.node("Relu", [y]) if relu else y


def build(seed: int, shape: DlrmShape, name: str) -> onnx.ModelProto:
    if shape.bottom[-1] != shape.dim:
        raise ValueError("the bottom MLP must end at the embedding dimension")
    g = GraphBuilder(name, seed)
    dense = g.input("dense_features", FLOAT, [BATCH, shape.dense])
    sparse = g.input("sparse_features", INT64, [BATCH, shape.tables])

    x, width = dense, shape.dense
    for units in shape.bottom:
        x, width = _linear(g, x, width, units, relu=True), units

    features = [x]
    bound = math.sqrt(1.0 / shape.rows)  # torchrec's default embedding init
    for table in range(shape.tables):
        weights = g.uniform(f"embedding_{table}", [shape.rows, shape.dim], bound)
        column = g.node("Gather", [sparse, g.ints("table", [table])], axis=1)  # [B, 1]
        rows = g.node("Gather", [weights, column])  # [B, 1, dim]
        features.append(g.node("Flatten", [rows], axis=1))  # [B, dim]
    x0 = g.node("Concat", features, axis=1)  # [B, (tables + 1) * dim]

    width = shape.interaction_width
    x = x0
    for _ in range(shape.cross_layers):
        v = g.normal("cross_v", [width, shape.cross_rank], math.sqrt(1.0 / width))
        u = g.normal("cross_u", [shape.cross_rank, width], math.sqrt(1.0 / shape.cross_rank))
        b = g.normal("cross_bias", [width], 0.01)
        projected = g.node("Add", [g.node("MatMul", [g.node("MatMul", [x, v]), u]), b])
        x = g.node("Add", [g.node("Mul", [x0, projected]), x])

    for i, units in enumerate(shape.top):
        x, width = _linear(g, x, width, units, relu=i < len(shape.top) - 1), units
    g.node("Sigmoid", [x], out="probability")
    g.output("probability", FLOAT, [BATCH, 1])
    return g.model(
        f"DLRM-v2 (DCNv2 cross, 3 layers) with {shape.tables} tables x {shape.rows} rows x "
        f"{shape.dim}; random weights ({g.parameter_count:,} parameters)"
    )
