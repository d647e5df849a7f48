"""The part of HTTP/2 (RFC 9113) that both ends of a unary gRPC call need, written once.

The wire gRPC client (grpc_wire.py) and the stub's gRPC server (stub/grpc_wire_server.py) share
it: frame layout, the frame reader, header blocks reassembled from HEADERS and CONTINUATION and
decoded by the `hpack` library through a cache (`HeaderBlocks`), SETTINGS, PING, and flow control
both ways (what this end may send on the connection and on each stream; what it grants the peer,
topped up as data arrives). Each end subclasses `Http2Connection` and says what a DATA frame, a
header block, a reset stream or a GOAWAY means to it.

Frames this end sends in reply to the peer (SETTINGS and PING acknowledgements, window updates,
flow-controlled data released by a window update) collect in `out` and go in one write at the end
of each read, or at the next `flush()`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, Protocol, TypeVar, cast

from hpack import Decoder
from hpack.exceptions import HPACKError

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = 0, 1, 2, 3, 4, 5, 6, 7
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = (
    1,
    2,
    3,
    4,
    5,
)
MAX_HEADER_LIST_SIZE = 6
MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65_535
DEFAULT_FRAME_SIZE = 16_384
LARGEST_FRAME_SIZE = 2**24 - 1
REFILL_AT = 2**30  # received bytes after which the connection window is topped up again
MAX_STREAM_ID = 2**31 - 1
NO_ERROR_CODE = 0x0
PROTOCOL_ERROR_CODE = 0x1
FLOW_CONTROL_ERROR_CODE = 0x3
REFUSED_STREAM_CODE = 0x7
CANCEL_CODE = 0x8
MAX_CACHED_BLOCKS = 64
# A header list (RFC 9113 6.5.2: names + values + 32 per field) over this fails its own stream
# (an end may advertise it as SETTINGS_MAX_HEADER_LIST_SIZE): hpack's own default limit.
DEFAULT_MAX_HEADER_LIST = 65_536
# Past these the connection goes (a COMPRESSION_ERROR): a header block is decoded whatever its
# size, to keep the HPACK table in step, but not without bound.
MAX_HEADER_BLOCK = 1 << 20  # compressed bytes of one block (HEADERS + CONTINUATIONs)
MAX_DECODED_HEADER_LIST = 16 << 20  # what one block may decode to
HEADER_FIELD_OVERHEAD = 32


def header_list_size(fields: list[tuple[bytes, bytes]]) -> int:
    """RFC 9113 6.5.2's size of a header list: what SETTINGS_MAX_HEADER_LIST_SIZE limits."""
    return sum(len(name) + len(value) for name, value in fields) + HEADER_FIELD_OVERHEAD * len(
        fields
    )


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return (
        len(payload).to_bytes(3, "big")
        + bytes((kind, flags))
        + stream_id.to_bytes(4, "big")
        + payload
    )


def unpadded(payload: bytes, flags: int) -> bytes:
    if not flags & PADDED:
        return payload
    pad = payload[0]
    return payload[1 : len(payload) - pad]


def settings_frame(settings: tuple[tuple[int, int], ...]) -> bytes:
    payload = b"".join(key.to_bytes(2, "big") + value.to_bytes(4, "big") for key, value in settings)
    return frame(SETTINGS, 0, 0, payload)


# The largest windows HTTP/2 allows, granted to the peer at once: what this end receives is read
# as it arrives, so the peer never waits on this end's windows.
GRANT_LARGEST_CONNECTION_WINDOW = frame(
    WINDOW_UPDATE, 0, 0, (MAX_WINDOW - DEFAULT_WINDOW).to_bytes(4, "big")
)


class HeaderBlocks:
    """HPACK decoding of one connection's header blocks (the `hpack` library's), cached.

    The decoding table is state shared by every block on a connection, so every block is
    decoded, in order, even one for a stream already given up. But a peer's blocks settle into
    a few that leave the table as it was (indexed fields, literals not indexed): what such a
    block decodes to holds until some block changes the table, so it is cached, and the cache
    is emptied whenever a block changes it (a test shows a stale entry would misread a status).
    Whether a block changed the table is read from the `hpack` table's size limit, entry count
    and newest entry (an insertion always puts a new entry first); `hpack` is pinned to 4.x.
    Decoding was ~half of the wire client's CPU per call without the cache (44 -> 22 µs).

    Each block is decoded whole however large its list (hpack would stop partway at its own
    64 KiB limit and leave the table half-updated, losing the connection), up to
    MAX_DECODED_HEADER_LIST; the list's size comes with it, for the caller to fail one stream.
    """

    def __init__(self) -> None:
        self.decoder = Decoder()
        self.decoder.max_header_list_size = MAX_DECODED_HEADER_LIST
        self.cached: dict[bytes, tuple[list[tuple[bytes, bytes]], int]] = {}

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        return self.decode_sized(block)[0]

    def decode_sized(self, block: bytes) -> tuple[list[tuple[bytes, bytes]], int]:
        """The block's fields and its header list size (`header_list_size`)."""
        decoded = self.cached.get(block)
        if decoded is not None:
            return decoded
        table = self.decoder.header_table
        entries = table.dynamic_entries
        size, count, newest = table.maxsize, len(entries), entries[0] if entries else None
        fields = cast(list[tuple[bytes, bytes]], self.decoder.decode(block, raw=True))
        unchanged = (
            table.maxsize == size
            and len(entries) == count
            and (entries[0] if entries else None) is newest
        )
        decoded = fields, header_list_size(fields)
        if not unchanged:
            self.cached.clear()
        elif len(self.cached) < MAX_CACHED_BLOCKS:
            self.cached[block] = decoded
        return decoded


class FlowControlled(Protocol):
    """A stream as flow control sees it: its window, and the bytes still to send on it."""

    window: int
    rest: memoryview


S = TypeVar("S", bound=FlowControlled)


class Http2Connection(asyncio.Protocol, Generic[S]):
    """One HTTP/2 connection, either end: reads frames, keeps the windows, writes data as they
    allow. Subclasses answer the hooks below (`_data`, `_headers`, ...)."""

    # Does a stream's last DATA frame end it (a client's request), or do trailers follow (a
    # server's answer, through `_all_written`)?
    DATA_ENDS_STREAM = True

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.blocks = HeaderBlocks()
        self.pending = b""  # received bytes not yet a whole frame
        self.streams: dict[int, S] = {}  # open streams, in the order they were opened
        self.blocked: deque[int] = deque()  # streams with bytes waiting for a window
        self.send_window = DEFAULT_WINDOW  # the peer's connection-level window
        self.initial_window = DEFAULT_WINDOW  # the peer's window for each new stream
        self.max_frame = DEFAULT_FRAME_SIZE  # the largest frame the peer takes
        self.received = 0  # DATA bytes since the connection window was last topped up
        self.header_block: tuple[int, int, list[bytes]] | None = None  # (stream, flags, parts)
        self.header_block_size = 0  # bytes in `header_block` so far
        self.max_header_list = DEFAULT_MAX_HEADER_LIST  # what this end takes on one stream
        self.out: list[bytes] = []  # frames to write at the end of this read

    # --- reading
    def data_received(self, data: bytes) -> None:
        buffer = self.pending + data if self.pending else data
        position = self._preface(buffer)
        if position < 0:
            return
        size = len(buffer)
        try:
            while size - position >= 9:
                length = int.from_bytes(buffer[position : position + 3], "big")
                end = position + 9 + length
                if end > size:
                    break
                kind = buffer[position + 3]
                flags = buffer[position + 4]
                stream_id = int.from_bytes(buffer[position + 5 : position + 9], "big") & MAX_WINDOW
                self._frame_in(kind, flags, stream_id, buffer[position + 9 : end])
                position = end
        except (HPACKError, ValueError, IndexError) as exc:
            self.out.clear()
            self._malformed(str(exc))
            return
        self.pending = buffer[position:]
        if self.received > REFILL_AT:
            self.out.append(frame(WINDOW_UPDATE, 0, 0, self.received.to_bytes(4, "big")))
            self.received = 0
        self.flush()

    def flush(self) -> None:
        """Write what `out` holds, in one write."""
        if self.out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def _frame_in(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self.header_block is not None and kind != CONTINUATION:
            raise ValueError("a header block was interrupted by another frame")
        if kind == DATA:
            self.received += len(payload)
            self._data(stream_id, flags, payload)
        elif kind == HEADERS:
            payload = unpadded(payload, flags)
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            self.header_block = (stream_id, flags, [payload])
            self.header_block_size = len(payload)
            if flags & END_HEADERS:
                self._header_block_done()
        elif kind == CONTINUATION:
            if self.header_block is None or self.header_block[0] != stream_id:
                raise ValueError("CONTINUATION without its HEADERS")
            self.header_block[2].append(payload)
            self.header_block_size += len(payload)
            if self.header_block_size > MAX_HEADER_BLOCK:
                raise ValueError(f"a header block over {MAX_HEADER_BLOCK} bytes")
            if flags & END_HEADERS:
                self._header_block_done()
        elif kind == SETTINGS:
            if not flags & ACK:
                self._settings(payload)
                self.out.append(frame(SETTINGS, ACK, 0))
                self._settings_received()
        elif kind == WINDOW_UPDATE:
            increment = int.from_bytes(payload[:4], "big") & MAX_WINDOW
            if stream_id == 0:
                self.send_window += increment
                if self.send_window > MAX_WINDOW:
                    raise ValueError("WINDOW_UPDATE past the largest window (flow-control error)")
            elif (stream := self.streams.get(stream_id)) is not None:
                stream.window += increment
                if stream.window > MAX_WINDOW:
                    self._stream_window_overflow(stream_id)
            self._write_blocked()
        elif kind == PING:
            if not flags & ACK:
                self.out.append(frame(PING, ACK, 0, payload))
            else:
                self._ping_acknowledged(payload)
        elif kind == RST_STREAM:
            self._reset_by_peer(stream_id, int.from_bytes(payload[:4], "big"))
        elif kind == GOAWAY:
            self._goaway(int.from_bytes(payload[:4], "big") & MAX_WINDOW)
        elif kind == PUSH_PROMISE:
            raise ValueError("PUSH_PROMISE though push is disabled")
        # PRIORITY and unknown frame types are ignored, as HTTP/2 requires.

    def _header_block_done(self) -> None:
        assert self.header_block is not None
        stream_id, flags, parts = self.header_block
        self.header_block = None
        fields, size = self.blocks.decode_sized(parts[0] if len(parts) == 1 else b"".join(parts))
        if size > self.max_header_list:
            self._header_list_too_large(stream_id, flags, size)
        else:
            self._headers(stream_id, flags, fields)

    def _settings(self, payload: bytes) -> None:
        for offset in range(0, len(payload) - len(payload) % 6, 6):
            key = int.from_bytes(payload[offset : offset + 2], "big")
            value = int.from_bytes(payload[offset + 2 : offset + 6], "big")
            if key == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ValueError(f"SETTINGS_INITIAL_WINDOW_SIZE {value} (flow-control error)")
                delta = value - self.initial_window
                self.initial_window = value
                for stream in self.streams.values():
                    stream.window += delta
            elif key == MAX_FRAME_SIZE:
                if not DEFAULT_FRAME_SIZE <= value <= LARGEST_FRAME_SIZE:
                    raise ValueError(f"SETTINGS_MAX_FRAME_SIZE {value} out of range")
                self.max_frame = value
            else:
                self._setting(key, value)
        self._write_blocked()

    # --- writing data as the windows allow
    def _data_frames(self, stream_id: int, stream: S) -> None:
        """Append DATA frames for as much of the stream's `rest` as the windows allow; once it
        is all out, `_all_written` says what follows."""
        while stream.rest:
            size = min(len(stream.rest), self.max_frame, self.send_window, stream.window)
            if size <= 0:
                return
            piece, stream.rest = stream.rest[:size], stream.rest[size:]
            flags = END_STREAM if not stream.rest and self._data_ends(stream) else 0
            self.out.append(frame(DATA, flags, stream_id, bytes(piece)))
            self.send_window -= size
            stream.window -= size
        self._all_written(stream_id, stream)

    def _more_data(self, stream_id: int, stream: S, data: bytes) -> None:
        """More bytes on a stream that stays open (a streaming call's next message, either
        end): one DATA frame now when the windows and the frame size allow and nothing waits
        before it, else queued behind what waits, written as WINDOW_UPDATEs allow."""
        size = len(data)
        if (
            not stream.rest
            and size <= self.max_frame
            and size <= self.send_window
            and size <= stream.window
        ):
            self.out.append(frame(DATA, 0, stream_id, data))
            self.send_window -= size
            stream.window -= size
        elif stream.rest:  # already waiting for a window (and in `blocked`): after it
            stream.rest = memoryview(bytes(stream.rest) + data)
        else:
            stream.rest = memoryview(data)
            self._data_frames(stream_id, stream)
            if stream.rest:
                self.blocked.append(stream_id)

    def _write_blocked(self) -> None:
        for _ in range(len(self.blocked)):
            stream_id = self.blocked.popleft()
            stream = self.streams.get(stream_id)
            if stream is None:
                continue
            self._data_frames(stream_id, stream)
            if stream.rest and stream_id in self.streams:
                self.blocked.append(stream_id)

    # --- hooks
    def _preface(self, buffer: bytes) -> int:
        """Where frames start in `buffer` (a server first reads the client's preface); -1: stop."""
        return 0

    def _data(self, stream_id: int, flags: int, payload: bytes) -> None:
        """A DATA frame (already counted against the connection's receive window)."""

    def _headers(self, stream_id: int, flags: int, fields: list[tuple[bytes, bytes]]) -> None:
        """A whole header block, decoded; `flags` are its HEADERS frame's."""

    def _header_list_too_large(self, stream_id: int, flags: int, size: int) -> None:
        """A header block (decoded, so the HPACK table is in step) whose list is over
        `max_header_list`: by default the connection ends, as hpack's own limit would end it."""
        raise ValueError(f"a header list of {size} bytes, over {self.max_header_list}")

    def _ping_acknowledged(self, payload: bytes) -> None:
        """The peer acknowledged a PING this end sent."""

    def _setting(self, key: int, value: int) -> None:
        """A setting other than the windows and the frame size."""

    def _settings_received(self) -> None:
        """The peer's SETTINGS are applied (and acknowledged in `out`)."""

    def _stream_window_overflow(self, stream_id: int) -> None:
        """The peer raised a stream's window past 2^31 - 1: a stream error."""

    def _reset_by_peer(self, stream_id: int, code: int) -> None:
        """RST_STREAM with this error code."""

    def _goaway(self, last_stream_id: int) -> None:
        """GOAWAY: streams above `last_stream_id` were not taken."""

    def _all_written(self, stream_id: int, stream: S) -> None:
        """A stream's `rest` has all been written."""

    def _data_ends(self, stream: S) -> bool:
        """Does the last DATA frame of the stream's `rest` end the stream? (DATA_ENDS_STREAM;
        a streaming call's client says so only once it has closed its side.)"""
        return self.DATA_ENDS_STREAM

    def _malformed(self, reason: str) -> None:
        """The peer broke the protocol: end the connection."""
