"""`rnnt`: MLPerf's RNN-T speech recogniser (LibriSpeech, 29 labels) with seeded random weights and
its greedy decoder inside the graph.

The MLPerf reference (speech_recognition/rnnt, pytorch/model_separable_rnnt.py):
- encoder: 2 LSTM layers (240 -> 1024), time stacking x2 (frames 2j and 2j+1 concatenated, the
  length rounded up), 3 LSTM layers (2048 -> 1024); the ONNX LSTM op with `sequence_lens`, so a
  padded frame never enters the state;
- prediction network: an embedding of the 28 non-blank labels to 320 (the blank start symbol is a
  zero vector, as the reference feeds it) and 2 LSTM layers of 320;
- joint network: Linear(1024 + 320 -> 512) + ReLU + Linear(512 -> 29), its encoder half computed
  once for every frame (the same arithmetic as concatenating first);
- greedy decoding (the reference's ScriptGreedyDecoder) as two nested ONNX Loops: for each
  encoder frame, run prediction + joint until the argmax is blank or 30 symbols were emitted
  (max_symbols_per_step); a non-blank label updates the prediction state and is appended. Each
  utterance of a batch decodes independently (masks, not per-utterance control flow).
≈45 M parameters.

What one request covers: one whole utterance, features in, transcript out — the query MLPerf's
RNN-T SUT answers (the reference runs the decode loop in Python around the network; here it is
in the graph, so a Triton request is a complete transcription and no state lives in the server
between requests). Feature extraction (log-mel filterbanks, frame stacking) stays outside, as in
MLPerf's harness.

Random weights: plain random weights decode degenerately (a blank on every step, or a label on
every step up to the 30-symbol cap), so the joint's weights get a structure (half its hidden
units hear only the audio and decide blank, with a bias) that makes most frames blank, as in a
trained model. With random features the result is hundreds of labels per 500 frames (rnnt_h256
≈ 200; the faithful model often fills the 500-label transcript), in bursts (a frame that
emits often runs to the 30-symbol cap): decode work varies with the input, as it does with
speech density in the real model; the labels mean nothing.

Inputs: `features` FP32 [batch, T, 240] (stacked log-mel frames, zero-padded to T = 500,
i.e. 15 s at 30 ms per stacked frame), `feature_length` INT64 [batch, 1] in [1, T] (the
config states the range). Outputs: `transcript` INT64 [batch, L] (label ids 0-27, padded
with the blank id 28; L = T) and `transcript_length` INT64 [batch, 1].

Scaled variant `rnnt_h256`: the encoder's LSTMs at hidden 256 instead of 1024 (the encoder is
≈ 95 % of the faithful model's weights and time); the prediction and joint networks, the frame
count and the decoder are the faithful ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx

from loadtest.models.onnx_graph import BATCH, BOOL, FLOAT, INT32, INT64, GraphBuilder, ValueDecl


@dataclass(frozen=True)
class RnntShape:
    encoder_hidden: int = 1024
    frames: int = 500  # T, stacked frames per utterance (padded)
    features: int = 240  # 80 log-mel x 3 stacked frames
    pre_layers: int = 2
    post_layers: int = 3
    stack: int = 2
    prediction_hidden: int = 320
    prediction_layers: int = 2
    joint_hidden: int = 512
    labels: int = 29  # 28 characters + blank
    max_symbols_per_step: int = 30

    @property
    def blank(self) -> int:
        return self.labels - 1

    @property
    def encoder_frames(self) -> int:
        return self.frames // self.stack


RNNT = RnntShape()
RNNT_H256 = RnntShape(encoder_hidden=256)
# Random weights given the structure that makes greedy decoding behave (see _decoder_parameters):
LSTM_GAIN = 3.0  # LSTM weights U(±gain/sqrt(fan-in)): the encoder's output still varies per frame
ENCODER_GAIN = 3.0  # the joint's encoder half, x PyTorch's Linear init
JOINT_OUT_STD = 1 / math.sqrt(512)  # label logits of std ~1
BLANK_STD = 2.0  # the blank logit's spread over frames
BLANK_BIAS = 8.0  # most frames blank
SYMBOLS_PER_FRAME_FOR_FLOPS = 1  # the FLOPs count assumes one prediction step per frame


def _lstm_weights(g: GraphBuilder, inputs: int, hidden: int) -> tuple[str, str, str]:
    """(W, R, B) of one unidirectional LSTM. Not PyTorch's U(±1/sqrt(H)) init: with it and
    random input the signal fades layer by layer until the encoder's output hardly changes
    from frame to frame; U(±LSTM_GAIN/sqrt(fan-in)) keeps the gates' inputs of order 1."""
    return (
        g.uniform("lstm_w", [1, 4 * hidden, inputs], LSTM_GAIN / math.sqrt(inputs)),
        g.uniform("lstm_r", [1, 4 * hidden, hidden], LSTM_GAIN / math.sqrt(hidden)),
        g.uniform("lstm_b", [1, 8 * hidden], 1.0 / math.sqrt(hidden)),
    )


def _encoder_layer(g: GraphBuilder, x: str, inputs: int, hidden: int, lengths: str) -> str:
    """x [T, B, in] -> [T, B, hidden]; frames past each length come out as zeros."""
    w, r, b = _lstm_weights(g, inputs, hidden)
    y = g.node("LSTM", [x, w, r, b, lengths], hidden_size=hidden)  # Y [T, 1, B, H]
    return g.node("Squeeze", [y, g.ints("axis_1", [1])])


def _encoder(g: GraphBuilder, shape: RnntShape, features: str, lengths: str) -> tuple[str, str]:
    """features [B, T, 240], lengths INT32 [B] -> (encoded [T/2, B, H], lengths INT32 [B])."""
    hidden = shape.encoder_hidden
    x = g.node("Transpose", [features], perm=[1, 0, 2])
    width = shape.features
    for _ in range(shape.pre_layers):
        x = _encoder_layer(g, x, width, hidden, lengths)
        width = hidden
    x = g.node("Transpose", [x], perm=[1, 0, 2])  # stack time: [B, T, H] -> [B, T/2, 2H]
    x = g.node("Reshape", [x, g.ints("stack_shape", [0, -1, shape.stack * hidden])])
    x = g.node("Transpose", [x], perm=[1, 0, 2])
    stack = g.constant("stack", np.asarray(shape.stack, dtype=np.int32))
    lengths = g.node(
        "Div", [g.node("Add", [lengths, g.constant("one", np.asarray(1, np.int32))]), stack]
    )
    width = shape.stack * hidden
    for _ in range(shape.post_layers):
        x = _encoder_layer(g, x, width, hidden, lengths)
        width = hidden
    return x, lengths


@dataclass(frozen=True)
class _Decoder:
    """The prediction and joint networks' parameters (shared by every decode step)."""

    embedding: str
    lstms: tuple[tuple[str, str, str], ...]
    joint_prediction: str
    joint_out: str
    joint_out_bias: str


def _decoder_parameters(g: GraphBuilder, shape: RnntShape, encoded: str) -> tuple[_Decoder, str]:
    """The decoder's weights and the joint's encoder half for every frame: [T/2, B, 512]."""
    p, j = shape.prediction_hidden, shape.joint_hidden
    table = g.rng.standard_normal((shape.labels, p), dtype=np.float32)
    table[shape.blank] = 0.0  # the start symbol: the reference feeds zeros
    embedding = g.constant("embedding", table, parameter=True)
    lstms = tuple(_lstm_weights(g, p, p) for _ in range(shape.prediction_layers))
    bound = 1.0 / math.sqrt(shape.encoder_hidden + p)  # PyTorch Linear(1024 + 320, 512)
    joint_encoder = g.uniform("joint_encoder", [shape.encoder_hidden, j], bound * ENCODER_GAIN)
    half = j // 2
    prediction_weights = g.rng.uniform(-bound, bound, (p, j)).astype(np.float32)
    prediction_weights[:, :half] = 0.0  # the first half of the joint hears the audio only
    joint_prediction = g.constant("joint_prediction", prediction_weights, True)
    joint_bias = g.uniform("joint_bias", [j], bound)
    # Output columns centred (the ReLU'd joint hidden has a large common part, which would make
    # one label win on every frame); blank reads the audio-only half, labels the other half, so
    # the audio decides when to emit and the prediction state what: the structure that trained
    # weights have and random ones lack (without it decoding emits on every step or never).
    weights = g.rng.standard_normal((j, shape.labels), dtype=np.float32)
    weights -= weights.mean(axis=0, keepdims=True)
    weights[:half, : shape.blank] = 0.0
    weights[half:, shape.blank] = 0.0
    weights[:, : shape.blank] *= np.float32(JOINT_OUT_STD)
    weights[:, shape.blank] *= np.float32(BLANK_STD)
    joint_out = g.constant("joint_out", weights, True)
    bias = np.zeros(shape.labels, dtype=np.float32)
    bias[shape.blank] = BLANK_BIAS
    joint_out_bias = g.constant("joint_out_bias", bias, parameter=True)
    projected = g.node("Add", [g.node("MatMul", [encoded, joint_encoder]), joint_bias])
    return _Decoder(embedding, lstms, joint_prediction, joint_out, joint_out_bias), projected


def _symbol_step(
    g: GraphBuilder, shape: RnntShape, dec: _Decoder, frame: str, names: dict[str, str]
) -> dict[str, str]:
    """One prediction + joint step for every utterance; returns the carried values' updates."""
    blank = g.ints("blank", [shape.blank])
    x = g.node("Unsqueeze", [g.node("Gather", [dec.embedding, names["last"]]), g.ints("ax0", [0])])
    g.shape_hint(x, FLOAT, [1, BATCH, shape.prediction_hidden])
    states = []
    for layer, (w, r, b) in enumerate(dec.lstms):
        _, h, c = g.multi(
            "LSTM",
            [x, w, r, b, "", names[f"h{layer}"], names[f"c{layer}"]],
            3,
            hidden_size=shape.prediction_hidden,
        )
        states.append((h, c))
        x = h  # Y_h [1, B, P] is the next layer's one-step input
    prediction = g.shape_hint(
        g.node("Squeeze", [x, g.ints("ax0", [0])]), FLOAT, [BATCH, shape.prediction_hidden]
    )
    hidden = g.node(
        "Relu", [g.node("Add", [frame, g.node("MatMul", [prediction, dec.joint_prediction])])]
    )
    logits = g.node("Add", [g.node("MatMul", [hidden, dec.joint_out]), dec.joint_out_bias])
    label = g.node("ArgMax", [logits], axis=1, keepdims=0)  # [B]
    emit = g.node("And", [names["active"], g.node("Not", [g.node("Equal", [label, blank])])])
    emit_state = g.node("Reshape", [emit, g.ints("state_mask", [1, -1, 1])])
    updated = {}
    for layer, (h, c) in enumerate(states):
        updated[f"h{layer}"] = g.node("Where", [emit_state, h, names[f"h{layer}"]])
        updated[f"c{layer}"] = g.node("Where", [emit_state, c, names[f"c{layer}"]])
    updated["last"] = g.node("Where", [emit, label, names["last"]])
    length = g.ints("transcript_room", [shape.frames])
    write = g.node("And", [emit, g.node("Less", [names["count"], length])])
    position = g.node(
        "Unsqueeze",
        [
            g.node("Min", [names["count"], g.ints("last_slot", [shape.frames - 1])]),
            g.ints("ax1", [1]),
        ],
    )
    old = g.node("GatherElements", [names["tokens"], position], axis=1)
    new = g.node(
        "Where",
        [
            g.node("Unsqueeze", [write, g.ints("ax1", [1])]),
            g.node("Unsqueeze", [label, g.ints("ax1", [1])]),
            old,
        ],
    )
    updated["tokens"] = g.node("ScatterElements", [names["tokens"], position, new], axis=1)
    updated["count"] = g.node("Add", [names["count"], g.node("Cast", [write], to=INT64)])
    updated["active"] = emit
    return updated


def _any(g: GraphBuilder, mask: str) -> str:
    """A bool [B] -> bool scalar: is any element true (a Loop's condition)."""
    peak = g.node("ReduceMax", [g.node("Cast", [mask], to=INT64)], keepdims=0)
    return g.node("Greater", [peak, g.constant("zero_i64", np.asarray(0, np.int64))])


def _carried(shape: RnntShape, layers: int) -> list[tuple[str, int, list[int | str]]]:
    """(key, type, shape) of the decode loops' carried values, in order."""
    state: list[int | str] = [1, BATCH, shape.prediction_hidden]
    carried: list[tuple[str, int, list[int | str]]] = []
    for layer in range(layers):
        carried += [(f"h{layer}", FLOAT, state), (f"c{layer}", FLOAT, state)]
    return [
        *carried,
        ("last", INT64, [BATCH]),
        ("tokens", INT64, [BATCH, shape.frames]),
        ("count", INT64, [BATCH]),
    ]


def _decode(
    g: GraphBuilder, shape: RnntShape, dec: _Decoder, projected: str, lengths: str, batch: str
) -> tuple[str, str]:
    """Greedy decoding: outer Loop over encoder frames, inner Loop over symbols of a frame."""
    carried = _carried(shape, len(dec.lstms))
    keys = [key for key, _, _ in carried]
    p = shape.prediction_hidden
    zeros = g.node(
        "ConstantOfShape",
        [g.node("Concat", [g.ints("one", [1]), batch, g.ints("hidden", [p])], axis=0)],
    )
    initial = {key: zeros for key in keys if key[0] in "hc"}
    blank = g.ints("blank", [shape.blank])
    initial["last"] = g.node("Expand", [blank, batch])
    room = g.node("Concat", [batch, g.ints("room", [shape.frames])], axis=0)
    initial["tokens"] = g.node("Expand", [blank, room])
    initial["count"] = g.node("Expand", [g.ints("zero", [0]), batch])
    lengths64 = g.node("Cast", [lengths], to=INT64)

    # outer body: (t, cond, *carried) -> (cond, *carried)
    t, outer_cond = g.fresh("t"), g.fresh("cond")
    outer = {key: g.fresh(f"outer_{key}") for key in keys}
    g.begin_subgraph(
        "decode_frames",
        [(t, INT64, []), (outer_cond, BOOL, [])]
        + [(outer[key], kind, dims) for key, kind, dims in carried],
    )
    frame = g.node("Gather", [projected, t], axis=0)
    g.shape_hint(frame, FLOAT, [BATCH, shape.joint_hidden])
    active = g.node("Less", [g.node("Expand", [t, batch]), lengths64])

    # inner body: (s, cond, *carried, active) -> (cond, *carried, active)
    inner_keys = [*keys, "active"]
    inner_types: list[ValueDecl] = [*carried, ("active", BOOL, [BATCH])]
    s, inner_cond = g.fresh("s"), g.fresh("cond")
    inner = {key: g.fresh(f"inner_{key}") for key in inner_keys}
    g.begin_subgraph(
        "decode_symbols",
        [(s, INT64, []), (inner_cond, BOOL, []), *((inner[k], e, d) for k, e, d in inner_types)],
    )
    updated = _symbol_step(g, shape, dec, frame, inner)
    inner_outs = [g.node("Identity", [updated[key]]) for key in inner_keys]
    inner_body = g.end_subgraph(
        [(_any(g, updated["active"]), BOOL, [])]
        + [
            (name, kind, dims)
            for name, (_, kind, dims) in zip(inner_outs, inner_types, strict=True)
        ]
    )
    max_symbols = g.constant("max_symbols", np.asarray(shape.max_symbols_per_step, np.int64))
    symbols = g.multi(
        "Loop",
        [max_symbols, _any(g, active), *(outer[key] for key in keys), active],
        len(inner_keys),
        body=inner_body,
        doc_string=f"loadtest.trips={SYMBOLS_PER_FRAME_FOR_FLOPS}",
    )
    outer_outs = [g.node("Identity", [name]) for name in symbols[: len(keys)]]
    outer_body = g.end_subgraph(
        [(g.node("Identity", [outer_cond]), BOOL, [])]
        + [(name, kind, dims) for name, (_, kind, dims) in zip(outer_outs, carried, strict=True)]
    )
    final = g.multi(
        "Loop",
        [
            g.node("ReduceMax", [lengths64], keepdims=0),
            g.constant("true", np.asarray(True)),
            *(initial[key] for key in keys),
        ],
        len(keys),
        body=outer_body,
        doc_string=f"loadtest.trips={shape.encoder_frames}",
    )
    return final[keys.index("tokens")], final[keys.index("count")]


def build(seed: int, shape: RnntShape = RNNT, name: str = "rnnt") -> onnx.ModelProto:
    """features FP32 [batch, T, 240] + feature_length INT64 [batch, 1] -> transcript."""
    g = GraphBuilder(name, seed)
    features = g.input("features", FLOAT, [BATCH, shape.frames, shape.features])
    length = g.input("feature_length", INT64, [BATCH, 1])
    lengths = g.node("Cast", [g.node("Reshape", [length, g.ints("flat", [-1])])], to=INT32)
    encoded, encoded_lengths = _encoder(g, shape, features, lengths)
    decoder, projected = _decoder_parameters(g, shape, encoded)
    batch = g.node(
        "Slice",
        [g.node("Shape", [features]), g.ints("start", [0]), g.ints("end", [1])],
    )
    tokens, count = _decode(g, shape, decoder, projected, encoded_lengths, batch)
    g.node("Identity", [tokens], out="transcript")
    g.node("Reshape", [count, g.ints("column", [-1, 1])], out="transcript_length")
    g.output("transcript", INT64, [BATCH, shape.frames])
    g.output("transcript_length", INT64, [BATCH, 1])
    return g.model(
        f"RNN-T (MLPerf LibriSpeech), encoder hidden {shape.encoder_hidden}, {shape.frames} "
        f"frames, greedy decode in graph, random weights ({g.parameter_count:,} parameters)"
    )
