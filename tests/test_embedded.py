"""The embedded Triton: real server, real outputs, clear failures, and no process left behind."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from loadtest.errors import ServerError, TargetError
from loadtest.server.embedded import EmbeddedTriton, Ports, free_ports
from loadtest.targets.triton_grpc import TritonGrpcTarget
from loadtest.targets.triton_http import TritonHttpTarget

pytestmark = pytest.mark.triton


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is not running anymore.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def _reference(repository: Path, model: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(repository / model / "1" / "model.onnx"))
    return session.run(None, feeds)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("model", ["tiny", "resnet50"])
def test_outputs_equal_onnxruntime_in_process(triton, built_repository, protocol, model):
    from loadtest.engine.samples import random_samples

    async def outputs():
        cls = TritonGrpcTarget if protocol == "grpc" else TritonHttpTarget
        url = triton.grpc_url if protocol == "grpc" else triton.http_url
        target = cls(url, model)
        spec = await target.open()
        samples = random_samples(spec, 3, seed=11)
        await target.prepare(samples)
        got = [await target.infer_outputs(i) for i in range(3)]
        await target.close()
        return spec, samples, got

    spec, samples, got = asyncio.run(outputs())
    for sample, result in zip(samples, got, strict=True):
        expected = _reference(built_repository, model, dict(sample))
        for out_spec, want in zip(spec.outputs, expected, strict=True):
            have = result[out_spec.name]
            assert have.shape == want.shape and have.dtype == want.dtype
            # Same onnxruntime, same graph; thread partitioning may reorder float sums slightly.
            np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-5)


def test_unknown_model_is_one_clear_error(triton):
    async def open_unknown():
        target = TritonGrpcTarget(triton.grpc_url, "no_such_model")
        try:
            await target.open()
        finally:
            await target.close()

    with pytest.raises(TargetError, match="no_such_model"):
        asyncio.run(open_unknown())


def test_wrong_input_shape_is_rejected_at_prepare(triton):
    async def prepare_wrong():
        target = TritonHttpTarget(triton.http_url, "tiny")
        await target.open()
        try:
            await target.prepare([{"INPUT0": np.zeros((1, 15), dtype=np.float32)}])
        finally:
            await target.close()

    with pytest.raises(TargetError, match="rejected the inputs"):
        asyncio.run(prepare_wrong())


def test_port_taken_is_one_clear_error(built_repository, triton):
    taken = int(triton.http_url.rsplit(":", 1)[1])
    grpc, metrics = free_ports(2)
    server = EmbeddedTriton(
        built_repository, ["tiny"], Ports(http=taken, grpc=grpc, metrics=metrics)
    )
    with pytest.raises(ServerError, match=f"port {taken} is already in use"):
        server.start()
    assert server.process is None


def test_model_that_fails_to_load_names_model_and_shows_log(built_repository, tmp_path):
    repository = tmp_path / "repo"
    shutil.copytree(built_repository / "tiny", repository / "tiny")
    (repository / "tiny" / "1" / "model.onnx").write_bytes(b"this is not an onnx file")
    # precheck=False: let Triton itself fail, to test the log-tail path.
    server = EmbeddedTriton(repository, ["tiny"], startup_timeout_s=60, precheck=False)
    with pytest.raises(ServerError) as error:
        server.start()
    assert "tiny" in str(error.value)
    assert error.value.log_tail  # the server's own words come with it
    assert server.process is None
    server.cleanup()


def test_corrupt_model_file_is_caught_before_launch(built_repository, tmp_path):
    repository = tmp_path / "repo"
    shutil.copytree(built_repository / "tiny", repository / "tiny")
    (repository / "tiny" / "1" / "model.onnx").write_bytes(b"truncated")
    server = EmbeddedTriton(repository, ["tiny"])
    with pytest.raises(ServerError, match="tiny") as error:
        server.start()
    assert "\n" not in str(error.value)  # one line
    assert server.process is None


def _start_serve(repository: Path) -> tuple[subprocess.Popen[str], int]:
    http, grpc, metrics = free_ports(3)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loadtest.cli",
            "serve",
            "--repository",
            str(repository),
            "--model",
            "tiny",
            "--http-port",
            str(http),
            "--grpc-port",
            str(grpc),
            "--metrics-port",
            str(metrics),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    for line in process.stdout:
        match = re.search(r"\(pid (\d+)\)", line)
        if match:
            return process, int(match.group(1))
        if time.monotonic() > deadline:
            break
    process.kill()
    raise AssertionError("loadtest serve never reported ready")


def test_ctrl_c_on_serve_stops_the_server(built_repository):
    process, server_pid = _start_serve(built_repository)
    assert _alive(server_pid)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0
    assert _wait_gone(server_pid)


def test_server_dies_with_its_parent_even_on_sigkill(built_repository):
    process, server_pid = _start_serve(built_repository)
    process.kill()  # no chance to clean up: the parent-death signal must do it
    process.wait(timeout=10)
    assert _wait_gone(server_pid)


def test_sigterm_during_a_run_stops_the_embedded_server(built_repository, tmp_path):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loadtest.cli",
            "server",
            "--repository",
            str(built_repository),
            "--url",
            "127.0.0.1:9",
            "--qps",
            "20",
            "--duration",
            "60",
            "--no-live",
            "--output",
            str(tmp_path / "out"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    server_pid = None
    for line in process.stderr:
        match = re.search(r"\(pid (\d+)\)", line)
        if match:
            server_pid = int(match.group(1))
            break
    assert server_pid is not None and _alive(server_pid)
    time.sleep(1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 128 + signal.SIGTERM
    assert _wait_gone(server_pid)
    # Like Ctrl-C: the partial result is written (before the server is stopped).
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["run"]["partial"] is True
    assert result["run"]["stop_reason"] == "terminated (SIGTERM)"
