"""The stub's service law (stub/service.py): service times, and the queue in front of K servers.

The queue is pure arithmetic on arrival times, so it is checked against hand-worked cases and
queueing theory without a server; one test sees the queue through the running stub."""

from __future__ import annotations

import asyncio
import math
import random
import time

import pytest

from loadtest.engine.samples import random_samples
from loadtest.stub.catalog import Behaviour, Catalog
from loadtest.stub.http_server import start_http
from loadtest.stub.process import running_stub
from loadtest.stub.service import Service, ServiceLaw
from loadtest.targets.triton_grpc import TritonGrpcTarget
from loadtest.targets.triton_http import TritonHttpTarget


def test_without_servers_every_request_is_held_its_own_service_time():
    service = Service(0.01)
    assert [service.hold_s(0.0) for _ in range(3)] == [0.01, 0.01, 0.01]


def test_one_server_serves_first_come_first_served():
    service = Service(0.01, servers=1)
    holds = [service.hold_s(0.0) for _ in range(3)]  # three at once: each waits for the last
    assert holds == pytest.approx([0.01, 0.02, 0.03])
    assert service.hold_s(0.025) == pytest.approx(0.015)  # the third ends at 0.03, then 0.01
    assert service.hold_s(1.0) == pytest.approx(0.01)  # an idle server: no wait


def test_k_servers_take_k_requests_at_once():
    service = Service(0.01, servers=2)
    assert [service.hold_s(0.0) for _ in range(5)] == pytest.approx([0.01, 0.01, 0.02, 0.02, 0.03])


def test_exponential_service_is_seeded_with_its_mean_and_cv():
    def draws(seed: int) -> list[float]:
        service = Service(0.005, law=ServiceLaw.EXPONENTIAL, seed=seed)
        return [service.service_s() for _ in range(20_000)]

    first = draws(3)
    assert first == draws(3) and first != draws(4)
    mean = sum(first) / len(first)
    cv = math.sqrt(sum((x - mean) ** 2 for x in first) / len(first)) / mean
    assert abs(mean - 0.005) < 4 * 0.005 / math.sqrt(len(first))  # 4 standard errors
    assert abs(cv - 1) < 0.05


def test_the_queue_is_mm1_as_theory_says():
    # M/M/1 at ρ = 0.5 (λ = 100/s, mean service 5 ms): mean time in system 1/(μ − λ) = 10 ms.
    service = Service(0.005, servers=1, law=ServiceLaw.EXPONENTIAL, seed=1)
    arrivals = random.Random(2)
    now, total, count = 0.0, 0.0, 50_000
    for _ in range(count):
        now += arrivals.expovariate(100)
        total += service.hold_s(now)
    assert total / count == pytest.approx(0.010, rel=0.1)


def test_nonsense_is_refused():
    with pytest.raises(ValueError):
        Service(0.01, servers=-1)
    with pytest.raises(ValueError):
        Service(-0.01)


async def _four_at_once(target: TritonGrpcTarget | TritonHttpTarget) -> float:
    """Seconds until the last of four requests sent together is answered."""
    spec = await target.open()
    await target.prepare(random_samples(spec, 1, seed=1))
    started = time.monotonic()
    errors = await asyncio.gather(*(target.infer(0) for _ in range(4)))
    took = time.monotonic() - started
    await target.close()
    assert errors == [None] * 4
    return took


def test_the_running_stub_queues_behind_one_server():
    # Four requests at once on one server of 60 ms: the last is answered after ~240 ms (uvloop's
    # timers are whole ms: a little early at most), over both protocols, through the CLI flag.
    with running_stub("--servers", "1", delay_ms=60) as stub:
        over_http = asyncio.run(_four_at_once(TritonHttpTarget(stub.http_url, "tiny")))
        over_grpc = asyncio.run(_four_at_once(TritonGrpcTarget(stub.grpc_url, "tiny")))
    assert 0.235 <= over_http < 0.6 and 0.235 <= over_grpc < 0.6, (over_http, over_grpc)


def test_without_servers_the_same_four_are_answered_together():
    # The control: the same client and four requests, no queue (in process, no subprocess).
    async def scenario() -> float:
        server = await start_http(
            Catalog(), "127.0.0.1", 0, behaviour=Behaviour(service=Service(0.06))
        )
        port = server.sockets[0].getsockname()[1]
        try:
            return await _four_at_once(TritonHttpTarget(f"127.0.0.1:{port}", "tiny"))
        finally:
            server.close()

    assert 0.055 <= asyncio.run(scenario()) < 0.2
