"""Triton system shared memory for inputs and outputs: tensors bypass the socket.

Regions are POSIX shared memory from the standard library (`multiprocessing.shared_memory`, the
same shm_open segments Triton maps by key); tritonclient's own helper is not used because it
imports pkg_resources, which current setuptools no longer ships. The stdlib also registers each
segment with its resource tracker, so even a crashed worker's segments are unlinked.

Layout: one input region per sample (every input of the sample at its own offset), written once
before the run, and one output region per target holding every output. Concurrent queries write
their outputs over each other there, as with perf_analyzer's shared-memory mode: a load test
reads no outputs. `read_outputs` is for the correctness check, one query at a time.

Output shapes must be fixed (no -1 dims) so the output region can be sized before the run.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any, TypeVar, cast

import numpy as np

from loadtest.core.settings import SharedMemoryKind
from loadtest.core.target import ModelSpec, Sample, Target
from loadtest.errors import TargetError
from loadtest.targets.triton_common import tensor_bytes

PREFIX = "loadtest_"
T = TypeVar("T")


@dataclass(frozen=True)
class Slot:
    """Where one tensor lives: region name (as registered with Triton), offset and size."""

    region: str
    offset: int
    byte_size: int


class SystemRegions:
    """The regions of one target: created, registered, unregistered and unlinked together."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        # A random part makes each target's names its own: a region a server still holds from an
        # earlier target (an unregister that failed, best effort) can never collide with these.
        self._unique = uuid.uuid4().hex[:8]
        self._segments: dict[str, shared_memory.SharedMemory] = {}
        self.registered: list[str] = []
        self.input_slots: list[dict[str, Slot]] = []
        self.output_slots: dict[str, Slot] = {}
        self._output_specs: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}

    def _create(self, suffix: str, size: int) -> str:
        name = f"{PREFIX}{os.getpid()}_{self.tag}_{self._unique}_{suffix}"
        try:
            segment = shared_memory.SharedMemory(name=name, create=True, size=max(size, 1))
        except OSError as exc:
            raise TargetError(
                f"cannot create shared-memory region {name} ({size} bytes): {exc.strerror or exc}"
            ) from None
        self._segments[name] = segment
        return name

    def key(self, region: str) -> str:
        """The shm_open key Triton maps ('/' + name)."""
        return "/" + region

    def _buffer(self, region: str) -> memoryview:
        buffer = self._segments[region].buf
        assert buffer is not None, "segment closed"
        return buffer

    def size(self, region: str) -> int:
        return self._segments[region].size

    def layout(self, samples: Sequence[Sample], model: ModelSpec) -> None:
        """Create one region per sample with its inputs written in, and the output region."""
        for k, sample in enumerate(samples):
            tensors = [(name, tensor_bytes(t)) for name, t in sample.items()]
            region = self._create(f"in{k}", sum(len(data) for _, data in tensors))
            buffer = self._buffer(region)
            slots, offset = {}, 0
            for name, data in tensors:
                buffer[offset : offset + len(data)] = data
                slots[name] = Slot(region, offset, len(data))
                offset += len(data)
            self.input_slots.append(slots)
        batch = 1
        if model.max_batch_size > 0 and samples:
            batch = int(next(iter(samples[0].values())).shape[0])
        sizes = {}
        for output in model.outputs:
            if output.datatype == "BYTES":
                raise TargetError(
                    f"output {output.name} is BYTES, of no fixed size: shared memory needs "
                    "fixed-size outputs (run without --shared-memory)"
                )
            if any(d < 0 for d in output.shape):
                raise TargetError(
                    f"output {output.name} has a variable shape {list(output.shape)}: "
                    "shared memory needs fixed output shapes (run without --shared-memory)"
                )
            shape = (batch, *output.shape) if model.max_batch_size > 0 else output.shape
            self._output_specs[output.name] = (output.numpy_dtype, shape)
            sizes[output.name] = int(np.prod(shape)) * output.numpy_dtype.itemsize
        region = self._create("out", sum(sizes.values()))
        offset = 0
        for name, size in sizes.items():
            self.output_slots[name] = Slot(region, offset, size)
            offset += size

    async def register(self, register: Callable[[str, str, int], Awaitable[object]]) -> None:
        """Register every region with the server via `register(name, key, byte_size)`."""
        for region in self._segments:
            try:
                await register(region, self.key(region), self.size(region))
            except Exception as exc:
                text = exc.message() if hasattr(exc, "message") else str(exc)
                raise TargetError(
                    f"the server refused shared-memory region {region}: {text}"
                ) from None
            self.registered.append(region)

    def bind_input(self, infer_input: Any, sample: int, name: str) -> None:
        """Point a tritonclient InferInput (gRPC or HTTP) at the sample's slot."""
        slot = self.input_slots[sample][name]
        infer_input.set_shared_memory(slot.region, slot.byte_size, slot.offset)

    def requested_outputs(self, output_class: Callable[[str], T]) -> list[T]:
        """tritonclient InferRequestedOutputs (of `output_class`) writing into the output region."""
        outputs = []
        for name, slot in self.output_slots.items():
            output = output_class(name)
            cast(Any, output).set_shared_memory(slot.region, slot.byte_size, slot.offset)
            outputs.append(output)
        return outputs

    def read_outputs(self) -> dict[str, np.ndarray]:
        """Copies of the outputs as the last query left them (one query at a time only)."""
        result = {}
        for name, slot in self.output_slots.items():
            dtype, shape = self._output_specs[name]
            raw = self._buffer(slot.region)[slot.offset : slot.offset + slot.byte_size]
            result[name] = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        return result

    async def release(self, unregister: Callable[[str], Awaitable[object]] | None) -> None:
        """Unregister what was registered (best effort: the server may be gone), then unlink."""
        if unregister is not None:
            for region in self.registered:
                with contextlib.suppress(Exception):
                    await unregister(region)
        self.registered = []
        for segment in self._segments.values():
            with contextlib.suppress(OSError):
                segment.close()
            with contextlib.suppress(OSError, FileNotFoundError):
                segment.unlink()
        self._segments = {}


def with_shared_memory(target: Target, kind: SharedMemoryKind, tag: str) -> Target:
    """Switch a target to shared-memory tensors, if it declares the kind; TargetError if not.

    The target itself is switched (shared memory changes how it builds each request), so the
    same object comes back; a wrapper passes the switch on to the target it wraps.
    """
    if kind is SharedMemoryKind.NONE:
        return target
    if kind not in target.capabilities.shared_memory:
        if kind is SharedMemoryKind.CUDA:
            raise TargetError(
                "--shared-memory cuda needs a GPU and tritonclient's CUDA shared-memory support; "
                "neither is available here (use --shared-memory system)"
            )
        raise TargetError(
            f"--shared-memory {kind.value} needs a Triton target, not {target.description}"
        )
    target.use_shared_memory(kind, tag)
    return target
