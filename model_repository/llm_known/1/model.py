"""llm_known: a decoupled Python-backend model whose streamed answer has a known timing.

The ruler that proves the streaming meter (issue #28). It speaks TensorRT-LLM's interface:
inputs `text_input` (BYTES), `max_tokens` (INT32), `stream` (BOOL), optional `ignore_eos` (BOOL)
and `min_tokens` (INT32); outputs `text_output` (BYTES) and `num_output_tokens` (UINT32, the
tokens in *this* response, vLLM's per-response delta). FINAL is set on the last data response.
A request whose optional `return_num_input_tokens` (BOOL) is true also gets `num_input_tokens`
(UINT32, its ISL) in every response: Triton's OpenAI front end sends that flag to a
TensorRT-LLM-style model and reports `usage` only when both counts come back (the config that
declares it is docker/openai_models/llm_known/config.pbtxt; the suite's config does not).

Timing, from the moment `execute` sees the request (config.pbtxt parameters, in ms):
- the first token is due at  a + b × ISL  (ISL = whitespace-separated words of text_input),
- token k (0-based) at       a + b × ISL + k × c,
so the answer has exactly max_tokens tokens (it never stops early: no EOS), TTFT = a + b·ISL and
TPOT = c exactly. Deadlines are absolute (no drift: a late wake-up delays one token, not the rest).
With stream = false the whole answer comes in one response when the last token is due.

`async def execute` (decoupled models, Python backend ≥ 24.04): every request is a coroutine on
the instance's event loop, so by default requests never queue behind each other (an
infinite-server model: the answer does not depend on load). Two optional parameters, for the
queueing benchmark (benchmarks/stream_queueing.py), which sets them in a copy of this model:
- `max_concurrent_requests` = k > 0: at most k requests are answered at once, the others wait
  in arrival order (an asyncio.Semaphore, FIFO), so the model is a k-server queue whose service
  time is a + b·ISL + c·(max_tokens − 1) and the timing above runs from the request's start;
- `log_timing` = 1: one log line per request with the first word of its prompt (a tag the
  client can give each request) and the CLOCK_MONOTONIC times (ns) of its arrival, its start,
  its first and its last response (Linux shares that clock between processes, so a client on
  the same host can set them against its own schedule: the server's own truth).

A cancelled request (client cancel or deadline, `response_sender.is_cancelled()`, ≥ 23.10)
stops at the next token and still sends FINAL, as the Python backend requires.
"""

import asyncio
import time

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _parameter(config, key, default):
    entry = config.get("parameters", {}).get(key)
    return float(entry["string_value"]) if entry else default


def _scalar(request, name, default):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    return tensor.as_numpy().reshape(-1)[0]


def _tag(request):
    """The first word of the request's prompt (at most 32 characters), "-" without one."""
    try:
        raw = _scalar(request, "text_input", b"")
    except Exception:  # a malformed request is answered with its error; its tag does not matter
        return "-"
    words = raw.decode("utf-8", "replace").split() if isinstance(raw, bytes) else []
    return words[0][:32] if words else "-"


def _response(text, tokens, input_tokens=None):
    outputs = [
        pb_utils.Tensor("text_output", np.array([text], dtype=np.object_)),
        pb_utils.Tensor("num_output_tokens", np.array([tokens], dtype=np.uint32)),
    ]
    if input_tokens is not None:
        outputs.append(pb_utils.Tensor("num_input_tokens", np.array([input_tokens], np.uint32)))
    return pb_utils.InferenceResponse(output_tensors=outputs)


class TritonPythonModel:
    def initialize(self, args):
        import json

        config = json.loads(args["model_config"])
        self.base_ms = _parameter(config, "ttft_base_ms", 250.0)  # a
        self.per_input_ms = _parameter(config, "ttft_per_input_token_ms", 2.0)  # b
        self.per_output_ms = _parameter(config, "ms_per_output_token", 20.0)  # c
        servers = int(_parameter(config, "max_concurrent_requests", 0))
        self.servers = asyncio.Semaphore(servers) if servers > 0 else None
        self.log_timing = _parameter(config, "log_timing", 0) == 1

    async def execute(self, requests):
        await asyncio.gather(*(self._queued(request) for request in requests))
        return None

    async def _queued(self, request):
        arrived = time.monotonic_ns()
        tag = _tag(request) if self.log_timing else ""  # read before the request is answered
        if self.servers is None:
            times = await self._answer(request)
        else:
            async with self.servers:
                times = await self._answer(request)
        if self.log_timing and times is not None:
            started, first, last = times
            pb_utils.Logger.log_info(
                f"llm_known timing: tag={tag} arrived={arrived} started={started} "
                f"first={first} last={last}"
            )

    async def _answer(self, request):
        """The request's answer, by the law above; (start, first, last response) in
        CLOCK_MONOTONIC ns when it was answered in full, else None."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        started = time.monotonic_ns()
        first_sent = 0
        sender = request.get_response_sender()
        try:
            raw = _scalar(request, "text_input", b"")
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            max_tokens = int(_scalar(request, "max_tokens", 16))
            stream = bool(_scalar(request, "stream", True))
            min_tokens = int(_scalar(request, "min_tokens", 0))
            count_input = bool(_scalar(request, "return_num_input_tokens", False))
        except Exception as exc:  # a malformed request is the query's error, never a crash
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))), FINAL)
            return
        if max_tokens < 1 or min_tokens > max_tokens:
            message = f"max_tokens must be ≥ 1 and ≥ min_tokens (got {max_tokens}, {min_tokens})"
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(message)), FINAL)
            return
        isl = len(text.split())
        input_tokens = isl if count_input else None
        first = start + (self.base_ms + self.per_input_ms * isl) / 1000.0
        words = []
        for k in range(max_tokens):
            await asyncio.sleep(max(0.0, first + k * self.per_output_ms / 1000.0 - loop.time()))
            if sender.is_cancelled():
                sender.send(flags=FINAL)
                pb_utils.Logger.log_info(f"llm_known: cancelled after {k} of {max_tokens} tokens")
                return
            last = k == max_tokens - 1
            if stream:
                sender.send(_response(f"t{k} ", 1, input_tokens), FINAL if last else 0)
                first_sent = first_sent or time.monotonic_ns()
            else:
                words.append(f"t{k} ")
        if not stream:
            sender.send(_response("".join(words), max_tokens, input_tokens), FINAL)
            first_sent = time.monotonic_ns()
        return started, first_sent, time.monotonic_ns()
