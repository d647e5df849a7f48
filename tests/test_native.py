"""Native onnxruntime target and the in-process dynamic batcher."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from loadtest.engine.samples import random_samples
from loadtest.errors import TargetError
from loadtest.models import build_repository
from loadtest.targets.batcher import DynamicBatcher
from loadtest.targets.native import NativeOptions, NativeTarget, check_providers


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("repo")
    build_repository(repository, ["tiny"])
    return repository


def test_options_mirror_config(tiny_repo: Path):
    target = NativeTarget.from_repository(tiny_repo, "tiny")
    opts = target.options
    assert opts.instances == 1 and opts.max_batch_size == 64
    assert opts.dynamic_batching and opts.max_queue_delay_us == 100
    assert opts.intra_op_threads == 1 and opts.inter_op_threads == 1
    assert not opts.allow_spinning
    assert target.spec.inputs[0].name == "INPUT0" and target.spec.inputs[0].shape == (16,)
    overridden = NativeTarget.from_repository(tiny_repo, "tiny", {"dynamic_batching": False})
    assert not overridden.options.batching


@pytest.mark.parametrize("batching", [True, False])
def test_outputs_equal_direct_onnxruntime(tiny_repo: Path, batching: bool):
    onnx_path = tiny_repo / "tiny" / "1" / "model.onnx"
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    async def main() -> list[dict[str, np.ndarray]]:
        target = NativeTarget.from_repository(
            tiny_repo, "tiny", {"dynamic_batching": batching, "instances": 2}
        )
        spec = await target.open()
        samples = random_samples(spec, 16, seed=3)
        await target.prepare(samples)
        try:
            outs = await asyncio.gather(*(target.infer_outputs(i) for i in range(16)))
            errors = await asyncio.gather(*(target.infer(i) for i in range(16)))
            assert errors == [None] * 16
        finally:
            await target.close()
        for i, out in enumerate(outs):
            (expected,) = session.run(None, dict(samples[i]))
            np.testing.assert_allclose(out["OUTPUT0"], expected, rtol=1e-5, atol=1e-6)
        return outs

    asyncio.run(main())


def test_from_plain_onnx(tiny_repo: Path):
    target = NativeTarget.from_onnx(tiny_repo / "tiny" / "1" / "model.onnx", NativeOptions())
    assert target.spec.max_batch_size >= 1 and target.spec.inputs[0].shape == (16,)


def test_bad_input_is_one_clear_error(tiny_repo: Path, tmp_path: Path):
    with pytest.raises(TargetError, match="no ONNX file"):
        NativeTarget.from_onnx(tmp_path / "missing.onnx", NativeOptions())
    with pytest.raises(TargetError, match=r"no config\.pbtxt"):
        NativeTarget.from_repository(tiny_repo, "no_such_model")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(TargetError, match=r"CUDAExecutionProvider.*not available"):
            check_providers(["cuda"])
    assert check_providers(["cpu"]) == ("CPUExecutionProvider",)


# -- the batcher ---------------------------------------------------------------------------------


def _batcher(max_batch: int, delay_ns: int, instances: int = 1, work_s: float = 0.0):
    calls: list[int] = []

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        calls.append(len(feeds["x"]))
        if work_s:
            time.sleep(work_s)
        return [feeds["x"] * 2]

    executor = ThreadPoolExecutor(instances)
    return DynamicBatcher(run, max_batch, delay_ns, executor, instances), calls, executor


def test_burst_is_batched_up_to_max_and_split_back():
    async def main() -> None:
        batcher, calls, executor = _batcher(max_batch=4, delay_ns=50_000_000)
        try:
            results = await asyncio.gather(
                *(batcher.submit({"x": np.array([[float(i)]])}) for i in range(10))
            )
        finally:
            batcher.close()
            executor.shutdown()
        for i, (out,) in enumerate(results):
            assert out.tolist() == [[2.0 * i]]  # each request gets its own rows back
        assert max(calls) <= 4 and sum(calls) == 10
        assert calls[:2] == [4, 4]  # a full batch leaves without waiting out the delay

    asyncio.run(main())


def test_lone_request_waits_about_the_queue_delay_then_runs_alone():
    async def main() -> None:
        batcher, calls, executor = _batcher(max_batch=8, delay_ns=20_000_000)
        try:
            started = time.perf_counter()
            await batcher.submit({"x": np.ones((1, 1))})
            elapsed = time.perf_counter() - started
        finally:
            batcher.close()
            executor.shutdown()
        assert calls == [1]
        # waited out the 20 ms delay, but not much longer (generous bound for shared machines)
        assert 0.015 <= elapsed < 0.5
        (wait,) = batcher.stats().queue_wait_ns
        assert 15_000_000 <= wait < 500_000_000

    asyncio.run(main())


def test_backlog_forms_batches_while_the_instance_is_busy():
    async def main() -> None:
        batcher, calls, executor = _batcher(max_batch=16, delay_ns=0, work_s=0.05)
        try:
            first = asyncio.ensure_future(batcher.submit({"x": np.ones((1, 1))}))
            await asyncio.sleep(0.01)  # the instance is now busy for ~50 ms
            rest = [batcher.submit({"x": np.ones((1, 1))}) for _ in range(6)]
            await asyncio.gather(first, *rest)
        finally:
            batcher.close()
            executor.shutdown()
        assert calls[0] == 1 and sum(calls) == 7
        assert max(calls[1:]) >= 3  # queued while busy, then run together

    asyncio.run(main())


def test_errors_reach_every_request_of_the_batch():
    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise RuntimeError("boom")

    async def main() -> None:
        executor = ThreadPoolExecutor(1)
        batcher = DynamicBatcher(run, 4, 1_000_000, executor, 1)
        try:
            results = await asyncio.gather(
                *(batcher.submit({"x": np.ones((1, 1))}) for _ in range(3)),
                return_exceptions=True,
            )
        finally:
            batcher.close()
            executor.shutdown()
        assert all(isinstance(r, RuntimeError) for r in results)

    asyncio.run(main())
