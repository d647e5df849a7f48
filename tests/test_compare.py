"""`loadtest compare`: the Triton-vs-native arithmetic, bad input, and one run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loadtest.analysis.compare import RunPoint, peak_qps, relative
from loadtest.core.settings import Protocol
from loadtest.core.target import ModelSpec, TensorSpec
from loadtest.errors import TargetError
from loadtest.scenarios.experiments.compare_run import (
    CompareTarget,
    check_specs_agree,
    max_abs_difference,
    target_names,
)


def point(target: str, qps: float, p50_us: int, p99_us: int, valid=True, client_bound=False):
    return RunPoint(target, qps, qps, p50_us * 1000, p99_us * 1000, valid, client_bound)


POINTS = [
    point("native", 100, 500, 2000),
    point("native", 200, 600, 3000),
    point("native", 400, 900, 8000),
    point("native", 800, 5000, 40000, valid=False),
    point("triton-grpc", 100, 1900, 4000),
    point("triton-grpc", 200, 2100, 6000),
    point("triton-grpc", 400, 3000, 30000, valid=False),
    point("triton-grpc", 800, 9000, 90000, valid=False, client_bound=True),
]


def test_peak_is_the_highest_valid_usable_probe():
    assert peak_qps(POINTS, "native") == 400
    assert peak_qps(POINTS, "triton-grpc") == 200
    assert peak_qps(POINTS, "nothing") is None
    # a VALID but client-bound run is not a measurement of the server
    assert peak_qps([point("x", 50, 1, 1, client_bound=True)], "x") is None


def test_relative_to_native():
    rel = relative(POINTS, "triton-grpc")
    assert rel.peak_percent == pytest.approx(50.0)
    assert [e.qps for e in rel.p99_at_equal_qps] == [100, 200, 400]  # 800 is client-bound
    assert rel.p99_at_equal_qps[0].percent == pytest.approx(200.0)
    assert rel.p99_at_equal_qps[2].percent == pytest.approx(375.0)
    assert rel.overhead_qps == 100 and rel.overhead_ns == 1_400_000


def test_relative_without_common_points():
    rel = relative([point("native", 100, 1, 1), point("t", 200, 1, 1, valid=False)], "t")
    assert rel.peak_percent is None and rel.overhead_ns is None and rel.p99_at_equal_qps == ()


def test_max_abs_difference():
    a = {"y": np.array([[1.0, 2.0]], np.float32), "z": np.array([3], np.int64)}
    b = {"y": np.array([[1.5, 2.0]], np.float32), "z": np.array([1], np.int64)}
    assert max_abs_difference(a, b) == 2.0
    with pytest.raises(ValueError, match="outputs differ"):
        max_abs_difference(a, {"y": b["y"]})
    with pytest.raises(ValueError, match="shape"):
        max_abs_difference({"y": np.zeros((2, 2))}, {"y": np.zeros((1, 2))})


def test_targets_whose_inputs_disagree_are_refused():
    def spec(shape: tuple[int, ...], batch: int = 8) -> ModelSpec:
        return ModelSpec("m", "", batch, (TensorSpec("x", "FP32", shape),), ())

    assert check_specs_agree({"a": spec((4,)), "b": spec((4,), batch=64)}).name == "m"
    with pytest.raises(TargetError, match=r"targets disagree.*native takes x FP32 \[5\]"):
        check_specs_agree({"triton-grpc": spec((4,)), "native": spec((5,))})
    with pytest.raises(TargetError, match="disagree"):
        check_specs_agree({"a": spec((4,)), "b": spec((4,), batch=0)})


def test_bare_triton_target_takes_the_protocol():
    kinds = [CompareTarget.TRITON, CompareTarget.TRITON_GRPC, CompareTarget.NATIVE]
    assert target_names(kinds, Protocol.GRPC) == ("triton-grpc", "native")
    assert target_names(kinds, Protocol.HTTP) == ("triton-http", "triton-grpc", "native")


# -- the command ---------------------------------------------------------------------------------


def loadtest(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtest.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def assert_one_clear_error(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert text in result.stderr, result.stderr


def test_native_model_without_onnx_file(tmp_path: Path):
    model_dir = tmp_path / "repo" / "mine"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(
        'name: "mine"\nbackend: "onnxruntime"\nmax_batch_size: 4\n'
        'input { name: "x" data_type: TYPE_FP32 dims: 4 }\n'
        'output { name: "y" data_type: TYPE_FP32 dims: 4 }\n'
    )
    result = loadtest(
        "compare", "--target", "native", "--model", "mine", "--target-latency", "10",
        "--repository", str(tmp_path / "repo"),
    )  # fmt: skip
    assert_one_clear_error(result, "no ONNX file")


def test_execution_provider_not_installed(tmp_path: Path):
    result = loadtest(
        "compare", "--target", "native", "--onnx", str(tmp_path / "x.onnx"),
        "--target-latency", "10", "--provider", "no_such",
    )  # fmt: skip
    assert_one_clear_error(result, "no ONNX file")  # the file is checked first
    import onnxruntime as ort

    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("TensorRT is installed here")
    result = loadtest(
        "compare", "--target", "native", "--model", "tiny", "--provider", "tensorrt",
        "--duration", "1", "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert_one_clear_error(result, "'TensorrtExecutionProvider' is not available")


FAKE = "fake://?servers=4&law=constant&service_ms=1"
FAKE_RUN = ("compare", "-t", "triton", "--url", FAKE, "--qps", "50", "--duration", "1",
            "--min-queries", "10", "--target-latency", "100")  # fmt: skip


def test_compare_takes_input_data_shape_and_protocol(tmp_path: Path):
    data = tmp_path / "inputs.npz"
    np.savez(data, INPUT0=np.arange(40, dtype=np.float32).reshape(10, 4))  # the fake's input
    out = tmp_path / "cmp"
    result = loadtest(
        *FAKE_RUN, "--protocol", "http", "--input-data", str(data), "--shape", "INPUT0:4",
        "--output", str(out),
    )  # fmt: skip
    # one row, INVALID by early stopping (too few queries for a p99 in 1 s): exit 3, or 5 when
    # a loaded machine also made the client fall behind (#26: no VALID row is not exit 0)
    assert result.returncode in (3, 5), result.stderr + result.stdout
    settings = json.loads((out / "compare.json").read_text())["settings"]
    assert settings["targets"] == ["triton-http"] and settings["protocol"] == "http"
    assert settings["input_data"] == str(data) and settings["shapes"] == {"INPUT0": [4]}
    # both reach the sample library
    np.savez(tmp_path / "other.npz", OTHER=np.zeros((2, 4), np.float32))
    result = loadtest(*FAKE_RUN, "--input-data", str(tmp_path / "other.npz"))
    assert_one_clear_error(result, "lacks input(s): INPUT0")
    assert_one_clear_error(loadtest(*FAKE_RUN, "--shape", "INPUT0:5"), "does not fit")


def test_compare_refuses_shared_memory_with_the_native_target():
    result = loadtest("compare", "-t", "native", "--shared-memory", "system")
    assert_one_clear_error(result, "--shared-memory system is for Triton targets")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.triton
def test_compare_embedded_triton_against_native(built_repository: Path, tmp_path: Path):
    out = tmp_path / "cmp"
    result = loadtest(
        "compare", "--model", "tiny", "--repository", str(built_repository),
        "--target", "triton-grpc", "--target", "native", "--qps", "30", "--qps", "60",
        "--duration", "3", "--min-queries", "50", "--target-latency", "100",
        "--late-threshold", "20", "--embedded", "always", "--output", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    assert "Triton as % of native" in result.stdout and "Server-side split" in result.stdout
    data = json.loads((out / "compare.json").read_text())
    assert data["schema"] == "loadtest.analysis.compare" and data["kind"] == "compare"
    assert data["settings"]["qps"] == [30.0, 60.0]
    rows = data["rows"]
    assert [(r["target"], r["qps"]) for r in rows] == [
        ("triton-grpc", 30.0),
        ("native", 30.0),
        ("triton-grpc", 60.0),
        ("native", 60.0),
    ]
    # same schedule for both targets at each QPS
    assert rows[0]["summary"]["scheduled"] == rows[1]["summary"]["scheduled"]
    assert data["agreement"]["max_abs_difference"]["triton-grpc"] < 1e-4
    split = rows[0]["server_side"]["split"]
    assert split["counts_match"] and split["compute_infer_us"] > 0
    parts = sum(rows[0]["split_ns"].values()) / 1e3
    assert parts == pytest.approx(split["client_mean_us"], rel=0.03)
    assert rows[0]["server_side"]["server_cpu"]["cpu_s"] >= 0
    assert rows[1]["server_side"] is None and rows[1]["batcher"]["batches"] > 0
    assert data["configurations"]["triton"]["max_batch_size"] == 64
    assert data["configurations"]["native"]["max_batch_size"] == 64
    (comparison,) = data["comparison"]
    assert comparison["target"] == "triton-grpc"
    metrics = rows[0]["server_side"]["metrics"]
    assert metrics is not None and metrics["gpu_utilization"] is None  # absent on CPU, not 0


def test_a_target_that_drops_requests_is_not_ranked_faster():
    """Its p99 counts failures as +∞ (None): ∞ % of native, never a small percentage."""
    points = [
        point("native", 100, 500, 2000),
        RunPoint("triton-grpc", 100, 98, 400_000, None, False, False, failed=20),
    ]
    equal = relative(points, "triton-grpc").p99_at_equal_qps
    assert len(equal) == 1 and equal[0].percent == float("inf")
