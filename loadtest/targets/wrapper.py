"""A target around another target, forwarding everything: the base of fault-injection wrappers.

Every member of the Target protocol is forwarded by name, the optional ones included, and
`capabilities` is the inner target's: a wrapper that loses one would quietly change what is
measured (the runner falls back from callback sends to a task per query, the report loses the
server's statistics). No `__getattr__`: a member the protocol gains must be added here, and mypy
says so, since a TargetWrapper is checked as a Target. A subclass overrides what it changes and,
if it changes what the target can do, returns adjusted capabilities (dataclasses.replace).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from loadtest.core.sessions import Message
from loadtest.core.settings import SharedMemoryKind
from loadtest.core.target import (
    Done,
    Kept,
    ModelSpec,
    Parts,
    Sample,
    Target,
    TargetCapabilities,
    Written,
)


class TargetWrapper:
    """Forwards every Target member to `inner` unchanged."""

    def __init__(self, inner: Target) -> None:
        self.inner = inner

    @property
    def description(self) -> str:
        return self.inner.description

    @property
    def capabilities(self) -> TargetCapabilities:
        return self.inner.capabilities

    @property
    def server_version(self) -> str:
        return self.inner.server_version

    @property
    def connection_waits(self) -> int:
        return self.inner.connection_waits

    @property
    def transparent_retries(self) -> int:
        return self.inner.transparent_retries

    async def open(self) -> ModelSpec:
        return await self.inner.open()

    async def prepare(self, samples: Sequence[Sample]) -> None:
        await self.inner.prepare(samples)

    async def infer(self, sample_index: int) -> str | None:
        return await self.inner.infer(sample_index)

    def start_infer(self, sample_index: int, done: Done, written: Written | None = None) -> None:
        self.inner.start_infer(sample_index, done, written)

    def start_parts(self, sample_index: int, parts: Parts, written: Written | None = None) -> None:
        self.inner.start_parts(sample_index, parts, written)

    def start_turn(
        self, sample_index: int, conversation: Sequence[Message], max_tokens: int, parts: Parts
    ) -> None:
        self.inner.start_turn(sample_index, conversation, max_tokens, parts)

    async def infer_outputs(self, sample_index: int) -> dict[str, np.ndarray]:
        return await self.inner.infer_outputs(sample_index)

    async def infer_kept(self, sample_index: int) -> tuple[str | None, Kept]:
        return await self.inner.infer_kept(sample_index)

    def decode_kept(self, kept: Kept) -> dict[str, np.ndarray]:
        return self.inner.decode_kept(kept)

    def use_shared_memory(self, kind: SharedMemoryKind, tag: str) -> None:
        self.inner.use_shared_memory(kind, tag)

    async def close(self) -> None:
        await self.inner.close()


if TYPE_CHECKING:
    _complete: type[Target] = TargetWrapper  # mypy fails here when a protocol member is missing
