"""BERT encoders with a SQuAD question-answering head, as MLPerf's `bert` benchmark runs them.

One generator, two shapes (see `BERT_LARGE` and `BERT_L4_H256`):
- `bert_large`: the faithful MLPerf model — 24 layers, hidden 1024, 16 heads, FFN 4096, sequence
  length 384: 334 M parameters (BERT-large's 335 M less the pooler, which SQuAD does not use),
  a 1.3 GB file and ≈250 GFLOPs per sequence. Built only on request.
- `bert_l4_h256`: the same graph scaled down (4 layers, hidden 256, 4 heads, FFN 1024, same
  vocabulary and sequence length 384): 11 M parameters, 45 MB, fast enough for a laptop.

The graph is what an ONNX export of a post-LayerNorm BERT looks like: word + position +
token-type embeddings, LayerNormalization, then per layer Q/K/V MatMuls, scaled dot-product
attention with the additive mask (1 − attention_mask)·−10000, Softmax, output projection, residual
+ LayerNorm, GELU FFN (the erf form: opset 17 has no Gelu op; onnxruntime fuses it), residual +
LayerNorm; finally a 2-unit QA head split into start and end logits. Weights ~ N(0, 0.02) like
BERT's initializer, LayerNorm γ = 1, β = 0.

Inputs: `input_ids` INT64 [batch, 384] in [0, vocab), `attention_mask` INT64 [batch, 384] in
{0, 1}, `token_type_ids` INT64 [batch, 384] in {0, 1}; outputs `start_logits`, `end_logits`
FP32 [batch, 384].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx

from loadtest.models.onnx_graph import BATCH, FLOAT, INT64, GraphBuilder

INIT_STD = 0.02
LN_EPSILON = 1e-12
MASK_VALUE = -10000.0


@dataclass(frozen=True)
class BertShape:
    layers: int
    hidden: int
    heads: int
    ffn: int
    sequence: int = 384
    vocab: int = 30522
    positions: int = 512
    token_types: int = 2

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def parameter_count(self) -> int:
        h, f = self.hidden, self.ffn
        embeddings = (self.vocab + self.positions + self.token_types) * h + 2 * h
        layer = 4 * (h * h + h) + (h * f + f) + (f * h + h) + 2 * 2 * h
        return embeddings + self.layers * layer + 2 * h + 2


BERT_LARGE = BertShape(layers=24, hidden=1024, heads=16, ffn=4096)
BERT_L4_H256 = BertShape(layers=4, hidden=256, heads=4, ffn=1024)


def _layer_norm(g: GraphBuilder, x: str, hidden: int) -> str:
    gamma = g.filled("ln_gamma", [hidden], 1.0)
    beta = g.filled("ln_beta", [hidden], 0.0)
    return g.node("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=LN_EPSILON)


def _dense(g: GraphBuilder, x: str, fan_in: int, fan_out: int) -> str:
    weight = g.normal("dense_weight", [fan_in, fan_out], INIT_STD)
    bias = g.filled("dense_bias", [fan_out], 0.0)
    return g.node("Add", [g.node("MatMul", [x, weight]), bias])


def _heads(g: GraphBuilder, x: str, split_shape: str, perm: list[int]) -> str:
    """[B, S, H] -> [B, heads, S, d] (or [B, heads, d, S] for keys, to skip a transpose later)."""
    return g.node("Transpose", [g.node("Reshape", [x, split_shape])], perm=perm)


def _gelu(g: GraphBuilder, x: str) -> str:
    """GELU(x) = 0.5·x·(1 + erf(x/√2)), the exact form BERT uses."""
    erf = g.node("Erf", [g.node("Mul", [x, g.scalar("inv_sqrt2", 1.0 / math.sqrt(2.0))])])
    one_plus = g.node("Add", [erf, g.scalar("one", 1.0)])
    return g.node("Mul", [g.node("Mul", [x, one_plus]), g.scalar("half", 0.5)])


def _encoder_layer(
    g: GraphBuilder, x: str, mask: str, shape: BertShape, consts: dict[str, str]
) -> str:
    h = shape.hidden
    q = _heads(g, _dense(g, x, h, h), consts["split"], [0, 2, 1, 3])
    k = _heads(g, _dense(g, x, h, h), consts["split"], [0, 2, 3, 1])
    v = _heads(g, _dense(g, x, h, h), consts["split"], [0, 2, 1, 3])
    scores = g.node("Mul", [g.node("MatMul", [q, k]), consts["scale"]])
    probs = g.node("Softmax", [g.node("Add", [scores, mask])], axis=-1)
    context = g.node("Transpose", [g.node("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    context = g.node("Reshape", [context, consts["merge"]])
    x = _layer_norm(g, g.node("Add", [_dense(g, context, h, h), x]), h)
    inner = _gelu(g, _dense(g, x, h, shape.ffn))
    return _layer_norm(g, g.node("Add", [_dense(g, inner, shape.ffn, h), x]), h)


def build(seed: int, shape: BertShape, name: str) -> onnx.ModelProto:
    g = GraphBuilder(name, seed)
    s, h = shape.sequence, shape.hidden
    ids = g.input("input_ids", INT64, [BATCH, s])
    attention = g.input("attention_mask", INT64, [BATCH, s])
    types = g.input("token_type_ids", INT64, [BATCH, s])

    word = g.node("Gather", [g.normal("word_embeddings", [shape.vocab, h], INIT_STD), ids])
    token_type = g.node(
        "Gather", [g.normal("token_type_embeddings", [shape.token_types, h], INIT_STD), types]
    )
    table = g.normal("position_embeddings", [shape.positions, h], INIT_STD)
    first_s = [table, g.ints("start", [0]), g.ints("end", [s]), g.ints("axis", [0])]
    position = g.node("Slice", first_s)  # positions 0..S-1
    x = g.node("Add", [g.node("Add", [word, token_type]), position])
    x = _layer_norm(g, x, h)

    # additive mask [B, 1, 1, S]: 0 where attended, -10000 where padded
    keep = g.node("Cast", [attention], to=onnx.TensorProto.FLOAT)
    padded = g.node("Sub", [g.scalar("one", 1.0), keep])
    additive = g.node("Mul", [padded, g.scalar("mask_value", MASK_VALUE)])
    mask = g.node("Unsqueeze", [additive, g.ints("axes", [1, 2])])
    consts = {
        "split": g.ints("split_heads", [0, 0, shape.heads, shape.head_dim]),
        "merge": g.ints("merge_heads", [0, 0, h]),
        "scale": g.scalar("attention_scale", 1.0 / math.sqrt(shape.head_dim)),
    }
    for _ in range(shape.layers):
        x = _encoder_layer(g, x, mask, shape, consts)

    qa = _dense(g, x, h, 2)  # [B, S, 2]
    start, end = g.multi("Split", [qa, g.ints("split", [1, 1])], 2, axis=-1)
    last_axis = g.ints("last_axis", [-1])
    g.node("Squeeze", [start, last_axis], out="start_logits")
    g.node("Squeeze", [end, last_axis], out="end_logits")
    g.output("start_logits", FLOAT, [BATCH, s])
    g.output("end_logits", FLOAT, [BATCH, s])
    assert g.parameter_count == shape.parameter_count, (g.parameter_count, shape.parameter_count)
    return g.model(
        f"BERT encoder + SQuAD head: {shape.layers} layers, hidden {h}, {shape.heads} heads, "
        f"FFN {shape.ffn}, sequence {s}; random weights ({g.parameter_count:,} parameters)"
    )
