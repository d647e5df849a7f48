"""The Target protocol and the model description every target agrees on.

A target is opened once (connect, read the model's metadata), given the sample library once (so it
can build each request message a single time, not once per query), then asked to infer samples by
index. `infer` never raises for a failed query: it returns the error kind, because a failed query is
data for the report, not a reason to stop the run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

# Triton datatype names <-> numpy dtypes (BYTES is not used by the benchmark suite).
TRITON_TO_NUMPY: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}
NUMPY_TO_TRITON: dict[str, str] = {v: k for k, v in TRITON_TO_NUMPY.items()}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output. `shape` excludes the batch dimension when batching; -1 = any size."""

    name: str
    datatype: str  # Triton name, e.g. "FP32"
    shape: tuple[int, ...]

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(TRITON_TO_NUMPY[self.datatype])


@dataclass(frozen=True)
class ModelSpec:
    """What a target serves: enough to build valid inputs and to check two targets agree."""

    name: str
    version: str
    max_batch_size: int  # 0 = the model does not batch (shapes are full shapes)
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # Free-form model parameters (config.pbtxt `parameters`); the suite uses them to state the
    # valid value range of integer inputs (see loadtest.engine.samples).
    parameters: Mapping[str, str] = field(default_factory=dict)
    platform: str = ""


Sample = Mapping[str, np.ndarray]  # input name -> tensor *with* its batch dimension when batching


class Target(Protocol):
    """Anything `runner` can play a schedule against."""

    @property
    def description(self) -> str:
        """One line for reports, e.g. 'triton grpc 127.0.0.1:8001 model resnet50 v1'."""
        ...

    async def open(self) -> ModelSpec:
        """Connect and read the model's metadata. Raises TargetError with one clear line."""
        ...

    async def prepare(self, samples: Sequence[Sample]) -> None:
        """Build per-sample request messages once. Raises TargetError if the inputs are rejected."""
        ...

    async def infer(self, sample_index: int) -> str | None:
        """Send one prepared sample; None on success, else a short error kind. Never raises."""
        ...

    async def infer_outputs(self, sample_index: int) -> dict[str, np.ndarray]:
        """Send one sample and return its outputs (for correctness checks; raises on failure)."""
        ...

    async def close(self) -> None: ...


# Optional, not part of the protocol: a target may also offer
#     start_infer(sample_index: int, done: Callable[[str | None], None]) -> None
# which sends without awaiting and calls `done(error kind or None)` on the event loop when the
# answer is in. The runner then drives it without a task per query (TritonHttpTarget does).
