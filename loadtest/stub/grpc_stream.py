"""The stub's gRPC ModelStreamInfer: streamed answers for many requests on one stream.

As Triton does for a decoupled model (docs/STREAMING.md): each request on the stream is answered
by one response per token, each echoing the request's id and carrying `text_output` and
`num_output_tokens` = 1, the last with the parameter `triton_final_response` = true. Tokens are
timed by the model's StreamLaw (catalog.py), as the stub's generate_stream answers are (sse.py's
TokenPlan); a `stub_error_after` input sends that many tokens, then a response with an
`error_message`. Served by the grpc.aio side (`loadtest stub --grpc-server grpcio`); the lean
wire side answers the same from grpc_wire_stream.py (tests/test_stub_grpc_wire.py compares them).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from loadtest.stub.catalog import Behaviour, Catalog
from loadtest.stub.sse import MID_STREAM_ERROR, TokenPlan

FINAL_PARAMETER = "triton_final_response"
_COUNT_ONE = np.array([1], dtype="<u4").tobytes()
_NUMERIC = {"INT32": "<i4", "INT64": "<i8", "UINT32": "<u4", "BOOL": "?"}


def request_fields(request: pb.ModelInferRequest) -> dict[str, Any]:
    """The request's inputs as plain values: BYTES as text (elements joined by spaces), numbers
    as their first element; what TokenPlan reads."""
    fields: dict[str, Any] = {}
    for k, tensor in enumerate(request.inputs):
        if k >= len(request.raw_input_contents):
            break
        raw = request.raw_input_contents[k]
        if tensor.datatype == "BYTES":
            texts, at = [], 0
            while at + 4 <= len(raw):
                (length,) = struct.unpack_from("<I", raw, at)
                texts.append(raw[at + 4 : at + 4 + length].decode(errors="replace"))
                at += 4 + length
            fields[tensor.name] = " ".join(texts)
        elif tensor.datatype in _NUMERIC and raw:
            fields[tensor.name] = np.frombuffer(raw, dtype=_NUMERIC[tensor.datatype])[0].item()
    return fields


def _response(model: str, request_id: str, k: int, final: bool) -> pb.ModelStreamInferResponse:
    response = pb.ModelInferResponse(model_name=model, model_version="1", id=request_id)
    response.outputs.add(name="text_output", datatype="BYTES", shape=[1])
    response.outputs.add(name="num_output_tokens", datatype="UINT32", shape=[1])
    text = f"t{k} ".encode()
    response.raw_output_contents.extend([struct.pack("<I", len(text)) + text, _COUNT_ONE])
    response.parameters[FINAL_PARAMETER].bool_param = final
    return pb.ModelStreamInferResponse(infer_response=response)


def _error(model: str, request_id: str) -> pb.ModelStreamInferResponse:
    return pb.ModelStreamInferResponse(
        error_message=MID_STREAM_ERROR,
        infer_response=pb.ModelInferResponse(model_name=model, id=request_id),
    )


async def model_stream_infer(
    catalog: Catalog, behaviour: Behaviour, requests: AsyncIterator[pb.ModelInferRequest]
) -> AsyncIterator[pb.ModelStreamInferResponse]:
    """The responses of one ModelStreamInfer call: every request's tokens as they fall due;
    the call ends once the client has closed its side and every answer is out."""
    loop = asyncio.get_running_loop()
    outbox: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
    open_answers = [0]
    reading = [True]

    def answered() -> None:
        open_answers[0] -= 1
        if not reading[0] and not open_answers[0]:
            outbox.put_nowait(None)

    def token(model: str, request_id: str, plan: TokenPlan, start: float, k: int) -> None:
        last = k + 1 == plan.tokens
        outbox.put_nowait(_response(model, request_id, k, last and plan.error_after is None))
        if not last:
            loop.call_at(start + plan.due_s[k + 1], token, model, request_id, plan, start, k + 1)
            return
        if plan.error_after is not None:
            outbox.put_nowait(_error(model, request_id))
        answered()

    async def read() -> None:
        async for request in requests:
            behaviour.arrived()
            plan = TokenPlan(catalog.model(request.model_name), request_fields(request))
            open_answers[0] += 1
            if plan.tokens == 0:
                outbox.put_nowait(_error(request.model_name, request.id))
                answered()
                continue
            start = loop.time()
            loop.call_at(
                start + plan.due_s[0], token, request.model_name, request.id, plan, start, 0
            )
        reading[0] = False
        if not open_answers[0]:
            outbox.put_nowait(None)

    reader = loop.create_task(read())
    try:
        while True:
            response = await outbox.get()
            if response is None:
                return
            yield response
    finally:
        reader.cancel()
