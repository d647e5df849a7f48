"""The suite decoder served by Triton's Python backend: a decoupled model that streams real tokens.

The build copies this file as `<repo>/<model>/1/model.py`, beside model.onnx, tokenizer.json and
decoding.py (the generation loop, loaded from that directory: it runs inside Triton's Python stub
and imports nothing from loadtest).

Interface (TensorRT-LLM's names, as llm_known's): inputs `text_input` (BYTES), `max_tokens`
(INT32), `stream` (BOOL), optional `ignore_eos` (BOOL, default false) and `min_tokens` (INT32,
default 0); outputs `text_output` (BYTES: the text the answer gained with this response) and
`num_output_tokens` (UINT32: the tokens in this response, vLLM's per-response delta). Streamed:
one response per token, FINAL on the last data response. `stream = false`: one response with the
whole text and count. A bad request (max_tokens < 1, min_tokens > max_tokens, a prompt that does
not fit the context) is an error response.

Concurrency (`async def execute`, decoupled models, Python backend ≥ 24.04): each request is a
coroutine on the instance's event loop, and every model call (a request's prefill, or one decode
step) runs on one worker thread in the order asked (decoding.StepRunner), so prefills and decode
steps of concurrent requests take turns on the CPU: no sleeps, no batching. A cancelled request
(`response_sender.is_cancelled()`) stops before its next step and still sends FINAL.
"""

import asyncio
import importlib.util
import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _load_decoding(directory):
    """decoding.py from the model's version directory (not from loadtest: see the docstring)."""
    path = os.path.join(directory, "decoding.py")
    spec = importlib.util.spec_from_file_location("loadtest_suite_decoding", path)
    if spec is None or spec.loader is None:
        raise pb_utils.TritonModelException(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def _scalar(request, name, default):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    return tensor.as_numpy().reshape(-1)[0]


def _response(text, tokens):
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor("text_output", np.array([text.encode("utf-8")], dtype=np.object_)),
            pb_utils.Tensor("num_output_tokens", np.array([tokens], dtype=np.uint32)),
        ]
    )


def _error(message):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        directory = os.path.join(args["model_repository"], args["model_version"])
        decoding = _load_decoding(directory)
        self.name = args["model_name"]
        threads = int(parameters.get("intra_op_thread_count", "1") or 1)
        self.decoder = decoding.Decoder(
            os.path.join(directory, "model.onnx"),
            os.path.join(directory, "tokenizer.json"),
            threads,
        )
        self.steps = decoding.StepRunner()

    async def execute(self, requests):
        await asyncio.gather(*(self._answer(request) for request in requests))
        return None

    async def _answer(self, request):
        sender = request.get_response_sender()
        try:
            raw = _scalar(request, "text_input", b"")
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            max_tokens = int(_scalar(request, "max_tokens", 16))
            stream = bool(_scalar(request, "stream", True))
            ignore_eos = bool(_scalar(request, "ignore_eos", False))
            min_tokens = int(_scalar(request, "min_tokens", 0))
            generation = self.decoder.start(
                self.decoder.encode(text), max_tokens, ignore_eos, min_tokens
            )
        except Exception as exc:  # a bad request is the query's error, never a crash
            sender.send(_error(str(exc)), FINAL)
            return
        pieces = []
        try:
            while not generation.finished:
                if sender.is_cancelled():
                    sender.send(flags=FINAL)
                    pb_utils.Logger.log_info(
                        f"{self.name}: cancelled after {len(generation.ids)} of {max_tokens} tokens"
                    )
                    return
                token = await self.steps.step(generation)
                if stream:
                    sender.send(_response(token.text, 1), FINAL if generation.finished else 0)
                else:
                    pieces.append(token.text)
        except Exception as exc:
            sender.send(_error(f"{self.name}: generation failed: {exc}"), FINAL)
            return
        if not stream:
            sender.send(_response("".join(pieces), len(generation.ids)), FINAL)

    def finalize(self):
        self.steps.close()
