"""An in-process fake target with a chosen service-time law: the test bench for everything upstream.

It behaves like a server with `servers` identical workers and one FIFO queue (an M/G/k queue when
fed Poisson arrivals), so its capacity and latencies are known analytically: capacity =
servers / mean service time. A `stall` freezes every worker for a while at a given moment after the
first query, the way a GC pause or a stuck GPU would; an honest tester must show it in the tail.
`loop_block_ns` instead blocks the whole event loop on each query, simulating a client that cannot
keep up with its own schedule. `corrupt` makes that share of its answers wrong (one value off by
one, drawn per answer from a seeded generator): the test bench of --check-outputs. Its correct
answer is `reference_outputs` (OUTPUT0 = 2 × INPUT0). Like the Triton targets it honours the
per-request deadline (`timeout_ns`, --timeout): a query not served by then is error kind "timeout".

`pool` names a set of workers that several fake targets share (in one event loop), the way models
share one GPU or one MIG slice: each target keeps its own service law, but a query waits while the
pool's workers serve the other targets' queries, so one model slows when another is loaded (the
interference `loadtest mix` measures). The pool gets the `servers` of the first target to open it.

With `parts` > 0 it answers in parts, as a streaming (LLM) server does, and declares
`streams_parts`: the service time is the time to the first part, then `parts` − 1 more follow,
`part_gap_ns` apart, the worker held throughout; the final event carries the part count as the
server's count (or none, with `counted=False`). The bench of the runner's part columns.
"""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import numpy as np

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
    TensorSpec,
    Written,
)
from loadtest.errors import TargetError

_timeout = getattr(asyncio, "timeout", None)
# event loop -> pool name -> the workers the pool's targets share (gone with the loop)
_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)

FAKE_MODEL = ModelSpec(
    name="fake",
    version="1",
    max_batch_size=8,
    inputs=(TensorSpec("INPUT0", "FP32", (4,)),),
    outputs=(TensorSpec("OUTPUT0", "FP32", (4,)),),
)


@dataclass(frozen=True)
class ServiceLaw:
    """Service time in ns: 'constant' or 'exponential' around `mean_ns`."""

    kind: str
    mean_ns: int

    def sampler(self, seed: int) -> Callable[[], int]:
        if self.kind == "constant":
            return lambda: self.mean_ns
        if self.kind == "exponential":
            rng = np.random.Generator(np.random.PCG64(seed))
            return lambda: int(rng.exponential(self.mean_ns))
        raise ValueError(f"unknown service law {self.kind!r}")


@dataclass(frozen=True)
class Stall:
    """Every worker is frozen from `at_ns` (after the first query) for `length_ns`."""

    at_ns: int
    length_ns: int


class FakeTarget:
    """k servers, one queue, a known service law; optional stall, failures and loop blocking."""

    def __init__(
        self,
        law: ServiceLaw,
        servers: int = 1,
        *,
        stall: Stall | None = None,
        fail_every: int = 0,
        loop_block_ns: int = 0,
        seed: int = 0,
        clock: Callable[[], int] = time.perf_counter_ns,
        timeout_ns: int = 0,
        pool: str = "",
        corrupt: float = 0.0,
        parts: int = 0,
        part_gap_ns: int = 0,
        counted: bool = True,
    ) -> None:
        self.law = law
        self.pool = pool
        self.corrupt = corrupt
        self._corrupt_rng = np.random.Generator(np.random.PCG64((seed, 1)))
        self.corrupted = 0  # answers made wrong so far
        self.timeout_ns = timeout_ns  # 0 = no deadline
        self.servers = servers
        self.stall = stall
        self.fail_every = fail_every
        self.loop_block_ns = loop_block_ns
        self.clock = clock
        self._service = law.sampler(seed)
        self._workers: asyncio.Semaphore | None = None
        self._first_ns: int | None = None
        self._count = 0
        self._samples: Sequence[Sample] = ()
        self.served = 0
        self.parts = parts  # 0 = answers whole
        self.part_gap_ns = part_gap_ns
        self.counted = counted
        self._streams: set[asyncio.Task[str | None]] = set()

    def reconfigure(self, law: ServiceLaw, servers: int) -> None:
        """A new service law and worker count (the sweep's fake configurator); takes effect at
        the next open()."""
        self.law, self.servers = law, servers
        self._service = law.sampler(0)

    @property
    def description(self) -> str:
        pool = f", pool {self.pool}" if self.pool else ""
        parts = f", {self.parts} parts {self.part_gap_ns / 1e6:g} ms apart" if self.parts else ""
        law = f"{self.law.kind} {self.law.mean_ns / 1e6:g} ms"
        return f"fake ({self.servers} servers, {law}{pool}{parts})"

    @property
    def capabilities(self) -> TargetCapabilities:
        """Awaited per query (by `start_parts` when it answers in parts), no connections, no
        server side; its answers can be kept."""
        return TargetCapabilities(keeps_outputs=True, streams_parts=self.parts > 0)

    @property
    def server_version(self) -> str:
        return ""

    @property
    def connection_waits(self) -> int:
        return 0

    @property
    def transparent_retries(self) -> int:
        return 0

    def start_infer(self, sample_index: int, done: Done, written: Written | None = None) -> None:
        raise NotImplementedError("the fake target has no callback send")

    def start_parts(self, sample_index: int, parts: Parts, written: Written | None = None) -> None:
        if not self.parts:
            raise NotImplementedError("this fake target answers whole (no parts= in its URL)")
        stream = asyncio.get_running_loop().create_task(self._infer(sample_index, parts))
        self._streams.add(stream)
        stream.add_done_callback(functools.partial(self._streamed, sample_index, parts))

    def start_turn(
        self, sample_index: int, conversation: Sequence[Message], max_tokens: int, parts: Parts
    ) -> None:
        raise NotImplementedError("the fake target plays no sessions")

    def _streamed(self, sample_index: int, parts: Parts, stream: asyncio.Task[str | None]) -> None:
        self._streams.discard(stream)
        if stream.cancelled():  # closed mid-answer: the query stays unanswered
            return
        error = stream.result()
        if error is None and self.corrupt:
            self._answer(sample_index)  # every answer draws, as in infer
        parts.done(error)

    def use_shared_memory(self, kind: SharedMemoryKind, tag: str) -> None:
        raise TargetError(
            f"--shared-memory {kind.value} needs a Triton target, not {self.description}"
        )

    async def open(self) -> ModelSpec:
        if self.pool:
            pools = _POOLS.setdefault(asyncio.get_running_loop(), {})
            self._workers = pools.setdefault(self.pool, asyncio.Semaphore(self.servers))
        else:
            self._workers = asyncio.Semaphore(self.servers)
        return FAKE_MODEL

    async def prepare(self, samples: Sequence[Sample]) -> None:
        self._samples = samples

    async def _stall_wait(self) -> None:
        if self.stall is None or self._first_ns is None:
            return
        begin = self._first_ns + self.stall.at_ns
        end = begin + self.stall.length_ns
        now = self.clock()
        if begin <= now < end:
            await asyncio.sleep((end - now) / 1e9)

    async def _infer(self, sample_index: int, parts: Parts | None = None) -> str | None:
        if self._first_ns is None:
            self._first_ns = self.clock()
        self._count += 1
        number = self._count
        if self.loop_block_ns:
            time.sleep(self.loop_block_ns / 1e9)  # deliberately blocks the event loop
        if not self.timeout_ns:
            return await self._serve(number, parts)
        try:
            if _timeout is not None:  # Python ≥ 3.11: no task per query
                async with _timeout(self.timeout_ns / 1e9):
                    return await self._serve(number, parts)
            return await asyncio.wait_for(self._serve(number, parts), self.timeout_ns / 1e9)
        except asyncio.TimeoutError:
            return TIMEOUT

    async def _serve(self, number: int, parts: Parts | None = None) -> str | None:
        assert self._workers is not None, "open() first"
        failed = bool(self.fail_every) and number % self.fail_every == 0
        async with self._workers:
            await self._stall_wait()
            await asyncio.sleep(self._service() / 1e9)
            await self._stall_wait()
            if not failed:
                await self._stream(parts)
        self.served += 1
        return "fake injected failure" if failed else None

    async def _stream(self, parts: Parts | None) -> None:
        """The answer's parts (none when it answers whole), reported to `parts` if given (an
        awaited query of a streaming fake takes as long, unrecorded)."""
        for k in range(self.parts):
            if k:
                await asyncio.sleep(self.part_gap_ns / 1e9)
            if parts is not None:
                parts.part()
        if parts is not None and self.parts:
            parts.final(self.parts if self.counted else None)

    def _answer(self, sample_index: int) -> dict[str, np.ndarray]:
        """The answer to a sample: the reference, or (with probability `corrupt`) one value off."""
        outputs = reference_outputs(self._samples[sample_index])
        if self.corrupt and self._corrupt_rng.random() < self.corrupt:
            self.corrupted += 1
            outputs["OUTPUT0"].flat[0] += 1.0
        return outputs

    async def infer(self, sample_index: int) -> str | None:
        error = await self._infer(sample_index)
        if error is None and self.corrupt:
            self._answer(sample_index)  # every answer draws, kept or not: `corrupt` of all
        return error

    async def infer_outputs(self, sample_index: int) -> dict[str, np.ndarray]:
        return self._answer(sample_index)

    async def infer_kept(self, sample_index: int) -> tuple[str | None, Kept]:
        error = await self._infer(sample_index)
        return error, (self._answer(sample_index) if error is None else None)

    def decode_kept(self, kept: Kept) -> dict[str, np.ndarray]:
        if not isinstance(kept, dict):
            raise ValueError("not an answer of the fake target")
        return kept

    async def close(self) -> None:
        for stream in list(self._streams):
            stream.cancel()


def reference_outputs(sample: Sample) -> dict[str, np.ndarray]:
    """The fake model's correct answer: OUTPUT0 = 2 × INPUT0 (its --check-outputs reference)."""
    return {"OUTPUT0": np.asarray(sample["INPUT0"]) * 2}


def fake_from_url(url: str, timeout_s: float = 0.0) -> FakeTarget:
    """`fake://?servers=2&law=exponential&service_ms=1&stall_at_s=5&stall_s=1&fail_every=0`
    (and `loop_block_ms`: block the client's event loop that long per query; `pool=NAME`: share
    the workers with every fake target of that pool, see the module docstring; `corrupt`: the
    share of answers made wrong; `parts=N&part_ms=X`: answer in N parts, X ms apart, the final
    event carrying N, or none with `counted=0`); `timeout_s` is the per-request deadline (0 = none).

    Lets the CLI (and its tests, and anyone checking the tool itself) run every stage end to end
    against a queue whose behaviour is known, with no server at all.
    """
    query = {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
    try:
        servers = int(query.pop("servers", "1"))
        law = ServiceLaw(
            query.pop("law", "exponential"), int(float(query.pop("service_ms", "1")) * 1e6)
        )
        law.sampler(0)
        stall_at = query.pop("stall_at_s", None)
        stall_s = float(query.pop("stall_s", "1"))
        fail_every = int(query.pop("fail_every", "0"))
        seed = int(query.pop("seed", "0"))
        loop_block_ns = int(float(query.pop("loop_block_ms", "0")) * 1e6)
        pool = query.pop("pool", "")
        corrupt = float(query.pop("corrupt", "0"))
        parts = int(query.pop("parts", "0"))
        part_gap_ns = int(float(query.pop("part_ms", "0")) * 1e6)
        counted = bool(int(query.pop("counted", "1")))
    except ValueError as exc:
        raise ValueError(f"invalid fake target URL {url!r}: {exc}") from None
    if query:
        raise ValueError(f"invalid fake target URL {url!r}: unknown {', '.join(sorted(query))}")
    if servers < 1:
        raise ValueError(f"invalid fake target URL {url!r}: servers must be ≥ 1")
    if not 0 <= corrupt <= 1:
        raise ValueError(f"invalid fake target URL {url!r}: corrupt must be in [0, 1]")
    if parts < 0 or part_gap_ns < 0:
        raise ValueError(f"invalid fake target URL {url!r}: parts and part_ms must be ≥ 0")
    stall = Stall(int(float(stall_at) * 1e9), int(stall_s * 1e9)) if stall_at else None
    return FakeTarget(
        law,
        servers,
        stall=stall,
        fail_every=fail_every,
        seed=seed,
        loop_block_ns=loop_block_ns,
        timeout_ns=int(timeout_s * 1e9),
        pool=pool,
        corrupt=corrupt,
        parts=parts,
        part_gap_ns=part_gap_ns,
        counted=counted,
    )
