"""Several models behind one Target: a query's global sample index says which model it goes to.

A mix's Server entries are played as one superposed schedule (core/mix_schedule.py) by the one
runner every scenario uses, so the mix needs one target: this one holds each entry's own target
(its URL, protocol, model, TLS and headers), each with its own sample library, and routes global
sample index i to entry k's sample i − offsets[k]. Nothing about how a query is sent changes: the
entry's target sends it exactly as it would alone.

`open()` opens every entry and builds its library (so the total is known); `prepare()` takes the
placeholder library the generic open-and-prepare path builds (the mix model has no inputs of its
own, so its "samples" are empty: only their count matters) and prepares each entry with its own.
Errors name the entry, so a bad model or address in one entry is one line saying which.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loadtest.core.mix_schedule import offsets_of
from loadtest.core.sessions import Message
from loadtest.core.settings import SharedMemoryKind, TargetSettings
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
from loadtest.errors import LoadtestError, TargetError

MIX_MODEL = ModelSpec(name="mix", version="", max_batch_size=0, inputs=(), outputs=())


@dataclass(frozen=True)
class MixMember:
    """One entry's target and sample library, picklable (it crosses to workers and Ray actors)."""

    name: str
    target: TargetSettings
    sample_count: int = 64
    sample_seed: int = 1
    input_data: Path | None = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def entry_error(name: str, exc: LoadtestError) -> LoadtestError:
    """The same error, its one line prefixed with the entry it belongs to."""
    text = str(exc)
    if text.startswith("mix entry "):
        return exc
    named = type(exc)(f"mix entry {name!r}: {text}")
    named.__dict__.update(exc.__dict__)
    return named


class MixTarget:
    """Routes each query to its entry's target (see the module docstring)."""

    def __init__(
        self,
        names: Sequence[str],
        targets: Sequence[Target],
        members: Sequence[MixMember] = (),
        library_sizes: Sequence[int] = (),
        owns_targets: bool = True,
    ) -> None:
        if len(names) != len(targets) or not targets:
            raise ValueError("a mix target needs one target per entry")
        self.names = tuple(names)
        self.targets = tuple(targets)
        self.members = tuple(members)
        self.owns_targets = owns_targets
        self._sizes = list(library_sizes)
        self._offsets: list[int] = offsets_of(self._sizes).tolist() if self._sizes else []
        self._libraries: list[list[Sample]] = []

    @classmethod
    def of_members(
        cls, members: Sequence[MixMember], shared_memory: SharedMemoryKind, tag: str
    ) -> MixTarget:
        """A mix target a worker builds from its plan (targets open in `open`)."""
        from loadtest.targets import target_for
        from loadtest.targets.shared_memory import with_shared_memory

        targets = [
            with_shared_memory(target_for(m.target), shared_memory, tag=f"{tag}e{k}")
            for k, m in enumerate(members)
        ]
        return cls([m.name for m in members], targets, members)

    @classmethod
    def prepared(
        cls, names: Sequence[str], targets: Sequence[Target], library_sizes: Sequence[int]
    ) -> MixTarget:
        """A view over targets already opened and prepared elsewhere (not closed by this one)."""
        return cls(names, targets, library_sizes=library_sizes, owns_targets=False)

    @property
    def library_size(self) -> int:
        return self._offsets[-1] if self._offsets else 0

    @property
    def offsets(self) -> list[int]:
        return list(self._offsets)

    @property
    def description(self) -> str:
        return f"mix of {len(self.targets)}: " + "; ".join(t.description for t in self.targets)

    @property
    def capabilities(self) -> TargetCapabilities:
        """Callback sends when every entry has them; no server side of its own (each entry's
        Triton is observed through its own target)."""
        caps = [t.capabilities for t in self.targets]
        kinds = frozenset.intersection(*(c.shared_memory for c in caps))
        return TargetCapabilities(
            callback_send=all(c.callback_send for c in caps),
            counts_connection_waits=any(c.counts_connection_waits for c in caps),
            counts_transparent_retries=any(c.counts_transparent_retries for c in caps),
            shared_memory=kinds,
            keeps_outputs=all(c.keeps_outputs for c in caps),
            streams_parts=all(c.streams_parts for c in caps),
        )

    @property
    def server_version(self) -> str:
        return next((t.server_version for t in self.targets if t.server_version), "")

    @property
    def connection_waits(self) -> int:
        counting = [t for t in self.targets if t.capabilities.counts_connection_waits]
        return sum(t.connection_waits for t in counting)

    @property
    def transparent_retries(self) -> int:
        counting = [t for t in self.targets if t.capabilities.counts_transparent_retries]
        return sum(t.transparent_retries for t in counting)

    async def open(self) -> ModelSpec:
        """Open every entry and build its own sample library; returns the input-less mix model."""
        from loadtest.engine.samples import sample_library

        if not self.members:
            raise LoadtestError("a prepared mix target is opened by its entries' owner")
        self._libraries = []
        for member, target in zip(self.members, self.targets, strict=True):
            try:
                spec = await target.open()
                self._libraries.append(
                    sample_library(
                        spec,
                        member.sample_count,
                        member.sample_seed,
                        member.input_data,
                        member.shapes,
                    )
                )
            except LoadtestError as exc:
                raise entry_error(member.name, exc) from None
        self._sizes = [len(library) for library in self._libraries]
        self._offsets = offsets_of(self._sizes).tolist()
        return MIX_MODEL

    async def prepare(self, samples: Sequence[Sample]) -> None:
        """`samples` are placeholders: one per global index; each entry gets its own library."""
        if len(samples) != self.library_size:
            raise TargetError(
                f"the mix holds {self.library_size} samples over its entries, not {len(samples)}"
            )
        for name, target, library in zip(self.names, self.targets, self._libraries, strict=True):
            try:
                await target.prepare(library)
            except LoadtestError as exc:
                raise entry_error(name, exc) from None

    def _route(self, sample_index: int) -> tuple[Target, int]:
        k = bisect.bisect_right(self._offsets, sample_index) - 1
        return self.targets[k], sample_index - self._offsets[k]

    async def infer(self, sample_index: int) -> str | None:
        target, local = self._route(sample_index)
        return await target.infer(local)

    def start_infer(self, sample_index: int, done: Done, written: Written | None = None) -> None:
        target, local = self._route(sample_index)
        target.start_infer(local, done, written)

    def start_parts(self, sample_index: int, parts: Parts, written: Written | None = None) -> None:
        target, local = self._route(sample_index)
        target.start_parts(local, parts, written)

    def start_turn(
        self, sample_index: int, conversation: Sequence[Message], max_tokens: int, parts: Parts
    ) -> None:
        target, local = self._route(sample_index)
        target.start_turn(local, conversation, max_tokens, parts)

    async def infer_outputs(self, sample_index: int) -> dict[str, np.ndarray]:
        target, local = self._route(sample_index)
        return await target.infer_outputs(local)

    async def infer_kept(self, sample_index: int) -> tuple[str | None, Kept]:
        """The entry's kept answer, tagged with the entry, since only its target can decode it."""
        target, local = self._route(sample_index)
        error, kept = await target.infer_kept(local)
        return error, (target, kept)

    def decode_kept(self, kept: Kept) -> dict[str, np.ndarray]:
        assert isinstance(kept, tuple), "not a mix target's kept answer"
        target, answer = kept  # what infer_kept returned: (the entry's target, its answer)
        decoded: dict[str, np.ndarray] = target.decode_kept(answer)
        return decoded

    def use_shared_memory(self, kind: SharedMemoryKind, tag: str) -> None:
        for k, target in enumerate(self.targets):
            target.use_shared_memory(kind, f"{tag}e{k}")

    async def close(self) -> None:
        if not self.owns_targets:
            return
        for target in self.targets:
            await target.close()
