"""The gRPC load path (TritonGrpcTarget.start_infer, the runner's callback send) against the stub,
on both load clients: the wire client (the default) and grpc.aio (--grpc-client grpcio).

What each must keep from the awaited path: every query a record, failures with their error kind,
--timeout a per-request deadline, and the send stamped when the message is written (a busy event
loop shows as send lag, not as server latency).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import numpy as np
import pytest

from loadtest.core.records import SERVER_TIMEOUT, TIMEOUT, Status
from loadtest.core.schedule import server_schedule
from loadtest.core.settings import TargetSettings
from loadtest.engine import timing
from loadtest.engine.runner import Runner
from loadtest.engine.samples import random_samples
from loadtest.errors import SettingsError
from loadtest.stub.process import Stub, running_stub
from loadtest.targets import target_for, triton_grpc
from loadtest.targets.triton_grpc import TritonGrpcTarget

NS = 1_000_000_000


@pytest.fixture(params=triton_grpc.GRPC_CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def slow_stub() -> Iterator[Stub]:
    """Every answer 40 ms late: a service time without compute."""
    with running_stub(delay_ms=40) as stub:
        yield stub


def _play(url: str, client: str, qps: float, seconds: float, **target_options: float):
    async def play():
        target = TritonGrpcTarget(url, "tiny", load_client=client, **target_options)
        spec = await target.open()
        await target.prepare(random_samples(spec, 8, seed=1))
        assert target.capabilities.callback_send
        schedule = server_schedule(qps, int(seconds * NS), 1, 8, 3, 1)
        try:
            return await Runner(schedule, target).run(handle_sigint=False)
        finally:
            await target.close()

    return timing.run(play())


def test_the_load_client_is_a_setting_not_the_environment(monkeypatch):
    monkeypatch.setenv("LOADTEST_GRPC_CLIENT", "grpcio")  # gone: no longer read
    assert TritonGrpcTarget("127.0.0.1:1", "tiny").load_client == "wire"
    target = target_for(TargetSettings(url="127.0.0.1:1", grpc_client="grpcio"))
    assert isinstance(target, TritonGrpcTarget)
    assert target.load_client == "grpcio" and "(grpcio)" in target.description
    with pytest.raises(SettingsError, match="--grpc-client 'h3': use one of wire, grpcio"):
        TritonGrpcTarget("127.0.0.1:1", "tiny", load_client="h3")


def test_every_query_is_a_record_sent_in_order_and_answered(stub, client):
    outcome = _play(stub.grpc_url, client, 200, 1.0)
    records = outcome.records
    assert not outcome.stopped_early
    assert records.ok.all() and len(records.status) > 100
    issued, scheduled = records.issued_ns, records.scheduled_ns
    assert (issued >= scheduled).all()  # never sent early
    assert (records.completed_ns > issued).all()
    # Generous for a shared CI machine; the benchmark measures the real margins.
    assert np.percentile(records.send_lag_ns(), 50) < 2_000_000


def test_a_deadline_shorter_than_the_service_time_is_a_timeout_record(slow_stub, client):
    outcome = _play(slow_stub.grpc_url, client, 50, 0.5, timeout_s=0.02)
    records = outcome.records
    assert (records.status == Status.ERROR).all()
    assert records.error_kinds == [TIMEOUT]
    took = records.completed_ns - records.issued_ns
    # Failed at the 20 ms deadline, not after the 40 ms answer.
    assert np.median(took) < 35_000_000


def test_a_server_side_timeout_has_its_own_kind(slow_stub, client):
    outcome = _play(slow_stub.grpc_url, client, 50, 0.5, server_timeout_s=0.005)
    assert outcome.records.error_kinds == [SERVER_TIMEOUT]
    assert (outcome.records.status == Status.ERROR).all()


def test_the_status_is_read_the_public_way_when_grpcio_hides_it(slow_stub, monkeypatch):
    """Should a grpcio release drop the status attribute the done callback reads, the outcome
    is awaited through grpc.aio's public coroutines: same records, same kinds."""
    monkeypatch.setattr(triton_grpc, "_call_status", lambda call: None)
    outcome = _play(slow_stub.grpc_url, "grpcio", 50, 0.5, timeout_s=0.02)
    assert outcome.records.error_kinds == [TIMEOUT]
    assert (outcome.records.status == Status.ERROR).all()


def test_the_wire_client_writes_the_send_before_start_infer_returns(slow_stub):
    """The wire client writes on the socket inside start_infer: a loop then held busy for 50 ms
    does not hold the send back, so the stub's 40 ms answer is already waiting when the loop
    runs again (grpc.aio, by contrast, would only write it then: the next test)."""

    async def play() -> tuple[int, int, str | None, list[int]]:
        target = TritonGrpcTarget(slow_stub.grpc_url, "tiny", load_client="wire")
        spec = await target.open()
        await target.prepare(random_samples(spec, 1, seed=1))
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[str | None] = loop.create_future()
        stamps: list[int] = []
        target.start_infer(0, answered.set_result, lambda: stamps.append(time.perf_counter_ns()))
        time.sleep(0.05)  # the loop is busy (a burst of answers, say)
        released = time.perf_counter_ns()
        error = await asyncio.wait_for(answered, 10)
        done = time.perf_counter_ns()
        await target.close()
        return released, done, error, stamps

    released, done, error, stamps = timing.run(play())
    assert error is None
    assert stamps == []  # written at once: the runner's own stamp stands
    assert done - released < 30_000_000  # not the 40 ms a send written only now would take


def test_the_grpcio_send_is_stamped_when_grpc_writes_it_not_when_asked(stub):
    """A send asked for while the event loop is then held busy is written only when the loop
    runs grpc.aio's task: `written` comes after the hold, so the hold counts as send lag."""

    async def play() -> tuple[int, int, int, str | None]:
        target = TritonGrpcTarget(stub.grpc_url, "tiny", load_client="grpcio")
        spec = await target.open()
        await target.prepare(random_samples(spec, 1, seed=1))
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[str | None] = loop.create_future()
        stamps: list[int] = []
        asked = time.perf_counter_ns()
        target.start_infer(0, answered.set_result, lambda: stamps.append(time.perf_counter_ns()))
        assert stamps == []  # not written while start_infer runs
        time.sleep(0.05)  # the loop is busy (a burst of answers, say)
        released = time.perf_counter_ns()
        error = await asyncio.wait_for(answered, 10)
        await target.close()
        return asked, released, stamps[0], error

    asked, released, written, error = timing.run(play())
    assert error is None
    assert written >= released > asked + 40_000_000


def test_a_call_on_a_closed_wire_client_is_a_failed_record_not_a_hang(stub):
    async def play() -> str | None:
        target = TritonGrpcTarget(stub.grpc_url, "tiny", load_client="wire")
        spec = await target.open()
        await target.prepare(random_samples(spec, 1, seed=1))
        assert target._wire_client is not None
        target._wire_client.close()
        answered: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        target.start_infer(0, answered.set_result)
        result = await asyncio.wait_for(answered, 10)
        await target.close()
        return result

    assert timing.run(play()) == "grpc CANCELLED: client closed"


def test_a_call_on_a_closed_channel_is_a_failed_record_not_a_crash(stub):
    async def play() -> str | None:
        target = TritonGrpcTarget(stub.grpc_url, "tiny", load_client="grpcio")
        spec = await target.open()
        await target.prepare(random_samples(spec, 1, seed=1))
        assert target._client is not None
        await target._client._channel.close()
        answered: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        target.start_infer(0, answered.set_result)
        result = await asyncio.wait_for(answered, 10)
        target._client = None
        return result

    kind = timing.run(play())
    assert kind is not None and kind != TIMEOUT
