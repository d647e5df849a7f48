"""ONNX files at the protobuf wire level, so large models are never held twice in memory.

- `serialized_chunks(model)`: the bytes of `model.SerializeToString()`, one initializer at a
  time, for streaming a model to disk (and hashing it on the way).
- `scan_model(path)`: the model's graph (inputs, outputs, nodes, initializer names) without its
  weights.

Why the scan: checking that a repository's model.onnx matches its config should not cost a
1.3 GB read and 2.6 GB of memory in the client process (bert_large) just before Triton loads the
same file. The wire format is walked directly: the `raw_data` of each graph initializer is
skipped with a seek, everything else is kept and parsed as an ordinary ModelProto. A truncated
file or one that is not protobuf fails here as it would in a full parse; corruption *inside*
weight bytes is invisible (the build stamp's size and sha256 are what catch that).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

import onnx

from loadtest.wire.protobuf_fields import LENGTH_DELIMITED, varint

MODEL_GRAPH = 7  # ModelProto.graph
GRAPH_INITIALIZER = 5  # GraphProto.initializer
TENSOR_RAW_DATA = 9  # TensorProto.raw_data


class ScanError(ValueError):
    pass


def _tag(field: int) -> bytes:
    return varint(field << 3 | LENGTH_DELIMITED)


def _read_varint(stream: BinaryIO) -> int:
    value = shift = 0
    while True:
        byte = stream.read(1)
        if not byte:
            raise ScanError("truncated (end of file inside a field)")
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ScanError("malformed varint")


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ScanError("truncated (end of file inside a field)")
    return data


def _copy_fields(stream: BinaryIO, end: int, path: tuple[int, ...]) -> bytes:
    """Re-encode the fields in [tell, end), dropping initializer raw_data (by path)."""
    out = bytearray()
    while stream.tell() < end:
        tag = _read_varint(stream)
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise ScanError("field number 0: not a protobuf message")
        if wire == 0:
            out += varint(tag) + varint(_read_varint(stream))
        elif wire == 1:
            out += varint(tag) + _read_exact(stream, 8)
        elif wire == 5:
            out += varint(tag) + _read_exact(stream, 4)
        elif wire == 2:
            size = _read_varint(stream)
            start = stream.tell()
            if start + size > end:
                raise ScanError("truncated (a field runs past its message)")
            here = (*path, field)
            if here == (MODEL_GRAPH, GRAPH_INITIALIZER, TENSOR_RAW_DATA):
                stream.seek(size, 1)
                continue
            if here in ((MODEL_GRAPH,), (MODEL_GRAPH, GRAPH_INITIALIZER)):
                body = _copy_fields(stream, start + size, here)
            else:
                body = _read_exact(stream, size)
            out += varint(tag) + varint(len(body)) + body
        else:
            raise ScanError(f"wire type {wire}: not an ONNX model")
    if stream.tell() != end:
        raise ScanError("truncated (a field runs past its message)")
    return bytes(out)


def scan_model(path: str) -> onnx.ModelProto:
    """The model without initializer data; ScanError/DecodeError if the file is not ONNX."""
    with open(path, "rb") as stream:
        stream.seek(0, 2)
        end = stream.tell()
        stream.seek(0)
        skeleton = _copy_fields(stream, end, ())
    model = onnx.ModelProto()
    model.ParseFromString(skeleton)
    if not model.HasField("graph"):
        raise ScanError("no graph")
    return model


def _split_fields(message: Any, exclude: int, blank: Any) -> tuple[bytes, bytes]:
    """`message` serialized without field `exclude`: (fields numbered below it, those above)."""
    below, above = type(blank)(), type(blank)()
    for field, _value in message.ListFields():
        if field.number == exclude:
            continue
        target = below if field.number < exclude else above
        if field.label == field.LABEL_REPEATED:
            getattr(target, field.name).extend(getattr(message, field.name))
        elif field.type == field.TYPE_MESSAGE:
            getattr(target, field.name).CopyFrom(getattr(message, field.name))
        else:
            setattr(target, field.name, getattr(message, field.name))
    return below.SerializeToString(), above.SerializeToString()


def serialized_chunks(model: onnx.ModelProto) -> Iterator[bytes]:
    """`model.SerializeToString()` in pieces, one initializer at a time, same bytes.

    Protobuf serializes fields in field-number order, so the model is its fields below `graph`
    (7), then the length-delimited graph, then the rest; the graph likewise around its
    `initializer` field (5); the tests check the bytes equal SerializeToString's. Streaming
    keeps a 1.3 GB model from being serialized into one buffer, which took upb 15 s and 5 GB
    of extra memory for bert_large.
    """
    graph = model.graph
    graph_below, graph_above = _split_fields(graph, GRAPH_INITIALIZER, onnx.GraphProto())
    sizes = [tensor.ByteSize() for tensor in graph.initializer]
    initializer_tag = _tag(GRAPH_INITIALIZER)
    graph_size = len(graph_below) + len(graph_above)
    graph_size += sum(len(initializer_tag) + len(varint(size)) + size for size in sizes)
    model_below, model_above = _split_fields(model, MODEL_GRAPH, onnx.ModelProto())
    yield model_below + _tag(MODEL_GRAPH) + varint(graph_size) + graph_below
    for tensor, size in zip(graph.initializer, sizes, strict=True):
        yield initializer_tag + varint(size)
        yield tensor.SerializeToString()
    yield graph_above + model_above
