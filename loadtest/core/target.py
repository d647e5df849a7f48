"""The Target protocol, its declared capabilities, and the model description every target agrees on.

A target is opened once (connect, read the model's metadata), given the sample library once (so it
can build each request message a single time, not once per query), then asked to infer samples by
index. `infer` never raises for a failed query: it returns the error kind, because a failed query is
data for the report, not a reason to stop the run.

What a target can do beyond that (a callback send, counting connection waits, shared memory, a
Triton statistics API behind it, an answer in parts) is *declared* in `capabilities`, never probed
with getattr or isinstance: a wrapping target (fault injection, say) is a different class with the
same abilities, and a probe would silently lose them. A wrapper forwards `capabilities` and the
optional members to what it wraps, so nothing is lost; callers read the declaration, then call the
member.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from loadtest.core.secrets import Header
from loadtest.core.sessions import Message
from loadtest.core.settings import SharedMemoryKind, TlsSettings

# Triton datatype names <-> numpy dtypes. BYTES tensors (text prompts, the benchmark suite has
# none) are numpy object arrays holding one `bytes` per element, as tritonclient takes them; on
# the wire each element is its 4-byte little-endian length, then its bytes.
TRITON_TO_NUMPY: dict[str, str] = {
    "BYTES": "object",
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


def is_bytes_tensor(tensor: np.ndarray) -> bool:
    """A BYTES tensor (object array of bytes, or numpy bytes), not a numeric one."""
    return tensor.dtype.kind in ("O", "S")


def prompt_length(sample: Sample) -> int:
    """A sample's own input length: the bytes (characters, for ASCII text) in its BYTES tensors,
    every element counted; 0 for a purely numeric sample. What a report of tokens in can use."""
    return sum(
        sum(len(element) for element in tensor.flat)
        for tensor in sample.values()
        if is_bytes_tensor(tensor)
    )


Kept = object  # a raw answer kept by `infer_kept`; only its target can decode it
Done = Callable[[str | None], None]  # a callback send's completion: error kind, or None on success
# Called when a callback send is written later than it was asked for (it waited for a free
# connection): the runner stamps the query's actual send time then, so send lag includes the wait.
Written = Callable[[], None]


class Parts(Protocol):
    """One query's answer as it arrives in parts (targets declaring `streams_parts`).

    The runner hands one to `start_parts` per query and records what the target reports through
    it, on the event loop, as it happens: the first response (time to first token), each part
    (their count, and the gaps between them), the final event's count, and the end. `done` comes
    last and exactly once; events after it are ignored.
    """

    def first(self) -> None:
        """The answer began (e.g. a stream's first event carrying no part yet); the first
        `part()` implies it, so a target whose first event is a part need not call it."""
        ...

    def part(self, count: int = 1) -> None:
        """`count` parts of the answer arrived (chunks, tokens) in one network read: one clock
        reading stamps them all, so the gaps between them are 0 (the client cannot tell when
        within one read each came). Called once the read is parsed."""
        ...

    def final(self, count: int | None, prompt_count: int | None = None) -> None:
        """The final event: the count the server reports for the answer (its token count), or
        None when it sent none; and the prompt's token count where the server reports it."""
        ...

    def done(self, error: str | None) -> None:
        """The query is over: None on success, else the error kind (as `Done`)."""
        ...


@dataclass(frozen=True)
class TritonEndpoint:
    """The Triton server and model behind a target: where the server's own statistics are read.

    observe/ reads the statistics API over the same protocol and address the queries went to, with
    the same TLS and headers, and finds a local tritonserver by this port; a target with none
    (fake, native) has no server side.
    """

    protocol: str  # "grpc" or "http"
    url: str  # host:port, as the target connects
    model: str
    version: str = ""  # "" = the server's choice
    tls: TlsSettings | None = None  # None = plaintext
    headers: tuple[Header, ...] = ()  # sent with every request (values are secrets)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@dataclass(frozen=True)
class TargetCapabilities:
    """What a target can do beyond the required members; the default is none of it.

    Part of a target's type rather than something found out by looking at it, so that a wrapper
    declares the same by forwarding its inner target's value.
    """

    # `start_infer` works: send without awaiting, completion by callback. The runner then issues
    # without a task per query, the cheapest way to send from Python.
    callback_send: bool = False
    # `connection_waits` counts queries that found no idle connection (a pool that never caps
    # connections still waits while one is being opened); otherwise it is always 0.
    counts_connection_waits: bool = False
    # `transparent_retries` counts queries sent a second time because the server (or a proxy)
    # said it never processed them (GOAWAY, REFUSED_STREAM; gRFC A6); otherwise it is always 0.
    counts_transparent_retries: bool = False
    # Kinds `use_shared_memory` accepts (SharedMemoryKind.NONE, plain sockets, is always possible).
    shared_memory: frozenset[SharedMemoryKind] = frozenset()
    # The Triton server behind the target, for its statistics API; None = no server side to read.
    triton: TritonEndpoint | None = None
    # Why a remote server's side is not observed, said plainly in the report ("" = nothing to
    # say: Triton's statistics are read, or the target is in-process). An OpenAI-compatible
    # server has no Triton statistics API, and its absence must not read as a failure.
    unobserved: str = ""
    # `infer_kept` / `decode_kept` work: a query can keep its raw answer to be decoded and
    # compared after the run (--check-outputs), so only sampled queries pay for it.
    keeps_outputs: bool = False
    # `start_parts` works: the answer arrives in parts (a stream of chunks or tokens), each
    # reported to a `Parts` as it comes; the runner then records the first response, the parts,
    # the gaps between them and the final count (core/records.py's optional columns).
    streams_parts: bool = False
    # `start_turn` works: one turn of a multi-turn session, its request rendered from the
    # conversation so far (`loadtest sessions`, core/sessions.py), answered in parts.
    plays_turns: bool = False


def retries_of(target: Target) -> int:
    """The target's transparent retries where it counts them (see TargetCapabilities), else 0."""
    return target.transparent_retries if target.capabilities.counts_transparent_retries else 0


class Target(Protocol):
    """Anything `runner` can play a schedule against.

    The optional members (`start_infer`, `start_parts`, `start_turn`, `use_shared_memory`,
    `connection_waits`, `transparent_retries`, `infer_kept`, `decode_kept`) exist on every
    target so a wrapper can forward them explicitly; each works only where `capabilities` says
    so.
    """

    @property
    def description(self) -> str:
        """One line for reports, e.g. 'triton grpc 127.0.0.1:8001 model resnet50 v1'."""
        ...

    @property
    def capabilities(self) -> TargetCapabilities:
        """What this target can do (see TargetCapabilities); a wrapper returns its inner one's."""
        ...

    @property
    def server_version(self) -> str:
        """The serving software's version for the report, known after `open`; "" = none/unknown."""
        ...

    @property
    def connection_waits(self) -> int:
        """Queries so far that waited for a free connection; 0 unless counts_connection_waits."""
        ...

    @property
    def transparent_retries(self) -> int:
        """Queries so far sent again because they were never processed; 0 unless
        counts_transparent_retries."""
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

    def start_infer(self, sample_index: int, done: Done, written: Written | None = None) -> None:
        """Send one prepared sample without awaiting; `done(error kind or None)` runs on the event
        loop when the answer is in. Only with capabilities.callback_send; else NotImplementedError.
        A target that cannot write the request at once (no free connection) calls `written()` at
        the moment it does, so the send is stamped at the write, not at the ask.
        """
        ...

    def start_parts(self, sample_index: int, parts: Parts, written: Written | None = None) -> None:
        """Send one prepared sample without awaiting; its answer's events go to `parts` (its
        `done` last) on the event loop. Only with capabilities.streams_parts; else
        NotImplementedError. `written` as for `start_infer`."""
        ...

    def start_turn(
        self, sample_index: int, conversation: Sequence[Message], max_tokens: int, parts: Parts
    ) -> None:
        """Send one turn of a session without awaiting: sample `sample_index`'s other inputs,
        its prompt the conversation so far (a chat API: the messages with their roles; else
        core.sessions.conversation_text), max_tokens `max_tokens`; the answer's events go to
        `parts` as for `start_parts`. Only with capabilities.plays_turns; else
        NotImplementedError."""
        ...

    async def infer_outputs(self, sample_index: int) -> dict[str, np.ndarray]:
        """Send one sample and return its outputs (for correctness checks; raises on failure)."""
        ...

    async def infer_kept(self, sample_index: int) -> tuple[str | None, Kept]:
        """Like `infer`, with the same deadline, and the raw answer kept undecoded (the bytes as
        they arrived) for `decode_kept` after the run. Only with capabilities.keeps_outputs.
        Outputs that would land in shared memory come back in the answer itself for these
        queries, so a later query cannot overwrite them before they are read."""
        ...

    def decode_kept(self, kept: Kept) -> dict[str, np.ndarray]:
        """The outputs inside a kept answer (raises ValueError when it cannot be decoded)."""
        ...

    def use_shared_memory(self, kind: SharedMemoryKind, tag: str) -> None:
        """Before `prepare`: move tensors through shared memory of `kind` (region names carry
        `tag`). Only for kinds in capabilities.shared_memory; else TargetError."""
        ...

    async def close(self) -> None: ...
