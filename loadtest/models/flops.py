"""Floating-point operations per sample of an ONNX model, counted from its graph.

What is counted: 2 x multiply-adds of Conv, ConvTranspose, Gemm, MatMul and LSTM — the ops that
are the work of every suite model; element-wise ops, normalisation, pooling, NMS and sorting are
not (they are a few percent of the arithmetic, though NMS can be a real share of the *time*).
Shapes come from ONNX shape inference with the batch dimension set to 1, so the figure is per
sample. Loop bodies count once per trip, the trip count taken from the Loop node's doc_string
(`loadtest.trips=N`), else 1: for rnnt that is every encoder frame with one prediction step
each, a lower bound (a frame that emits k labels runs k + 1 steps).

Works on a skeleton of the model (its graph and small constants, not its weights), so counting
bert_large's FLOPs does not copy 1.3 GB; the build counts each model once, from the proto it
generated, and records the figure in the build stamp.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import onnx
from onnx import shape_inference

from loadtest.models.onnx_graph import BATCH

TRIPS = re.compile(r"loadtest\.trips=(\d+)")
Shapes = dict[str, tuple[int, ...]]


def _pin_dims(graph: onnx.GraphProto, pins: Mapping[str, int]) -> None:
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in pins:
                dim.dim_value = pins[dim.dim_param]
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _pin_dims(attribute.g, pins)


def _shapes(graph: onnx.GraphProto, outer: Shapes) -> Shapes:
    shapes = dict(outer)
    for tensor in graph.initializer:
        shapes[tensor.name] = tuple(tensor.dims)
    for value in [*graph.input, *graph.output, *graph.value_info]:
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
    return shapes


def _node_flops(node: onnx.NodeProto, shapes: Shapes) -> int:
    def shape(index: int, outputs: bool = False) -> tuple[int, ...] | None:
        names = node.output if outputs else node.input
        return shapes.get(names[index]) if index < len(names) else None

    op = node.op_type
    if op == "Conv":
        out, weight = shape(0, outputs=True), shape(1)
        if out and weight:
            return 2 * math.prod(out) * math.prod(weight[1:])
    elif op == "ConvTranspose":
        x, weight = shape(0), shape(1)
        if x and weight:
            return 2 * math.prod(x) * math.prod(weight[1:])
    elif op in ("MatMul", "Gemm"):
        a, out = shape(0), shape(0, outputs=True)
        if a and out:
            transposed = op == "Gemm" and any(x.name == "transA" and x.i for x in node.attribute)
            depth = a[0] if transposed else a[-1]
            return 2 * math.prod(out) * depth
    elif op == "LSTM":
        x, weight, recurrent = shape(0), shape(1), shape(2)
        if x and weight and recurrent:
            seq, batch = x[0], x[1]
            directions, gates, inputs = weight
            return 2 * seq * batch * directions * gates * (inputs + recurrent[2])
    return 0


def _graph_flops(graph: onnx.GraphProto, outer: Shapes) -> int:
    shapes = _shapes(graph, outer)
    total = 0
    for node in graph.node:
        total += _node_flops(node, shapes)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                found = TRIPS.search(node.doc_string or "")
                trips = int(found.group(1)) if found else 1
                total += trips * _graph_flops(attribute.g, shapes)
    return total


SMALL_CONSTANT_BYTES = 4096


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy without the weights' bytes but with the small constants' (shape inference reads
    Reshape targets and Resize scales from them): kilobytes even for bert_large."""
    skeleton = onnx.ModelProto(ir_version=model.ir_version)
    skeleton.opset_import.extend(model.opset_import)
    graph = skeleton.graph
    graph.name = model.graph.name
    for field in ("node", "input", "output", "value_info"):
        getattr(graph, field).extend(getattr(model.graph, field))
    for tensor in model.graph.initializer:
        if len(tensor.raw_data) <= SMALL_CONSTANT_BYTES:
            graph.initializer.append(tensor)
        else:
            graph.initializer.add(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims)
    return skeleton


def count_flops(model: onnx.ModelProto, dims: Mapping[str, int] | None = None) -> int:
    """FLOPs per sample (see the module docstring); `model` is not modified. `dims` pins other
    symbolic dimensions (the decoder's: one new token on an empty cache, so its figure is the
    FLOPs of one token)."""
    skeleton = _skeleton(model)
    _pin_dims(skeleton.graph, {**(dims or {}), BATCH: 1})
    inferred = shape_inference.infer_shapes(skeleton, data_prop=True)
    return _graph_flops(inferred.graph, {})


def human_flops(flops: int) -> str:
    for unit, size in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if flops >= size:
            return f"{flops / size:.3g} {unit}"
    return f"{flops} FLOP"
