"""Capabilities are declared on the Target protocol and survive wrapping (issue #11).

Each target kind that can be built without a server is wrapped in `TargetWrapper` (the base of the
TLS, auth and fault wrappers) and must keep its capabilities and optional members; then every
consumer that used to probe the concrete class (runner, Server play, shared memory, server observer,
environment) is driven through a wrapper and must still see what the wrapped target can do.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from loadtest.core.schedule import Schedule
from loadtest.core.settings import ServerSettings, SharedMemoryKind, TargetSettings
from loadtest.core.target import Done, Target, TargetCapabilities, TritonEndpoint, Written
from loadtest.engine.runner import Runner
from loadtest.errors import TargetError
from loadtest.observe.observer import observer_for_target
from loadtest.observe.triton_statistics import TritonStatistics
from loadtest.report.results import build_environment
from loadtest.scenarios.mlperf.play import run_server
from loadtest.server.deployment import Deployment
from loadtest.targets import triton_target
from loadtest.targets.fake import FAKE_MODEL, FakeTarget, ServiceLaw
from loadtest.targets.native import NativeOptions, NativeTarget
from loadtest.targets.native_decoder import NativeDecoderTarget
from loadtest.targets.shared_memory import with_shared_memory
from loadtest.targets.triton_grpc import TritonGrpcTarget
from loadtest.targets.triton_http import TritonHttpTarget
from loadtest.targets.wrapper import TargetWrapper

MS = 1_000_000
SYSTEM = SharedMemoryKind.SYSTEM


class StandIn(FakeTarget):
    """A fake that declares every capability and counts which members were used."""

    def __init__(self) -> None:
        super().__init__(ServiceLaw("constant", 1 * MS), servers=4)
        self.callback_sends = 0
        self.awaited_sends = 0
        self.switched: list[tuple[SharedMemoryKind, str]] = []
        self._tasks: set[asyncio.Task[str | None]] = set()

    @property
    def capabilities(self) -> TargetCapabilities:
        return TargetCapabilities(
            callback_send=True,
            counts_connection_waits=True,
            counts_transparent_retries=True,
            shared_memory=frozenset({SYSTEM}),
            triton=TritonEndpoint("grpc", "127.0.0.1:1", "stand-in", "3"),
        )

    @property
    def server_version(self) -> str:
        return "stand-in 1.0"

    @property
    def connection_waits(self) -> int:
        return 7

    @property
    def transparent_retries(self) -> int:
        return 3

    def start_infer(self, sample_index: int, done: Done, written: Written | None = None) -> None:
        self.callback_sends += 1
        task = asyncio.get_running_loop().create_task(FakeTarget.infer(self, sample_index))
        self._tasks.add(task)

        def finished(task: asyncio.Task[str | None]) -> None:
            self._tasks.discard(task)
            done(task.result())

        task.add_done_callback(finished)

    async def infer(self, sample_index: int) -> str | None:
        self.awaited_sends += 1
        return await super().infer(sample_index)

    def use_shared_memory(self, kind: SharedMemoryKind, tag: str) -> None:
        self.switched.append((kind, tag))


class CountingFake(FakeTarget):
    """A plain fake (no callback send) that counts awaited sends."""

    def __init__(self) -> None:
        super().__init__(ServiceLaw("constant", 1 * MS), servers=4)
        self.awaited_sends = 0

    async def infer(self, sample_index: int) -> str | None:
        self.awaited_sends += 1
        return await super().infer(sample_index)


def _native() -> NativeTarget:
    # Constructed, never opened: the ONNX file is only read by open().
    return NativeTarget(Path("/nonexistent/model.onnx"), FAKE_MODEL, NativeOptions())


def _native_decoder() -> NativeDecoderTarget:
    # Constructed, never opened: the model and tokenizer are only read by open().
    return NativeDecoderTarget(Path("/nonexistent"), FAKE_MODEL)


# (name, factory, expected capabilities) for every target buildable without a server.
KINDS = [
    (
        "fake",
        lambda: triton_target("fake://?servers=2", "grpc", "m"),
        TargetCapabilities(keeps_outputs=True),
    ),
    (
        "grpc",
        lambda: TritonGrpcTarget("127.0.0.1:1", "tiny", "1"),
        TargetCapabilities(
            callback_send=True,
            counts_connection_waits=True,  # the wire client (the default)
            counts_transparent_retries=True,
            keeps_outputs=True,
            shared_memory=frozenset({SYSTEM}),
            triton=TritonEndpoint("grpc", "127.0.0.1:1", "tiny", "1"),
        ),
    ),
    (
        "grpc-grpcio",
        lambda: TritonGrpcTarget("127.0.0.1:1", "tiny", "1", load_client="grpcio"),
        TargetCapabilities(
            callback_send=True,
            keeps_outputs=True,
            shared_memory=frozenset({SYSTEM}),
            triton=TritonEndpoint("grpc", "127.0.0.1:1", "tiny", "1"),
        ),
    ),
    (
        "http",
        lambda: TritonHttpTarget("127.0.0.1:1", "tiny", "1"),
        TargetCapabilities(
            callback_send=True,
            counts_connection_waits=True,
            keeps_outputs=True,
            shared_memory=frozenset({SYSTEM}),
            triton=TritonEndpoint("http", "127.0.0.1:1", "tiny", "1"),
        ),
    ),
    (
        "fake-parts",
        lambda: triton_target("fake://?parts=3", "grpc", "m"),
        TargetCapabilities(keeps_outputs=True, streams_parts=True),
    ),
    ("native", _native, TargetCapabilities(keeps_outputs=True)),
    ("native-decoder", _native_decoder, TargetCapabilities(streams_parts=True)),
    ("stand-in", StandIn, StandIn().capabilities),
]


@pytest.mark.parametrize(("name", "make", "expected"), KINDS, ids=[k[0] for k in KINDS])
def test_each_target_declares_its_capabilities_and_a_wrapper_keeps_them(name, make, expected):
    target: Target = make()
    assert target.capabilities == expected
    for wrapped in (TargetWrapper(target), TargetWrapper(TargetWrapper(target))):
        assert wrapped.capabilities == target.capabilities
        assert wrapped.description == target.description
        assert wrapped.server_version == target.server_version
        assert wrapped.connection_waits == target.connection_waits
        assert wrapped.transparent_retries == target.transparent_retries


@pytest.mark.parametrize(
    "make",
    [lambda: FakeTarget(ServiceLaw("constant", 0)), _native, _native_decoder],
    ids=["fake", "native", "native-decoder"],
)
def test_a_target_without_callback_send_refuses_it_and_so_does_its_wrapper(make):
    target = make()
    assert not target.capabilities.callback_send
    for candidate in (target, TargetWrapper(target)):
        with pytest.raises(NotImplementedError):
            candidate.start_infer(0, lambda error: None)


@pytest.mark.parametrize(
    "make",
    [
        lambda: FakeTarget(ServiceLaw("constant", 0)),
        _native,
        lambda: TritonGrpcTarget("127.0.0.1:1", "tiny"),
        lambda: TritonHttpTarget("127.0.0.1:1", "tiny"),
    ],
    ids=["fake", "native", "grpc", "http"],
)
def test_a_target_answering_whole_refuses_parts_and_so_does_its_wrapper(make):
    target = make()
    assert not target.capabilities.streams_parts
    for candidate in (target, TargetWrapper(target)):
        with pytest.raises(NotImplementedError):
            candidate.start_parts(0, None)  # type: ignore[arg-type]


def test_native_reports_its_runtime_version_through_a_wrapper():
    assert TargetWrapper(_native()).server_version.startswith("onnxruntime ")


def _schedule(n: int) -> Schedule:
    return Schedule(np.arange(n, dtype=np.int64) * MS, np.zeros(n, dtype=np.int32))


async def _play(target: Target, n: int):
    await target.open()
    await target.prepare([{"INPUT0": np.zeros((1, 4), np.float32)}])
    return await Runner(_schedule(n), target).run(handle_sigint=False)


def test_runner_sends_by_callback_through_a_wrapper():
    inner = StandIn()
    outcome = asyncio.run(_play(TargetWrapper(inner), 20))
    assert outcome.records.ok.all()
    assert inner.callback_sends == 20 and inner.awaited_sends == 0


def test_runner_awaits_a_wrapped_target_without_callback_send():
    # The wrapper has a start_infer member (it forwards it); only the declaration says it works.
    inner = CountingFake()
    outcome = asyncio.run(_play(TargetWrapper(inner), 20))
    assert outcome.records.ok.all() and inner.awaited_sends == 20


def test_server_play_reads_connection_waits_through_a_wrapper():
    settings = ServerSettings(
        qps=400, target_latency_ns=50 * MS, min_duration_ns=50 * MS, min_query_count=10
    )

    async def main(target: Target):
        spec = await target.open()
        await target.prepare([{"INPUT0": np.zeros((1, 4), np.float32)}])
        return await run_server(target, spec, 1, settings, 5_000_000_000)

    inner = StandIn()
    measurement = asyncio.run(main(TargetWrapper(inner)))
    assert measurement.client is not None
    assert [w.connection_waits for w in measurement.client.workers] == [7]
    assert [w.transparent_retries for w in measurement.client.workers] == [3]
    client = measurement.client.to_dict()
    assert client["connection_waits"] == 7 and client["transparent_retries"] == 3
    assert client["workers"][0]["transparent_retries"] == 3
    assert inner.callback_sends > 0 and inner.awaited_sends == 0
    plain = asyncio.run(main(TargetWrapper(CountingFake())))
    assert plain.client is not None and plain.client.workers[0].connection_waits == 0
    assert plain.client.transparent_retries == 0


def test_shared_memory_switch_reaches_the_wrapped_target():
    inner = StandIn()
    wrapped = TargetWrapper(inner)
    assert with_shared_memory(wrapped, SYSTEM, "w0") is wrapped
    assert inner.switched == [(SYSTEM, "w0")]
    assert with_shared_memory(wrapped, SharedMemoryKind.NONE, "w1") is wrapped
    assert inner.switched == [(SYSTEM, "w0")]


@pytest.mark.parametrize("cls", [TritonGrpcTarget, TritonHttpTarget])
def test_shared_memory_switch_reaches_a_wrapped_triton_target(cls):
    inner = cls("127.0.0.1:1", "tiny")
    with_shared_memory(TargetWrapper(inner), SYSTEM, "t")  # creates nothing before prepare()
    assert inner._shm is not None and inner._shm.tag == "t"
    with pytest.raises(TargetError, match="needs a GPU"):
        with_shared_memory(TargetWrapper(inner), SharedMemoryKind.CUDA, "t")


@pytest.mark.parametrize(
    "make", [lambda: FakeTarget(ServiceLaw("constant", 0)), _native], ids=["fake", "native"]
)
def test_shared_memory_is_refused_for_targets_that_do_not_declare_it(make):
    with pytest.raises(TargetError, match="needs a Triton target"):
        with_shared_memory(TargetWrapper(make()), SYSTEM, "t")


@pytest.mark.parametrize(
    ("make", "protocol"),
    [
        (lambda: TritonGrpcTarget("127.0.0.1:1", "tiny", "2"), "grpc"),
        (lambda: TritonHttpTarget("127.0.0.1:1", "tiny", "2"), "http"),
    ],
    ids=["grpc", "http"],
)
def test_server_observer_finds_triton_statistics_through_a_wrapper(make, protocol):
    observer = observer_for_target(TargetWrapper(TargetWrapper(make())))
    assert observer is not None and isinstance(observer.statistics, TritonStatistics)
    statistics = observer.statistics
    assert (statistics.protocol, statistics.url) == (protocol, "127.0.0.1:1")
    assert (statistics.model, statistics.version, observer.model) == ("tiny", "2", "tiny")


def test_server_observer_has_nothing_to_read_behind_a_wrapped_fake():
    assert observer_for_target(TargetWrapper(FakeTarget(ServiceLaw("constant", 0)))) is None


def test_environment_reads_the_server_version_through_a_wrapper():
    deployment = Deployment(TargetSettings(url="127.0.0.1:1", model="stand-in"), None)
    server = build_environment(TargetWrapper(StandIn()), deployment)["server"]
    assert server["triton_version"] == "stand-in 1.0"
    assert server["description"] == StandIn().description
