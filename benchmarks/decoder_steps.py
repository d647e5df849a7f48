"""What the suite decoder (gpt_tiny_l2_d128) costs per step: prefill by input length, decode by
context, in-process and (with --triton) one request at a time through the embedded Triton.

In-process: onnxruntime with one intra-op thread, spinning off (as model.py runs it), the graph
alone (`Decoder.run`): a prefill of n random token ids on an empty cache, and a decode step of one
token against a cache of n; each the median of --repeats calls after one warm-up. `loop step`
adds what the serving loop does around a decode call (argmax, incremental detokenization).

--triton: for each input length, --requests requests in sequence (never two at once) over the
gRPC stream (tritonclient's sync client, its callback times the responses), max_tokens 32 with
ignore_eos; TTFT = first response − send, TPOT = (last − first) / 31, medians. The same prompts
through the in-process loop (`Decoder.tokens`, no server) give the native figures beside them.

    python benchmarks/decoder_steps.py [--lengths 16,64,256,512,960] [--repeats 30] [--triton]
"""

from __future__ import annotations

import argparse
import functools
import os
import queue
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from results_file import Output, add_output_arguments, claim_output, footer, header

from loadtest.models import build_repository, gpt
from loadtest.models.decoding import Decoder

NAME = "gpt_tiny_l2_d128"
SHAPE = gpt.GPT_TINY_L2_D128
ANSWER = 32


def _median_ms(call: Callable[[], object], repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def in_process(decoder: Decoder, lengths: list[int], repeats: int, out: Output) -> None:
    out("in-process (onnxruntime, 1 intra-op thread, spinning off), medians:")
    out("  tokens  prefill ms  prefill GFLOP/s  decode ms (ctx n)  loop step ms  decode MFLOP")
    rng = np.random.default_rng(0)
    for n in lengths:
        ids = [int(i) for i in rng.integers(1, SHAPE.vocab, n)]
        prefill = _median_ms(functools.partial(decoder.run, ids, None), repeats)
        _, *cache = decoder.run(ids, None)
        decode = _median_ms(functools.partial(decoder.run, [7], cache), repeats)
        steps = min(repeats, SHAPE.context - n - 1)
        generation = decoder.start(ids[:-1], steps + 2, ignore_eos=True)
        generation.step()  # the prefill: later steps are decode steps at context n and up
        step = _median_ms(generation.step, steps)
        rate = SHAPE.prefill_flops(n) / (prefill / 1e3) / 1e9
        out(
            f"  {n:6}  {prefill:10.3f}  {rate:15.2f}  {decode:17.3f}  {step:12.3f}  "
            f"{SHAPE.flops_per_token(n) / 1e6:12.2f}"
        )


def _prompt(decoder: Decoder, tokens: int, rng: np.random.Generator) -> tuple[str, int]:
    """Text of about `tokens` tokens (random lowercase words), and its token count."""
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz     ", dtype=np.uint8)
    text = ""
    while len(decoder.encode(text)) < tokens:
        text += letters[rng.integers(0, len(letters), 64)].tobytes().decode()
    ids = decoder.encode(text)[:tokens]
    text = decoder.tokenizer.decode(ids)
    return text, len(decoder.encode(text))


def _triton_answer(client: Any, text: str, answers: queue.Queue[Any]) -> list[float]:
    import tritonclient.grpc as grpcclient

    inputs = []
    for name, datatype, value in (
        ("text_input", "BYTES", np.array([text.encode()], dtype=object)),
        ("max_tokens", "INT32", np.array([ANSWER], dtype=np.int32)),
        ("stream", "BOOL", np.array([True])),
        ("ignore_eos", "BOOL", np.array([True])),
    ):
        tensor = grpcclient.InferInput(name, [1], datatype)
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    sent = time.perf_counter()
    client.async_stream_infer(NAME, inputs)
    times = []
    while True:
        result, error, at = answers.get(timeout=60)
        if error is not None:
            raise RuntimeError(str(error))
        times.append(at - sent)
        if result.get_response().parameters["triton_final_response"].bool_param:
            return times


def _native_answer(decoder: Decoder, text: str) -> list[float]:
    started = time.perf_counter()
    return [time.perf_counter() - started for _ in decoder.tokens(text, ANSWER, ignore_eos=True)]


def _figures(times: list[list[float]]) -> tuple[float, float]:
    ttft = statistics.median(t[0] for t in times) * 1e3
    tpot = statistics.median((t[-1] - t[0]) / (len(t) - 1) for t in times) * 1e3
    return ttft, tpot


def through_triton(
    repository: Path, decoder: Decoder, lengths: list[int], requests: int, out: Output
) -> None:
    import tritonclient.grpc as grpcclient

    from loadtest.server.embedded import EmbeddedTriton

    out(f"\none request at a time, max_tokens {ANSWER}, ignore_eos; medians over {requests}:")
    out("  tokens  Triton TTFT ms  native TTFT ms  Triton TPOT ms  native TPOT ms")
    rng = np.random.default_rng(1)
    with EmbeddedTriton(repository, models=[NAME]) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        answers: queue.Queue[tuple[object, object, float]] = queue.Queue()
        client.start_stream(
            callback=lambda result, error: answers.put((result, error, time.perf_counter()))
        )
        try:
            for n in lengths:
                text, actual = _prompt(decoder, min(n, SHAPE.context - ANSWER), rng)
                _triton_answer(client, text, answers)  # warm-up
                triton = [_triton_answer(client, text, answers) for _ in range(requests)]
                native = [_native_answer(decoder, text) for _ in range(requests)]
                (t_ttft, t_tpot), (n_ttft, n_tpot) = _figures(triton), _figures(native)
                out(f"  {actual:6}  {t_ttft:14.3f}  {n_ttft:14.3f}  {t_tpot:14.3f}  {n_tpot:14.3f}")
        finally:
            client.stop_stream()
            client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--lengths", default="16,64,256,512,960", help="input tokens, comma-separated"
    )
    parser.add_argument("--repeats", type=int, default=30, help="calls per in-process median")
    parser.add_argument("--triton", action="store_true", help="also through the embedded Triton")
    parser.add_argument("--requests", type=int, default=10, help="requests per length (--triton)")
    add_output_arguments(parser, "decoder-steps")
    args = parser.parse_args()
    try:
        lengths = [int(v) for v in args.lengths.split(",") if v.strip()]
    except ValueError:
        parser.error("--lengths takes integers, e.g. 16,64,256")
    if not lengths or not all(0 < n < SHAPE.context for n in lengths):
        parser.error(f"--lengths must be between 1 and {SHAPE.context - 1} tokens")
    if args.repeats < 1 or args.requests < 1:
        parser.error("--repeats and --requests must be ≥ 1")
    output = claim_output(parser, args.output, args.force, "decoder-steps")
    out = Output()
    header(out, "decoder_steps.py", len(os.sched_getaffinity(0)))
    out(
        f"model {NAME}: {SHAPE.layers} layers, d_model {SHAPE.d_model}, {SHAPE.heads} heads, "
        f"FFN {SHAPE.ffn}, vocab {SHAPE.vocab}, context {SHAPE.context}, "
        f"{SHAPE.parameter_count:,} parameters (seed 0)"
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            repository = Path(tmp)
            build_repository(repository, [NAME])
            version = repository / NAME / "1"
            decoder = Decoder(str(version / "model.onnx"), str(version / "tokenizer.json"))
            in_process(decoder, lengths, args.repeats, out)
            if args.triton:
                through_triton(repository, decoder, lengths, args.requests, out)
    finally:
        footer(out)
        out.write(output)


if __name__ == "__main__":
    main()
