"""The two pieces of protobuf's wire format the load path writes by hand: a varint, and a
length-delimited field. Why by hand: a prebuilt request gets only its `id` appended per query,
and the stub's prebuilt responses likewise, which is a few byte joins instead of a protobuf build
(a field written again replaces the earlier one; fields may come in any order). ONNX files are
streamed with the same two (models/onnx_io.py)."""

from __future__ import annotations

LENGTH_DELIMITED = 2  # the wire type of strings, bytes and embedded messages


def varint(value: int) -> bytes:
    """An unsigned varint: seven bits a byte, low bits first, the high bit on all but the last."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def length_delimited(field: int, value: bytes) -> bytes:
    """Field number `field` holding `value` (a string, bytes or a serialized message)."""
    return varint(field << 3 | LENGTH_DELIMITED) + varint(len(value)) + value
