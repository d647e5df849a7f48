"""`loadtest sweep` on the real embedded Triton: configurations loaded through the repository API,
and the server back on its original configuration after a sweep, a rejected configuration and a
SIGTERM; a server not in explicit model-control mode is one line before anything runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tritonclient.http as httpclient

from loadtest.errors import ExitCode

pytestmark = pytest.mark.triton

SMALL = (
    "--percentile", "90", "--target-latency", "200", "--probe-duration", "0.5",
    "--warmup", "0.3", "--point-budget", "5", "--resolution", "0.2", "--embedded", "never",
    "--no-live", "--max-batch-size", "64", "--intra-op-threads", "1",
)  # fmt: skip


def _config(triton: Any) -> dict[str, Any]:
    client = httpclient.InferenceServerClient(triton.http_url)
    try:
        return dict(client.get_model_config("tiny"))
    finally:
        client.close()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtest.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def test_a_two_by_two_sweep_of_tiny_ends_on_the_original_config(triton, tmp_path: Path):
    before = _config(triton)
    done = _cli(
        "sweep", "--model", "tiny", "--url", triton.grpc_url, *SMALL, "--instances", "1,2",
        "--queue-delay-us", "off,100", "--budget", "25", "--output", "out", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode in (ExitCode.OK, ExitCode.INVALID), done.stdout + done.stderr
    data = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert data["grid_size"] == 4 and 2 <= data["points_measured"] <= 4
    loaded = [p for p in data["points"] if not p["baseline"]]
    assert loaded and all(not p["failed_to_load"] for p in loaded)
    # the server really ran the other configuration: the one the sweep loaded and measured
    assert any(p["config"]["instance_group"][0]["count"] == 2 or "dynamic_batching"
               not in p["config"] for p in loaded)  # fmt: skip
    # this server is the test session's, not a child of the command: its memory is not readable
    # by RSS, and the Python backend reports no memory_usage; the file says so
    assert all(p["memory_source"] for p in data["points"] if not p["failed_to_load"])
    assert data["restored"] is True
    assert _config(triton) == before


def test_a_config_the_server_rejects_is_a_failed_point_and_the_original_comes_back(
    triton, tmp_path: Path
):
    import asyncio

    from loadtest.core.settings import NS_PER_S, PeakSettings
    from loadtest.scenarios.searches.sweep_run import Samples, SweepSettings, run_sweep
    from loadtest.scenarios.searches.sweep_space import SearchSpace, baseline_of
    from loadtest.scenarios.searches.sweep_triton import TritonConfigurator
    from loadtest.targets.triton_grpc import TritonGrpcTarget

    before = _config(triton)

    class Broken(TritonConfigurator):
        """Asks Triton for a preferred batch size above max_batch_size: Triton refuses it."""

        async def apply(self, config: dict[str, Any]) -> None:
            batching = dict(config.get("dynamic_batching") or {})
            batching["preferred_batch_size"] = [10_000]
            await super().apply({**config, "dynamic_batching": batching})

    async def sweep() -> Any:
        target = TritonGrpcTarget(triton.grpc_url, "tiny")
        configurator = Broken(target.capabilities.triton)
        original = await configurator.loaded()
        base = baseline_of(original)
        space = SearchSpace({
            "instances": (1, 2), "max_batch_size": (base.max_batch_size,),
            "queue_delay_us": (base.queue_delay_us,), "preferred_batch_sizes": (None,),
            "intra_op_threads": (base.intra_op_threads,),
            "inter_op_threads": (base.inter_op_threads,),
        })  # fmt: skip
        peak = PeakSettings(
            target_latency_ns=200_000_000, percentile=0.9, probe_duration_ns=NS_PER_S // 2,
            budget_ns=15 * NS_PER_S, resolution=0.3,
        )  # fmt: skip
        settings = SweepSettings(peak, point_budget_ns=4 * NS_PER_S, warmup_ns=NS_PER_S // 4)
        return await run_sweep(target, configurator, space, base, settings, Samples(8, 1), 5.0)

    outcome = asyncio.run(sweep())
    failed = [p for p in outcome.points if p.status == "failed to load"]
    assert [p.candidate.instances for p in failed] == [2]
    assert "failed to load" in failed[0].result.failed
    assert not outcome.restore_problem
    assert _config(triton) == before


def test_sigterm_mid_sweep_exits_143_on_the_original_config(triton, tmp_path: Path):
    before = _config(triton)
    process = subprocess.Popen(
        [sys.executable, "-m", "loadtest.cli", "sweep", "--model", "tiny", "--url",
         triton.grpc_url, *SMALL, "--instances", "1,2", "--budget", "60", "--output", "out"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    for line in process.stderr:
        if "point 2" in line:  # the second configuration is being loaded or measured
            break
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == ExitCode.TERMINATED, stdout + stderr
    data = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert data["partial"] is True and data["restored"] is True
    assert _config(triton) == before


def test_a_server_without_explicit_model_control_is_one_line(built_repository, tmp_path: Path):
    import shutil

    from loadtest.server.embedded import EmbeddedTriton

    repository = tmp_path / "repo"
    shutil.copytree(built_repository / "tiny", repository / "tiny")
    with EmbeddedTriton(repository, models=None) as server:  # mode none: loads all, no API
        done = _cli(
            "sweep", "--model", "tiny", "--url", server.grpc_url, *SMALL, "--budget", "20",
            "--output", "out", cwd=tmp_path,
        )  # fmt: skip
    assert done.returncode == ExitCode.ERROR, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "--model-control-mode=explicit" in lines[0]
    assert "point 1" not in done.stderr and not (tmp_path / "out").exists()
