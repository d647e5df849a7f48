"""The automatic worker count's start-up calibration: what it measures, when it runs, and how
its figure chooses the count (shards/client_cost.py, shards/plan.py, scenarios/mlperf/play.py)."""

from __future__ import annotations

import asyncio

import pytest
from rich.console import Console
from rich.table import Table

from loadtest.core.settings import ClientSettings, ServerSettings, TargetSettings
from loadtest.report.terminal import _generator_rows
from loadtest.scenarios.mlperf import play
from loadtest.scenarios.mlperf.play import Generator, measure_client_cost, run_server
from loadtest.shards.client_cost import (
    CORE_SHARE_ALONE,
    CORE_SHARE_BESIDE_LOCAL_SERVER,
    ClientCost,
)
from loadtest.shards.plan import auto_worker_choice, auto_worker_count
from loadtest.targets.fake import fake_from_url

NS = 1_000_000_000
# A loopback server with 4 cores: 3 left for workers (one kept for the server).
LOCAL_FOUR_CORES = (ClientSettings(cpu_count=4), TargetSettings(url="127.0.0.1:9"))


def _cost(us: float, beside_local_server: bool = False) -> ClientCost:
    return ClientCost(us / 1e6, 10_000, 0.5, beside_local_server)


def test_a_calibrated_cost_sets_the_clean_rate_and_the_count():
    # 17.5 µs per query: one worker holds 0.35 / 17.5 µs = 20 000 QPS and runs at ≤ 10 000.
    cost = _cost(17.5)
    assert cost.clean_rate == pytest.approx(CORE_SHARE_ALONE / 17.5e-6)
    assert cost.clean_rate == pytest.approx(20000)
    assert auto_worker_count(20000, "grpc", 8, cost.clean_rate) == 2
    assert auto_worker_count(20000, "grpc", 8) == 7  # the fixed rule: 3000 per worker
    choice = auto_worker_choice(20000, "grpc", 8, cost, "")
    assert choice.count == 2
    assert "18 µs client CPU per query" in choice.why and "20,000 QPS" in choice.why
    # Beside a server on the same cores a worker fills less of its core: more workers.
    local = _cost(17.5, beside_local_server=True)
    assert local.clean_rate == pytest.approx(CORE_SHARE_BESIDE_LOCAL_SERVER / 17.5e-6)
    assert auto_worker_choice(20000, "grpc", 8, local, "").count == 5
    # A costlier client needs more workers, capped by the cores.
    assert auto_worker_choice(20000, "grpc", 8, _cost(200), "").count == 8
    assert auto_worker_choice(20000, "grpc", 3, _cost(200), "").count == 3


def test_without_a_calibration_the_reason_says_which_rule_chose(monkeypatch):
    async def inconclusive(target, sample_count, sample_seed, beside_local_server):
        return None

    monkeypatch.setattr(play, "measure_client_cost", inconclusive)
    target = fake_from_url("fake://")

    def why(generator: Generator, qps: float) -> tuple[int, str]:
        choice = asyncio.run(generator.choose_workers(target, qps, 16, 1))
        return choice.count, choice.why

    local = Generator(*LOCAL_FOUR_CORES)
    count, text = why(local, 20000)
    assert count == 3 and "too few queries" in text and "6,000 QPS" in text
    assert "one worker holds this rate" in why(local, 1000)[1]
    two_cores = Generator(ClientSettings(cpu_count=2), LOCAL_FOUR_CORES[1])
    assert "one core for workers" in why(two_cores, 20000)[1]
    ray = Generator(ClientSettings(cpu_count=4, ray_address="auto"), LOCAL_FOUR_CORES[1])
    assert "Ray cluster" in why(ray, 20000)[1]
    assert why(Generator(ClientSettings(workers=2, cpu_count=4), LOCAL_FOUR_CORES[1]), 1) == (
        2,
        "--workers",
    )


def test_the_calibration_runs_only_where_the_count_can_be_more_than_one():
    local_two_cores = Generator(ClientSettings(cpu_count=2), TargetSettings(url="127.0.0.1:9"))
    assert not local_two_cores.calibrates(50000)  # one core left for workers: always one
    local = Generator(*LOCAL_FOUR_CORES)
    assert not local.calibrates(3000)  # one worker holds it by the fixed rule
    assert local.calibrates(3001)
    explicit = Generator(ClientSettings(workers=2, cpu_count=4), LOCAL_FOUR_CORES[1])
    assert not explicit.calibrates(50000)
    ray = Generator(ClientSettings(cpu_count=4, ray_address="auto"), LOCAL_FOUR_CORES[1])
    assert not ray.calibrates(50000)  # the cluster's machines are not this one
    fake = Generator(ClientSettings(cpu_count=4), TargetSettings(url="fake://"))
    assert not fake.calibrates(50000)


def test_the_calibration_is_measured_once_per_generator(monkeypatch):
    calls = []

    async def measured(target, sample_count, sample_seed, beside_local_server):
        calls.append((sample_count, beside_local_server))
        return _cost(17.5)

    monkeypatch.setattr(play, "measure_client_cost", measured)
    generator = Generator(*LOCAL_FOUR_CORES)
    target = fake_from_url("fake://")

    async def choose() -> list[int]:
        return [
            (await generator.choose_workers(target, qps, 16, 1)).count
            for qps in (1000, 20000, 40000)
        ]

    # 1000 QPS needs no calibration; 20 000 and 40 000 share one (10 000 per worker, 3 cores).
    assert asyncio.run(choose()) == [1, 2, 3]
    assert calls == [(16, True)]  # once, told that the server is on this machine


def test_measure_client_cost_divides_this_process_cpu_by_the_answers():
    async def measure(url: str) -> ClientCost | None:
        target = fake_from_url(url)
        await target.open()
        try:
            return await measure_client_cost(target, 16, 1, False)
        finally:
            await target.close()

    cost = asyncio.run(measure("fake://?servers=16&law=constant&service_ms=0.2"))
    assert cost is not None
    # 16 in flight against 0.2 ms answers: tens of thousands of queries in 0.5 s at most.
    assert 500 <= cost.queries <= 0.5 * 16 / 0.0002 * 1.05
    assert cost.seconds == pytest.approx(0.5, abs=0.2)
    assert 0 < cost.cpu_s_per_query < 0.01
    # A server that answers ~10 queries in 0.5 s tells nothing about the client's cost.
    assert asyncio.run(measure("fake://?servers=1&law=constant&service_ms=50")) is None


def test_a_calibrated_single_worker_plays_in_a_worker_process(monkeypatch):
    # The fixed rule asked for 3 workers at 9000 QPS, so this process's loop was chosen for a
    # third of the rate; a calibrated count of one still plays in its own worker process.
    async def cheap(target, sample_count, sample_seed, beside_local_server):
        return _cost(7)  # one worker holds 50 000 QPS

    played = {}

    async def sharded(model, sample_count, settings, drain_ns, generator, choice, *rest):
        played["choice"] = choice
        raise RuntimeError("stop here")

    monkeypatch.setattr(play, "measure_client_cost", cheap)
    monkeypatch.setattr(play, "_run_server_sharded", sharded)
    target = fake_from_url("fake://")
    settings = ServerSettings(qps=9000, target_latency_ns=NS, min_duration_ns=NS)

    async def run() -> None:
        spec = await target.open()
        await run_server(target, spec, 16, settings, NS, generator=Generator(*LOCAL_FOUR_CORES))

    with pytest.raises(RuntimeError, match="stop here"):
        asyncio.run(run())
    assert played["choice"].count == 1
    assert "50,000 QPS" in played["choice"].why


def test_the_report_says_how_the_automatic_count_chose():
    async def run():
        target = fake_from_url("fake://?servers=8&law=constant&service_ms=1")
        spec = await target.open()
        settings = ServerSettings(qps=200, target_latency_ns=NS, min_duration_ns=NS // 2)
        generator = Generator(ClientSettings(), TargetSettings(url="fake://"))
        return settings, await run_server(target, spec, 16, settings, NS, generator=generator)

    _settings, measurement = asyncio.run(run())
    assert measurement.client is not None
    assert measurement.client.worker_choice == "automatic: one, for an in-process fake target"
    assert measurement.client.to_dict()["worker_choice"] == measurement.client.worker_choice
    table = Table()
    _generator_rows(table, measurement.client)
    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    assert "worker count" in text and "in-process fake target" in text


def test_a_high_rate_against_the_stub_is_calibrated_and_played_by_the_chosen_workers(stub):
    """End to end: a real calibration over HTTP against the stub, then the chosen worker count
    plays the run in worker processes. `cpu_count=3` stands for a bigger machine (2 cores left
    for workers beside the loopback server), so the fixed rule would ask for two at 4000 QPS."""
    from loadtest.core.settings import Protocol
    from loadtest.engine.samples import open_with_samples
    from loadtest.targets import triton_target

    settings = ServerSettings(
        qps=4000, target_latency_ns=NS, min_duration_ns=NS // 2, min_query_count=1
    )
    generator = Generator(
        ClientSettings(cpu_count=3),
        TargetSettings(url=stub.http_url, protocol=Protocol.HTTP, model="tiny"),
    )
    assert generator.worker_count(4000) == 2 and generator.calibrates(4000)

    async def run():
        target = triton_target(stub.http_url, "http", "tiny")
        try:
            spec, library = await open_with_samples(target, 16, 1)
            return await run_server(
                target, spec, len(library), settings, 10 * NS, generator=generator
            )
        finally:
            await target.close()

    measurement = asyncio.run(run())
    client = measurement.client
    assert client is not None
    assert client.worker_choice.startswith("automatic: calibrated")
    assert "beside a server on this machine" in client.worker_choice
    cost = generator._costs["cost"]
    assert cost is not None and cost.queries >= 500
    # Whatever this machine measured, the count is the rule applied to it, in worker processes.
    assert len(client.workers) == auto_worker_count(4000, "http", 2, cost.clean_rate)
    assert client.placement == "processes"
    assert measurement.outcome.records.ok.all()
