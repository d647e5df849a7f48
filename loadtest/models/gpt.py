"""A GPT-2-style decoder with an explicit KV cache, as ONNX: the suite's small real LLM.

Why this shape: a streaming server's cost has two phases, and a load test of one must see both.
Prefill runs the whole prompt through every layer at once (work grows with the input length);
each decode step runs one new token against the cached keys and values of all earlier ones
(work O(1) in the weights, O(context) only in attention). Keys and values are therefore graph
inputs and outputs (`past_*` in, `present_*` out, the layout of Hugging Face's GPT-2 ONNX exports),
so the caller owns the cache and a decode step never recomputes the prompt.

Architecture (GPT-2, Radford et al. 2019; pre-LayerNorm blocks, learned positions, tied LM head):
token + position embeddings; per layer x += Attn(LN(x)), x += MLP(LN(x)) with a causal mask over
past + new positions and GELU (erf form); a final LN; logits of the *last* position only (what
greedy decoding needs: the LM head over every prompt position would be vocab × d × ISL of work
no answer uses). Weights ~ N(0, 0.02), position table N(0, 0.01), the residual projections
scaled by 1/√(2·layers) (GPT-2's init), LayerNorm γ = 1, β = 0.

Graph tensors (B = batch, S = new tokens, P = cached tokens, T = P + S, H heads of D):
    input_ids INT64 [B, S]; past_key_<l>, past_value_<l> FP32 [B, H, P, D] (P = 0: an empty cache)
    -> logits FP32 [B, vocab] (last position); present_key_<l>, present_value_<l> FP32 [B, H, T, D]
Every sequence of a batch shares P and S (no padding mask): the server runs one request per call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx

from loadtest.models.onnx_graph import BATCH, FLOAT, INT64, GraphBuilder

INIT_STD = 0.02
POSITION_STD = 0.01
LN_EPSILON = 1e-5
MASK_VALUE = -1e9  # added to the scores of future positions: exp() of it is exactly 0 in FP32
SEQUENCE = "sequence"
PAST = "past_sequence"
TOTAL = "total_sequence"
CONTEXT_KEY = "loadtest.context"  # ONNX metadata: positions the model has (decoding.CONTEXT_KEY)


@dataclass(frozen=True)
class GptShape:
    layers: int
    d_model: int
    heads: int
    ffn: int
    vocab: int
    context: int  # positions: the prompt plus the answer must fit

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    @property
    def parameter_count(self) -> int:
        d, f = self.d_model, self.ffn
        layer = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d)
        return (2 * self.vocab + self.context) * d + self.layers * layer + 2 * d

    def _dense_macs(self) -> int:
        d, f = self.d_model, self.ffn
        return self.layers * (d * 3 * d + d * d + 2 * d * f)  # QKV, output, MLP per token

    def flops_per_token(self, context: int) -> int:
        """FLOPs (2 × multiply-adds) of one decode step with `context` tokens cached: the dense
        layers, attention over context + 1 keys (scores and weighted values), the LM head."""
        attention = self.layers * 2 * self.d_model * (context + 1)
        return 2 * (self._dense_macs() + attention + self.vocab * self.d_model)

    def prefill_flops(self, prompt: int) -> int:
        """FLOPs of a prefill of `prompt` tokens on an empty cache, as the graph computes it:
        the dense layers per token, attention over the whole prompt × prompt square (the causal
        mask zeroes half of it after it is computed), the LM head once (last position)."""
        attention = self.layers * 2 * self.d_model * prompt * prompt
        return 2 * (prompt * self._dense_macs() + attention + self.vocab * self.d_model)


GPT_TINY_L2_D128 = GptShape(layers=2, d_model=128, heads=4, ffn=512, vocab=2048, context=1024)


def cache_names(layers: int) -> tuple[list[str], list[str]]:
    """(past input names, present output names), in graph order: key then value per layer."""
    past = [f"past_{kind}_{layer}" for layer in range(layers) for kind in ("key", "value")]
    return past, [name.replace("past_", "present_", 1) for name in past]


def empty_cache(shape: GptShape, batch: int = 1) -> dict[str, np.ndarray]:
    """The `past_*` feeds of a first call: P = 0."""
    past, _ = cache_names(shape.layers)
    empty = np.zeros((batch, shape.heads, 0, shape.head_dim), dtype=np.float32)
    return dict.fromkeys(past, empty)


def _layer_norm(g: GraphBuilder, x: str, d: int) -> str:
    gamma = g.filled("ln_gamma", [d], 1.0)
    beta = g.filled("ln_beta", [d], 0.0)
    return g.node("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=LN_EPSILON)


def _dense(g: GraphBuilder, x: str, fan_in: int, fan_out: int, std: float = INIT_STD) -> str:
    weight = g.normal("dense_weight", [fan_in, fan_out], std)
    bias = g.filled("dense_bias", [fan_out], 0.0)
    return g.node("Add", [g.node("MatMul", [x, weight]), bias])


def _gelu(g: GraphBuilder, x: str) -> str:
    """GELU(x) = 0.5·x·(1 + erf(x/√2)); onnxruntime fuses the pattern."""
    erf = g.node("Erf", [g.node("Mul", [x, g.scalar("inv_sqrt2", 1.0 / math.sqrt(2.0))])])
    one_plus = g.node("Add", [erf, g.scalar("one", 1.0)])
    return g.node("Mul", [g.node("Mul", [x, one_plus]), g.scalar("half", 0.5)])


def _block(g: GraphBuilder, x: str, layer: int, shape: GptShape, consts: dict[str, str]) -> str:
    d = shape.d_model
    residual_std = INIT_STD / math.sqrt(2 * shape.layers)
    qkv = _dense(g, _layer_norm(g, x, d), d, 3 * d)
    q, k, v = g.multi("Split", [qkv, g.ints("split_qkv", [d, d, d])], 3, axis=-1)

    def heads(tensor: str) -> str:  # [B, S, d] -> [B, H, S, D]
        split = g.node("Reshape", [tensor, consts["split"]])
        return g.node("Transpose", [split], perm=[0, 2, 1, 3])

    keys = g.node("Concat", [f"past_key_{layer}", heads(k)], out=f"present_key_{layer}", axis=2)
    values = g.node(
        "Concat", [f"past_value_{layer}", heads(v)], out=f"present_value_{layer}", axis=2
    )
    scores = g.node("MatMul", [heads(q), g.node("Transpose", [keys], perm=[0, 1, 3, 2])])
    scores = g.node("Add", [g.node("Mul", [scores, consts["scale"]]), consts["mask"]])
    probs = g.node("Softmax", [scores], axis=-1)
    context = g.node("Transpose", [g.node("MatMul", [probs, values])], perm=[0, 2, 1, 3])
    context = g.node("Reshape", [context, consts["merge"]])
    x = g.node("Add", [x, _dense(g, context, d, d, residual_std)])
    inner = _gelu(g, _dense(g, _layer_norm(g, x, d), d, shape.ffn))
    return g.node("Add", [x, _dense(g, inner, shape.ffn, d, residual_std)])


def _positions_and_mask(g: GraphBuilder, ids: str) -> tuple[str, str]:
    """Positions P..T-1 of the new tokens [S], and the causal mask [S, T]: 0 where a new token
    may attend (every cached key, and new keys up to its own position), MASK_VALUE beyond."""
    scalar = g.ints("scalar_shape", [])
    past = g.node(
        "Reshape",
        [
            g.node(
                "Slice", [g.node("Shape", ["past_key_0"]), g.ints("at2", [2]), g.ints("to3", [3])]
            ),
            scalar,
        ],
    )
    new = g.node(
        "Reshape",
        [g.node("Slice", [g.node("Shape", [ids]), g.ints("at1", [1]), g.ints("to2", [2])]), scalar],
    )
    total = g.node("Add", [past, new])
    step = g.constant("one_step", np.asarray(1, dtype=np.int64))
    positions = g.node("Range", [past, total, step])  # [S]
    keys = g.node("Range", [g.constant("zero", np.asarray(0, dtype=np.int64)), total, step])
    future = g.node(
        "Greater",
        [
            g.node("Unsqueeze", [keys, g.ints("axis0", [0])]),
            g.node("Unsqueeze", [positions, g.ints("axis1", [1])]),
        ],
    )  # [S, T]
    mask = g.node("Where", [future, g.scalar("mask_value", MASK_VALUE), g.scalar("zero_f", 0.0)])
    # shape inference cannot see through Range: say it, so FLOPs can be counted (models/flops.py)
    g.shape_hint(positions, INT64, [SEQUENCE])
    g.shape_hint(mask, FLOAT, [SEQUENCE, TOTAL])
    return positions, mask


def build(seed: int, shape: GptShape, name: str) -> onnx.ModelProto:
    g = GraphBuilder(name, seed)
    d = shape.d_model
    ids = g.input("input_ids", INT64, [BATCH, SEQUENCE])
    past, present = cache_names(shape.layers)
    for tensor in past:
        g.input(tensor, FLOAT, [BATCH, shape.heads, PAST, shape.head_dim])

    token_table = g.normal("token_embeddings", [shape.vocab, d], INIT_STD)
    position_table = g.normal("position_embeddings", [shape.context, d], POSITION_STD)
    positions, mask = _positions_and_mask(g, ids)
    x = g.node(
        "Add",
        [g.node("Gather", [token_table, ids]), g.node("Gather", [position_table, positions])],
    )
    consts = {
        "split": g.ints("split_heads", [0, 0, shape.heads, shape.head_dim]),
        "merge": g.ints("merge_heads", [0, 0, d]),
        "scale": g.scalar("attention_scale", 1.0 / math.sqrt(shape.head_dim)),
        "mask": mask,
    }
    for layer in range(shape.layers):
        x = _block(g, x, layer, shape, consts)
    x = _layer_norm(g, x, d)
    last = g.node("Gather", [x, g.constant("last", np.asarray(-1, dtype=np.int64))], axis=1)
    head = g.normal("lm_head", [shape.vocab, d], INIT_STD)
    g.node("Gemm", [last, head], out="logits", transB=1)
    g.output("logits", FLOAT, [BATCH, shape.vocab])
    for tensor in present:
        g.output(tensor, FLOAT, [BATCH, shape.heads, TOTAL, shape.head_dim])
    assert g.parameter_count == shape.parameter_count, (g.parameter_count, shape.parameter_count)
    model = g.model(
        f"GPT-2-style decoder with a KV cache: {shape.layers} layers, d_model {d}, "
        f"{shape.heads} heads, FFN {shape.ffn}, vocabulary {shape.vocab}, context "
        f"{shape.context}; random weights ({g.parameter_count:,} parameters)"
    )
    # read by the serving loop (models/decoding.py) to refuse prompts that cannot fit
    onnx.helper.set_model_props(model, {CONTEXT_KEY: str(shape.context)})
    return model
