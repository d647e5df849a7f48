"""The wire gRPC server's ModelStreamInfer: many streamed requests on one call, no grpc.aio.

The same answers as the grpc.aio side's (grpc_stream.py), for the same reason the wire server
exists: served through grpc.aio, the stub's streamed tokens cost more CPU than the client that
reads them (0.5-0.6 cores for 10k tokens/s, stream-client-2026-12-06-1927), so it could not be the
streaming gRPC client's roofline. Each request on the call is answered by one
ModelStreamInferResponse per token, echoing the request's id, carrying `text_output` and
`num_output_tokens` = 1, the last with `triton_final_response` = true; tokens fall due by the
model's StreamLaw (sse.py's TokenPlan), all at once when the law is zero. A request whose plan
has no tokens, or a `stub_error_after` one after its tokens, gets a response with an
`error_message`, as Triton sends for a failed decoupled request. The client cancelling the call
(RST_STREAM) stops every answer on it, as a model honouring cancellation does.

A response's bytes are built once per (model, token index, final) and the request's `id` field
appended per request (a protobuf field may come in any order), so a token costs a few byte
joins, not a protobuf build.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

import numpy as np
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2 as pb

from loadtest.stub.catalog import Behaviour, Catalog
from loadtest.stub.grpc_stream import FINAL_PARAMETER, request_fields
from loadtest.stub.sse import MID_STREAM_ERROR, TokenPlan
from loadtest.wire.protobuf_fields import length_delimited

ID_FIELD = 3  # ModelInferResponse.id
_COUNT_ONE = np.array([1], dtype="<u4").tobytes()
_INFER_RESPONSE_FIELD = 2  # ModelStreamInferResponse.infer_response
_CACHED_TOKENS = 4096  # token indices whose responses are kept built (a bound on the cache)


class StreamMessages:
    """The framed ModelStreamInferResponse messages the stub sends, built once per shape."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, int, bool], bytes] = {}

    def token(self, model: str, id_field: bytes, k: int, final: bool) -> bytes:
        """Token k's response to the request whose serialized `id` field is `id_field`."""
        key = (model, k, final)
        inner = self._tokens.get(key)
        if inner is None:
            response = pb.ModelInferResponse(model_name=model, model_version="1")
            response.outputs.add(name="text_output", datatype="BYTES", shape=[1])
            response.outputs.add(name="num_output_tokens", datatype="UINT32", shape=[1])
            text = f"t{k} ".encode()
            response.raw_output_contents.extend([struct.pack("<I", len(text)) + text, _COUNT_ONE])
            response.parameters[FINAL_PARAMETER].bool_param = final
            inner = response.SerializeToString()
            if k < _CACHED_TOKENS:
                self._tokens[key] = inner
        return _framed(length_delimited(_INFER_RESPONSE_FIELD, inner + id_field))

    @staticmethod
    def error(model: str, request_id: str) -> bytes:
        response = pb.ModelStreamInferResponse(
            error_message=MID_STREAM_ERROR,
            infer_response=pb.ModelInferResponse(model_name=model, id=request_id),
        )
        return _framed(response.SerializeToString())


def _framed(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


class StreamCall:
    """One ModelStreamInfer call's server side: reads its requests as their DATA comes,
    answers each through `write` (framed messages, in order), and calls `finished` once the
    client has closed its side and every answer is out."""

    def __init__(
        self,
        catalog: Catalog,
        behaviour: Behaviour,
        messages: StreamMessages,
        write: Callable[[bytes], None],
        finished: Callable[[], None],
    ) -> None:
        self.catalog = catalog
        self.behaviour = behaviour
        self.messages = messages
        self.write = write
        self.finished = finished
        self.inbox = b""
        self.open_answers = 0
        self.reading = True
        self.timers: dict[int, asyncio.TimerHandle] = {}  # each timed answer's next token
        self._next_answer = 0

    def data(self, data: bytes) -> str:
        """The call's DATA, in order: each whole request answered. "" or what is wrong."""
        if self.inbox:
            data = self.inbox + data
        size, at = len(data), 0
        while size - at >= 5:
            end = at + 5 + int.from_bytes(data[at + 1 : at + 5], "big")
            if end > size:
                break
            if data[at] != 0:
                return "a compressed request (the stub takes none)"
            try:
                request = pb.ModelInferRequest.FromString(data[at + 5 : end])
            except DecodeError:
                return "a request that does not parse"
            at = end
            self._answer(request)
        self.inbox = data[at:]
        return ""

    def half_close(self) -> None:
        self.reading = False
        if self.inbox:
            self.inbox = b""  # a request cut short by the client's end: never answered
        if not self.open_answers:
            self.finished()

    def cancel(self) -> None:
        """The client gave the call up (or the connection went): no more tokens."""
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()

    def _answer(self, request: pb.ModelInferRequest) -> None:
        self.behaviour.arrived()
        model = request.model_name
        plan = TokenPlan(self.catalog.model(model), request_fields(request))
        if plan.tokens == 0:
            self.write(self.messages.error(model, request.id))
            return
        self.open_answers += 1
        id_field = length_delimited(ID_FIELD, request.id.encode())
        if plan.instant:
            self.write(b"".join(self._token(model, id_field, plan, k) for k in range(plan.tokens)))
            self._answered(model, request.id, plan)
            return
        loop = asyncio.get_running_loop()
        self._next_answer += 1
        key = self._next_answer
        start = loop.time()

        def token(k: int) -> None:
            self.write(self._token(model, id_field, plan, k))
            if k + 1 < plan.tokens:
                self.timers[key] = loop.call_at(start + plan.due_s[k + 1], token, k + 1)
                return
            del self.timers[key]
            self._answered(model, request.id, plan)

        self.timers[key] = loop.call_at(start + plan.due_s[0], token, 0)

    def _token(self, model: str, id_field: bytes, plan: TokenPlan, k: int) -> bytes:
        final = k + 1 == plan.tokens and plan.error_after is None
        return self.messages.token(model, id_field, k, final)

    def _answered(self, model: str, request_id: str, plan: TokenPlan) -> None:
        if plan.error_after is not None:
            self.write(self.messages.error(model, request_id))
        self.open_answers -= 1
        if not self.reading and not self.open_answers:
            self.finished()
