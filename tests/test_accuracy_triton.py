"""--check-outputs and --same-sample on the real embedded Triton (the session's server, tiny)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import expected_exit_code, loadtest

from loadtest.server.model_control import ModelRepository

pytestmark = pytest.mark.triton


@pytest.mark.parametrize(
    ("protocol", "shared_memory"),
    [("http", "none"), ("grpc", "none"), ("http", "system"), ("grpc", "system")],
)
def test_check_outputs_passes_on_tiny(triton, built_repository: Path, tmp_path: Path,
                                      protocol: str, shared_memory: str):  # fmt: skip
    url = triton.grpc_url if protocol == "grpc" else triton.http_url
    out = tmp_path / "run"
    result = loadtest(
        "server", "--url", url, "--protocol", protocol, "--embedded", "never",
        "--repository", str(built_repository), "--model", "tiny", "--qps", "300",
        "--duration", "0.5", "--target-latency", "50", "--late-threshold", "20",
        "--shared-memory", shared_memory, "--check-outputs", "0.4", "--workers", "1",
        "--output", str(out), "--no-live",
    )  # fmt: skip
    data = json.loads((out / "result.json").read_text())
    check = data["output_check"]
    assert check["passed"] is True, check
    assert check["checked"] == check["sampled"] > 30
    assert "onnxruntime" in check["reference"]
    names = {c["name"]: c["passed"] for c in data["verdict"]["checks"]}
    assert names["outputs match reference"] is True
    # The latency verdict is this shared machine's business; the exit code must follow it.
    assert result.returncode == expected_exit_code(data), result.stderr


def _set_response_cache(url: str, enable: bool) -> None:
    async def change() -> None:
        repository = ModelRepository(url, "http", "tiny")
        try:
            config = await repository.config()
            if enable:
                config["response_cache"] = {"enable": True}
            else:
                config.pop("response_cache", None)
            await repository.load(config)
        finally:
            await repository.close()

    asyncio.run(change())


@pytest.fixture
def cached_tiny(triton) -> Iterator[str]:
    """tiny with Triton's response cache on, for one test; off again afterwards."""
    _set_response_cache(triton.http_url, True)
    try:
        yield triton.http_url
    finally:
        _set_response_cache(triton.http_url, False)


def _same_sample_run(url: str, out: Path) -> tuple[int, dict]:
    result = loadtest(
        "single-stream", "--url", url, "--protocol", "http", "--embedded", "never",
        "--model", "tiny", "--duration", "0.3", "--min-queries", "50",
        "--target-latency", "50", "--same-sample", "--output", str(out), "--no-live",
    )  # fmt: skip
    return result.returncode, json.loads((out / "result.json").read_text())


def test_same_sample_flags_the_response_cache(cached_tiny: str, tmp_path: Path):
    """Twice: the second run's unique samples must be new to the cache too (drawn afresh)."""
    for attempt in ("first", "second"):
        code, data = _same_sample_run(cached_tiny, tmp_path / attempt)
        cache = data["cache_check"]
        assert cache["possible_cache"] is True, cache
        assert cache["server_cache_hits"] == 200  # every repeated query, and no unique one
        assert code == 3 and data["verdict"]["valid"] is False


def test_same_sample_is_quiet_without_the_cache(triton, tmp_path: Path):
    code, data = _same_sample_run(triton.http_url, tmp_path / "off")
    cache = data["cache_check"]
    assert cache["possible_cache"] is False, cache
    assert code == expected_exit_code(data)
    assert cache["server_cache_hits"] == 0
    names = {c["name"]: c["passed"] for c in data["verdict"]["checks"]}
    assert names["no response cache"] is True
