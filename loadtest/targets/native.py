"""The same ONNX model run in-process with onnxruntime: the baseline Triton is compared against.

It is a Target like the Triton ones (open / prepare / infer / infer_outputs / close), so the runner
plays the same schedule, seed and samples against it, and every latency is measured the same way.

What it mirrors from a Triton model config, so the comparison is like for like (`from_config`):
- `instance_group` count -> that many ORT sessions, run by a ThreadPoolExecutor with as many
  workers. Inference never runs on the event loop, so the runner keeps issuing on time while a
  model executes (a blocking call would turn the open loop into a closed one);
- `max_batch_size` + `dynamic_batching { max_queue_delay_microseconds }` -> the in-process
  DynamicBatcher (targets/batcher.py); without `dynamic_batching` Triton runs one request per
  execution, and so does this;
- the ORT backend's `intra_op_thread_count` / `inter_op_thread_count` parameters, and any
  `session.*` parameter as an ORT session config entry.
Spinning is off by default (`session.intra_op.allow_spinning` = 0, and the inter-op one): ORT's
spinning threads burn more than a core even at low load (docs/triton.md has the measurement),
which would steal the CPU
the client and the other side of the comparison need; our Triton backend turns it off for the same
reason, so both sides run ORT the same way.

Execution providers: CPU everywhere; CUDA and TensorRT when `onnxruntime.get_available_providers()`
offers them (each with the CPU provider as fallback, as ORT requires for unsupported nodes). An EP
that is not installed is one clear TargetError. The CUDA/TensorRT paths were NOT exercised where
this was written (CPU-only machines, onnxruntime without GPU providers).
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
from google.protobuf import json_format

from loadtest.core.sessions import Message
from loadtest.core.settings import SharedMemoryKind
from loadtest.core.target import (
    Done,
    Kept,
    ModelSpec,
    Parts,
    Sample,
    TargetCapabilities,
    TensorSpec,
    Written,
)
from loadtest.core.units import NS_PER_US
from loadtest.errors import LoadtestError, TargetError
from loadtest.targets.batcher import BatcherStats, DynamicBatcher
from loadtest.targets.triton_common import error_kind, model_spec_from_config

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
CPU = "CPUExecutionProvider"


def provider_name(name: str) -> str:
    """'cpu' / 'cuda' / 'tensorrt' (or a full ORT provider name) -> ORT's provider name."""
    return PROVIDER_ALIASES.get(name.lower(), name)


def check_providers(names: Sequence[str]) -> tuple[str, ...]:
    """Full provider names in order, CPU appended as fallback; TargetError if one is missing."""
    available = ort.get_available_providers()
    chosen = [provider_name(n) for n in names] or [CPU]
    for name in chosen:
        if name not in available:
            raise TargetError(
                f"execution provider {name!r} is not available in this onnxruntime "
                f"{ort.__version__} (available: {', '.join(available)})"
            )
    if CPU not in chosen:
        chosen.append(CPU)
    return tuple(chosen)


@dataclass(frozen=True)
class NativeOptions:
    """How the native side runs the model; defaults = one CPU session, no batching."""

    instances: int = 1
    intra_op_threads: int = 0  # 0 = ORT's default (one per core)
    inter_op_threads: int = 0
    providers: tuple[str, ...] = (CPU,)
    max_batch_size: int = 0  # the model's batch limit (0 = the model does not batch)
    dynamic_batching: bool = False
    max_queue_delay_us: int = 0
    allow_spinning: bool = False
    session_entries: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.instances < 1:
            raise TargetError(f"native instances must be ≥ 1, got {self.instances}")
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise TargetError("native thread counts must be ≥ 0")
        if self.max_queue_delay_us < 0:
            raise TargetError("native max queue delay must be ≥ 0 µs")
        if self.dynamic_batching and self.max_batch_size < 1:
            raise TargetError("native dynamic batching needs max_batch_size ≥ 1")

    @property
    def batching(self) -> bool:
        return self.dynamic_batching and self.max_batch_size > 1

    def describe(self) -> str:
        batching = (
            f"dynamic batching ≤ {self.max_batch_size}, delay {self.max_queue_delay_us} µs"
            if self.batching
            else "no batching"
        )
        providers = "+".join(p.removesuffix("ExecutionProvider") for p in self.providers)
        return (
            f"{self.instances} instance(s), {batching}, intra {self.intra_op_threads} / "
            f"inter {self.inter_op_threads} threads, "
            f"spinning {'on' if self.allow_spinning else 'off'}, {providers}"
        )


def options_from_config(config_path: Path) -> tuple[ModelSpec, NativeOptions, Path]:
    """(spec, options mirroring Triton's config, ONNX path) from `<repo>/<model>/config.pbtxt`."""
    from loadtest.models.config import read_config

    config = read_config(config_path)
    as_json = json_format.MessageToDict(config, preserving_proto_field_name=True)
    spec = model_spec_from_config({**as_json, "name": config.name or config_path.parent.name}, "")
    parameters = dict(spec.parameters)

    def threads(key: str) -> int:
        try:
            return int(parameters.get(key, "0") or 0)
        except ValueError:
            raise TargetError(f"{config_path}: parameter {key} is not an integer") from None

    instances = sum(group.count or 1 for group in config.instance_group) or 1
    spinning = parameters.get("session.intra_op.allow_spinning", "0") == "1"
    entries = tuple(
        (k, v)
        for k, v in sorted(parameters.items())
        if k.startswith("session.") and not k.endswith("allow_spinning")
    )
    options = NativeOptions(
        instances=instances,
        intra_op_threads=threads("intra_op_thread_count"),
        inter_op_threads=threads("inter_op_thread_count"),
        max_batch_size=config.max_batch_size,
        dynamic_batching=config.HasField("dynamic_batching") and config.max_batch_size > 0,
        max_queue_delay_us=config.dynamic_batching.max_queue_delay_microseconds,
        allow_spinning=spinning,
        session_entries=entries,
    )
    filename = config.default_model_filename or "model.onnx"
    versions = sorted(
        (p for p in config_path.parent.iterdir() if p.is_dir() and p.name.isdigit()),
        key=lambda p: int(p.name),
    )
    onnx_path = (versions[-1] if versions else config_path.parent / "1") / filename
    return spec, options, onnx_path


def spec_from_onnx(path: Path, max_batch_size: int) -> ModelSpec:
    """A ModelSpec read from the ONNX graph alone (no config): a symbolic leading dimension on
    every input and output is taken as the batch dimension."""
    from loadtest.models.check import onnx_signature
    from loadtest.models.onnx_scan import scan_model

    try:
        model = scan_model(str(path))
    except Exception as exc:
        raise TargetError(f"{path} is not a readable ONNX model: {exc}") from None
    signature = onnx_signature(model)
    inputs = {v.name for v in model.graph.input} - {i.name for i in model.graph.initializer}
    batched = all(shape[:1] == (-1,) for shape in (s for _, s in signature.values()))

    def tensor(name: str) -> TensorSpec:
        datatype, shape = signature[name]
        return TensorSpec(
            name, datatype.removeprefix("TYPE_"), shape[1:] if batched else tuple(shape)
        )

    return ModelSpec(
        name=path.stem,
        version="",
        max_batch_size=max(max_batch_size, 1) if batched else 0,
        inputs=tuple(tensor(v.name) for v in model.graph.input if v.name in inputs),
        outputs=tuple(tensor(v.name) for v in model.graph.output),
        platform="onnxruntime (in-process)",
    )


class NativeTarget:
    """onnxruntime in this process, off the event loop, optionally behind a dynamic batcher."""

    def __init__(self, onnx_path: Path, spec: ModelSpec, options: NativeOptions) -> None:
        self.onnx_path = onnx_path
        self.spec = spec
        self.options = options
        self._sessions: queue.SimpleQueue[ort.InferenceSession] = queue.SimpleQueue()
        self._executor: ThreadPoolExecutor | None = None
        self._batcher: DynamicBatcher | None = None
        self._output_names: list[str] = [t.name for t in spec.outputs]
        self._samples: list[dict[str, np.ndarray]] = []

    @classmethod
    def from_repository(
        cls, repository: Path, model: str, overrides: dict[str, object] | None = None
    ) -> NativeTarget:
        """Mirror `<repository>/<model>/config.pbtxt`; `overrides` replace NativeOptions fields."""
        config = repository / model / "config.pbtxt"
        if not config.is_file():
            raise TargetError(f"native: model {model!r} has no config.pbtxt in {repository}")
        try:
            spec, options, onnx_path = options_from_config(config)
        except LoadtestError as exc:
            raise TargetError(f"native: {exc}") from None
        options = replace(options, **(overrides or {}))  # type: ignore[arg-type]
        if not onnx_path.is_file():
            raise TargetError(f"native: model {model!r} has no ONNX file at {onnx_path}")
        check_providers(options.providers)
        return cls(onnx_path, spec, options)

    @classmethod
    def from_onnx(cls, path: Path, options: NativeOptions) -> NativeTarget:
        if not path.is_file():
            raise TargetError(f"native: no ONNX file at {path}")
        check_providers(options.providers)
        return cls(path, spec_from_onnx(path, options.max_batch_size), options)

    @property
    def description(self) -> str:
        return f"native onnxruntime {ort.__version__} in-process, model {self.spec.name}"

    @property
    def capabilities(self) -> TargetCapabilities:
        """In-process calls, awaited per query, with no server or connection behind them; the
        outputs are already arrays, so keeping them costs nothing."""
        return TargetCapabilities(keeps_outputs=True)

    @property
    def server_version(self) -> str:
        return f"onnxruntime {ort.__version__}"

    @property
    def connection_waits(self) -> int:
        return 0

    @property
    def transparent_retries(self) -> int:
        return 0

    def start_infer(self, sample_index: int, done: Done, written: Written | None = None) -> None:
        raise NotImplementedError("the native target has no callback send")

    def start_parts(self, sample_index: int, parts: Parts, written: Written | None = None) -> None:
        raise NotImplementedError("the native target answers whole, not in parts")

    def start_turn(
        self, sample_index: int, conversation: Sequence[Message], max_tokens: int, parts: Parts
    ) -> None:
        raise NotImplementedError("the native target plays no sessions")

    def use_shared_memory(self, kind: SharedMemoryKind, tag: str) -> None:
        raise TargetError(
            f"--shared-memory {kind.value} needs a Triton target, not {self.description}"
        )

    @property
    def batcher_stats(self) -> BatcherStats | None:
        return self._batcher.stats() if self._batcher else None

    def _session(self) -> ort.InferenceSession:
        opts = self.options
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = opts.intra_op_threads
        session_options.inter_op_num_threads = opts.inter_op_threads
        spin = "1" if opts.allow_spinning else "0"
        session_options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        session_options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        for key, value in opts.session_entries:
            session_options.add_session_config_entry(key, value)
        return ort.InferenceSession(
            str(self.onnx_path), session_options, providers=list(opts.providers)
        )

    async def open(self) -> ModelSpec:
        if not self.onnx_path.is_file():
            raise TargetError(
                f"native: model {self.spec.name!r} has no ONNX file at {self.onnx_path}"
            )
        providers = check_providers(self.options.providers)
        self.options = replace(self.options, providers=providers)
        try:
            for _ in range(self.options.instances):
                self._sessions.put(await asyncio.to_thread(self._session))
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TargetError(
                f"native: onnxruntime cannot load {self.onnx_path}: {first}"
            ) from None
        workers = self.options.instances
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="loadtest-native")
        if self.options.batching:
            self._batcher = DynamicBatcher(
                self._run,
                self.options.max_batch_size,
                self.options.max_queue_delay_us * NS_PER_US,
                self._executor,
                workers,
            )
        return self.spec

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        session = self._sessions.get()
        try:
            return list(session.run(self._output_names, feeds))
        finally:
            self._sessions.put(session)

    async def prepare(self, samples: Sequence[Sample]) -> None:
        self._samples = [{k: np.ascontiguousarray(v) for k, v in s.items()} for s in samples]
        if self._samples:
            try:
                await self.infer_outputs(0)
            except Exception as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise TargetError(
                    f"native: model {self.spec.name!r} rejected the inputs: {first}"
                ) from None

    async def _outputs(self, sample_index: int) -> list[np.ndarray]:
        feeds = self._samples[sample_index]
        if self._batcher is not None:
            return await self._batcher.submit(feeds)
        assert self._executor is not None, "open() first"
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, feeds)

    async def infer(self, sample_index: int) -> str | None:
        try:
            await self._outputs(sample_index)
        except Exception as exc:  # a failed query is data, never a crash of the run
            return error_kind("native", str(exc) or type(exc).__name__)
        return None

    async def infer_outputs(self, sample_index: int) -> dict[str, np.ndarray]:
        outputs = await self._outputs(sample_index)
        return dict(zip(self._output_names, outputs, strict=True))

    async def infer_kept(self, sample_index: int) -> tuple[str | None, Kept]:
        try:
            outputs = await self.infer_outputs(sample_index)
        except Exception as exc:  # a failed query is data, never a crash of the run
            return error_kind("native", str(exc) or type(exc).__name__), None
        return None, outputs

    def decode_kept(self, kept: Kept) -> dict[str, np.ndarray]:
        if not isinstance(kept, dict):
            raise ValueError("not an answer of the native target")
        return kept

    async def close(self) -> None:
        if self._batcher is not None:
            self._batcher.close()
            self._batcher = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
