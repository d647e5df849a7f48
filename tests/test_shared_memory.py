"""System shared memory against the real embedded Triton: same outputs, nothing left behind."""

from __future__ import annotations

import asyncio
import glob
import os

import numpy as np
import pytest

from loadtest.core.schedule import server_schedule
from loadtest.core.settings import SharedMemoryKind
from loadtest.engine.runner import Runner
from loadtest.engine.samples import random_samples
from loadtest.targets import shared_memory
from loadtest.targets.shared_memory import with_shared_memory
from loadtest.targets.triton_grpc import TritonGrpcTarget
from loadtest.targets.triton_http import TritonHttpTarget

pytestmark = pytest.mark.triton


def _segments() -> set[str]:
    return set(glob.glob(f"/dev/shm/{shared_memory.PREFIX}{os.getpid()}_*"))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("model", ["tiny", "resnet50"])
def test_shared_memory_outputs_equal_plain_outputs(triton, protocol, model):
    cls = TritonGrpcTarget if protocol == "grpc" else TritonHttpTarget
    url = triton.grpc_url if protocol == "grpc" else triton.http_url

    async def outputs(kind: SharedMemoryKind):
        target = with_shared_memory(cls(url, model), kind, "eq")
        spec = await target.open()
        try:
            await target.prepare(random_samples(spec, 3, seed=4))
            got = [await target.infer_outputs(i) for i in range(3)]
            if kind is SharedMemoryKind.SYSTEM:
                assert len(_segments()) == 4  # three input regions and one output region
                # The load path too: a short open-loop run, every query answered.
                schedule = server_schedule(50, 200_000_000, 10, 3, 0, 1)
                outcome = await Runner(schedule, target).run(handle_sigint=False)
                assert outcome.records.ok.all()
        finally:
            await target.close()
        return got

    before = _segments()
    plain = asyncio.run(outputs(SharedMemoryKind.NONE))
    shared = asyncio.run(outputs(SharedMemoryKind.SYSTEM))
    for a, b in zip(plain, shared, strict=True):
        assert a.keys() == b.keys()
        for name in a:
            assert a[name].shape == b[name].shape and a[name].dtype == b[name].dtype
            np.testing.assert_array_equal(a[name], b[name])
    assert _segments() == before  # unregistered and unlinked


def test_regions_are_unregistered_from_the_server(triton):
    import tritonclient.grpc as grpcclient

    async def run():
        target = with_shared_memory(
            TritonGrpcTarget(triton.grpc_url, "tiny"), SharedMemoryKind.SYSTEM, "unreg"
        )
        spec = await target.open()
        await target.prepare(random_samples(spec, 2, seed=1))
        client = grpcclient.InferenceServerClient(triton.grpc_url)
        during = client.get_system_shared_memory_status(as_json=True)
        await target.close()
        after = client.get_system_shared_memory_status(as_json=True)
        return during, after

    during, after = asyncio.run(run())
    names = {r["name"] for r in during.get("regions", {}).values()}
    assert len([n for n in names if "_unreg_" in n]) == 3
    assert not [r for r in after.get("regions", {}).values() if "_unreg_" in r["name"]]
