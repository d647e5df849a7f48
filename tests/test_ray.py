"""Shards on Ray actors (the optional `ray` extra): skipped where Ray is not installed.

Run with `pip install -e '.[ray]'` then `pytest -m ray`. It starts a private local Ray with two
CPUs, as a one-host stand-in for a cluster.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from loadtest.core.schedule import merged_schedule, shard_schedule
from loadtest.core.settings import ClientSettings, Protocol, ServerSettings, TargetSettings
from loadtest.errors import TargetError
from loadtest.scenarios.play import Generator, run_server
from loadtest.targets.fake import fake_from_url

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray
NS = 1_000_000_000


def _run(address: str, workers: int = 2):
    url = "fake://?servers=64&law=constant&service_ms=1"
    settings = ServerSettings(qps=300, target_latency_ns=50_000_000, min_duration_ns=NS)
    generator = Generator(
        ClientSettings(workers=workers, ray_address=address),
        TargetSettings(url=url, protocol=Protocol.GRPC, model="fake"),
    )

    async def play():
        target = fake_from_url(url)
        model = await target.open()
        return await run_server(target, model, 16, settings, 5 * NS, generator=generator)

    return asyncio.run(play())


def test_shards_on_a_local_ray_cluster_merge_exactly():
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    try:
        measurement = _run("auto")
    finally:
        ray.shutdown()
    records = measurement.outcome.records
    expected = merged_schedule([shard_schedule(300, NS, 100, 16, 0, 1, k, 2) for k in range(2)])
    assert np.array_equal(records.scheduled_ns, expected.scheduled_ns)
    assert records.ok.all()
    assert measurement.client is not None
    assert measurement.client.placement == "ray auto"
    assert len({w.pid for w in measurement.client.workers}) == 2
    assert np.percentile(records.send_lag_ns(), 99) < 50_000_000


def test_unreachable_ray_address_is_one_clear_error():
    with pytest.raises(TargetError, match="cannot reach the Ray cluster"):
        _run("ray://127.0.0.1:1")
