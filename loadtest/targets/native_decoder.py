"""The suite decoder run in this process and streamed: the baseline a Triton-served decoder is
compared against (issue #29, deliverable 5).

Same program as the Triton side: the generation loop is models/decoding.py, the file the build
copies beside the model's model.py, and the scheduling is the same too: every query is a
coroutine on the event loop, every model call (a prefill or one decode step) runs on one
`StepRunner` thread in the order asked, with one intra-op thread and spinning off. Each query
tokenizes its prompt when it arrives, as the server does per request. What Triton adds on top
(the gRPC stream, the request into the Python stub, one response per token back out) is what a
comparison of the two measures.

A `Target` that declares `streams_parts`: each token is a part, the final count is the answer's
tokens, as the Triton stream targets report them, so the runners, the token figures and the
verdicts read it unchanged. `--timeout` ends a query as "timeout" and stops its generation before
the next step (as a cancelled request stops in model.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from google.protobuf import json_format

from loadtest.core.records import TIMEOUT
from loadtest.core.sessions import Message
from loadtest.core.settings import SharedMemoryKind
from loadtest.core.target import (
    Done,
    Kept,
    ModelSpec,
    Parts,
    Sample,
    TargetCapabilities,
    Written,
)
from loadtest.errors import LoadtestError, TargetError
from loadtest.models.decoding import Decoder, Generation, GenerationError, StepRunner
from loadtest.models.gpt_files import TOKENIZER
from loadtest.targets.batcher import BatcherStats
from loadtest.targets.native import NativeOptions
from loadtest.targets.triton_common import error_kind, model_spec_from_config

MODEL_FILE = "model.onnx"


@dataclass(frozen=True)
class Request:
    """One sample read as the model reads its inputs (defaults as model.py's)."""

    text: str
    max_tokens: int
    stream: bool
    ignore_eos: bool
    min_tokens: int

    @classmethod
    def of(cls, sample: Sample) -> Request:
        def scalar(name: str, default: Any) -> Any:
            tensor = sample.get(name)
            return default if tensor is None else np.asarray(tensor).reshape(-1)[0]

        raw = scalar("text_input", b"")
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return cls(
            text,
            int(scalar("max_tokens", 16)),
            bool(scalar("stream", True)),
            bool(scalar("ignore_eos", False)),
            int(scalar("min_tokens", 0)),
        )


class NativeDecoderTarget:
    """The decoder's loop in-process, streamed token by token to the runner."""

    def __init__(self, version_dir: Path, spec: ModelSpec, threads: int = 1, timeout_s: float = 0):
        self.version_dir = version_dir
        self.spec = spec
        self.threads = threads
        self.timeout_s = timeout_s
        self._decoder: Decoder | None = None
        self._steps: StepRunner | None = None
        self._requests: list[Request] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_repository(
        cls, repository: Path, model: str, timeout_s: float = 0
    ) -> NativeDecoderTarget:
        """The decoder at `<repository>/<model>/` (its config.pbtxt and built version 1)."""
        from loadtest.models.config import read_config

        path = repository / model / "config.pbtxt"
        if not path.is_file():
            raise TargetError(
                f"native decoder: model {model!r} has no config.pbtxt in {repository}"
            )
        try:
            config = read_config(path)
        except LoadtestError as exc:
            raise TargetError(f"native decoder: {exc}") from None
        as_json = json_format.MessageToDict(config, preserving_proto_field_name=True)
        spec = model_spec_from_config({**as_json, "name": config.name or model}, "1")
        version_dir = repository / model / "1"
        for name in (MODEL_FILE, TOKENIZER):
            if not (version_dir / name).is_file():
                raise TargetError(
                    f"native decoder: {version_dir / name} is missing (run `loadtest models "
                    f"build --model {model}`)"
                )
        try:
            threads = int(spec.parameters.get("intra_op_thread_count", "1") or 1)
        except ValueError:
            raise TargetError(
                f"{path}: parameter intra_op_thread_count is not an integer"
            ) from None
        return cls(version_dir, spec, threads, timeout_s)

    @property
    def description(self) -> str:
        return f"native decoder in-process (onnxruntime {ort.__version__}), model {self.spec.name}"

    @property
    def capabilities(self) -> TargetCapabilities:
        return TargetCapabilities(streams_parts=True)

    @property
    def options(self) -> NativeOptions:
        """How this side runs the model, in the tensor native target's terms, so compare can set
        it against Triton's config: one StepRunner (one instance), no batching, the threads
        decoding.session_options gives both sides (intra-op from the config, inter-op 1,
        spinning off in both pools)."""
        return NativeOptions(
            instances=1, intra_op_threads=self.threads, inter_op_threads=1, allow_spinning=False
        )

    @property
    def batcher_stats(self) -> BatcherStats | None:
        return None  # batch 1: model.py batches nothing across requests either

    @property
    def server_version(self) -> str:
        return f"onnxruntime {ort.__version__}"

    @property
    def connection_waits(self) -> int:
        return 0

    @property
    def transparent_retries(self) -> int:
        return 0

    async def open(self) -> ModelSpec:
        try:
            self._decoder = await asyncio.to_thread(
                Decoder,
                str(self.version_dir / MODEL_FILE),
                str(self.version_dir / TOKENIZER),
                self.threads,
            )
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TargetError(f"native decoder: cannot load {self.version_dir}: {first}") from None
        self._steps = StepRunner()
        return self.spec

    async def prepare(self, samples: Sequence[Sample]) -> None:
        self._requests = [Request.of(sample) for sample in samples]
        for index, request in enumerate(self._requests):
            try:
                self._start(request)  # checked now: a bad sample is one line before the run
            except GenerationError as exc:
                raise TargetError(f"native decoder: sample {index}: {exc}") from None

    def _start(self, request: Request) -> Generation:
        assert self._decoder is not None, "open() first"
        decoder = self._decoder
        prompt = decoder.encode(request.text)
        return decoder.start(prompt, request.max_tokens, request.ignore_eos, request.min_tokens)

    async def _answer(self, request: Request, parts: Parts | None) -> tuple[str | None, str, int]:
        """Generate one answer, reporting each token to `parts` (when streamed); returns
        (error kind, text, tokens)."""
        assert self._steps is not None, "open() first"
        try:
            generation = self._start(request)
        except GenerationError as exc:
            return error_kind("native decoder", str(exc)), "", 0
        pieces: list[str] = []
        async for token in self._steps.stream(generation):
            pieces.append(token.text)
            if parts is not None and request.stream:
                parts.part()
        if parts is not None and not request.stream:
            parts.part()
        return None, "".join(pieces), len(generation.ids)

    async def _play(self, request: Request, parts: Parts) -> None:
        try:
            if self.timeout_s > 0:
                error, _, count = await asyncio.wait_for(
                    self._answer(request, parts), self.timeout_s
                )
            else:
                error, _, count = await self._answer(request, parts)
        except asyncio.TimeoutError:
            parts.done(TIMEOUT)
            return
        except Exception as exc:  # a failed query is data, never a crash of the run
            parts.done(error_kind("native decoder", str(exc) or type(exc).__name__))
            return
        if error is None:
            parts.final(count)
        parts.done(error)

    def start_parts(self, sample_index: int, parts: Parts, written: Written | None = None) -> None:
        task = asyncio.get_running_loop().create_task(
            self._play(self._requests[sample_index], parts)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start_turn(
        self, sample_index: int, conversation: Sequence[Message], max_tokens: int, parts: Parts
    ) -> None:
        raise NotImplementedError("the in-process decoder plays no sessions")

    def start_infer(self, sample_index: int, done: Done, written: Written | None = None) -> None:
        raise NotImplementedError("the native decoder streams: use start_parts")

    async def infer(self, sample_index: int) -> str | None:
        try:
            error, _, _ = await self._answer(self._requests[sample_index], None)
        except Exception as exc:
            return error_kind("native decoder", str(exc) or type(exc).__name__)
        return error

    async def infer_outputs(self, sample_index: int) -> dict[str, np.ndarray]:
        """The whole answer as model.py's non-streamed response carries it."""
        error, text, count = await self._answer(self._requests[sample_index], None)
        if error is not None:
            raise TargetError(error)
        return {
            "text_output": np.array([text.encode()], dtype=object),
            "num_output_tokens": np.array([count], dtype=np.uint32),
        }

    async def infer_kept(self, sample_index: int) -> tuple[str | None, Kept]:
        raise NotImplementedError("the native decoder does not keep outputs")

    def decode_kept(self, kept: Kept) -> dict[str, np.ndarray]:
        raise NotImplementedError("the native decoder does not keep outputs")

    def use_shared_memory(self, kind: SharedMemoryKind, tag: str) -> None:
        raise TargetError(
            f"--shared-memory {kind.value} needs a Triton target, not {self.description}"
        )

    async def close(self) -> None:
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._steps is not None:
            await asyncio.to_thread(self._steps.close)
            self._steps = None
