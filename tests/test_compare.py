"""`loadtest compare`: the Triton-vs-native arithmetic, bad input, and one run end to end."""

from __future__ import annotations

import json
import math
import os
import shutil
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


def _two_instance_repository(built_repository: Path, into: Path) -> Path:
    """tiny served by two instances with a 2 ms batching window: the configuration #30 asks the
    native side to copy (instances, batching, threads), not just the one-instance default."""
    shutil.copytree(built_repository / "tiny", into / "tiny")
    config = into / "tiny" / "config.pbtxt"
    text = config.read_text()
    assert "count: 1" in text and "max_queue_delay_microseconds: 100" in text
    text = text.replace("count: 1", "count: 2")
    config.write_text(
        text.replace("max_queue_delay_microseconds: 100", "max_queue_delay_microseconds: 2000")
    )
    return into


@pytest.mark.triton
def test_compare_embedded_triton_against_native(built_repository: Path, tmp_path: Path):
    out = tmp_path / "cmp"
    repository = _two_instance_repository(built_repository, tmp_path / "repository")
    result = loadtest(
        "compare", "--model", "tiny", "--repository", str(repository),
        "--target", "triton-grpc", "--target", "native", "--qps", "30", "--qps", "60",
        "--duration", "3", "--min-queries", "50", "--target-latency", "100",
        "--late-threshold", "20", "--embedded", "always", "--output", str(out),
    )  # fmt: skip
    assert "Triton as % of native" in result.stdout and "Server-side split" in result.stdout
    data = json.loads((out / "compare.json").read_text())
    # 3 s runs are short for early stopping at p99: the exit code follows the rows (0 with a VALID
    # row; 3 when none is, 5 when every row was only client-bound), never a crash.
    expected = (0,) if any(row["valid"] for row in data["rows"]) else (3, 5)
    assert result.returncode in expected, result.stderr + result.stdout
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
    # the native side copies the served configuration: two instances, the same batching window
    # and threads, so nothing says "configured differently" and the ratio compares servers
    triton_config, native_config = (
        data["configurations"]["triton"],
        data["configurations"]["native"],
    )
    assert triton_config["instances"] == native_config["instances"] == 2
    assert triton_config["max_batch_size"] == native_config["max_batch_size"] == 64
    assert triton_config["dynamic_batching"] and native_config["dynamic_batching"]
    assert triton_config["max_queue_delay_us"] == native_config["max_queue_delay_us"] == 2000
    assert triton_config["intra_op_thread_count"] == str(native_config["intra_op_threads"]) == "1"
    assert triton_config["inter_op_thread_count"] == str(native_config["inter_op_threads"]) == "1"
    assert "configured differently" not in result.stdout
    assert rows[1]["batcher"]["batches"] <= rows[1]["summary"]["completed_ok"]
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


# -- the noise-aware comparison: peaks with intervals, bootstrap p99 ------------------------------


def test_peak_ratio_interval_and_the_no_difference_rule():
    from loadtest.analysis.compare import NO_DIFFERENCE, PeakInterval, PeakRatio

    apart = PeakRatio("triton-grpc", PeakInterval(200, 200, 220), PeakInterval(100, 100, 110))
    assert apart.ratio == pytest.approx(2.0)
    assert apart.interval == pytest.approx((200 / 110, 220 / 100))
    assert PeakRatio("t", apart.triton, apart.native, 0.1).interval == pytest.approx(
        (200 / 121, 242 / 100)
    )
    assert apart.differs and apart.verdict == "Triton higher"
    # the case: one lucky probe is not a difference once the intervals overlap
    close = PeakRatio("triton-grpc", PeakInterval(8, 8, 12), PeakInterval(12, 12, 16))
    assert not close.differs and close.verdict == NO_DIFFERENCE
    # intervals apart by less than the search's resolution are not told apart either
    near = (PeakInterval(45, 45, 51.0), PeakInterval(51.1, 51.1, 56.2))
    assert PeakRatio("t", *near).differs and not PeakRatio("t", *near, resolution=0.05).differs
    missing = PeakRatio("triton-grpc", PeakInterval(None, 0, 5), PeakInterval(12, 12, 16))
    assert missing.ratio is None and missing.interval is None
    assert "not measurable" in missing.verdict


def test_a_peak_that_is_only_a_lower_bound_decides_nothing_it_cannot():
    """A search that found no failing rate (the client fell behind, or the ceiling) gives a
    lower bound: its top is unbounded in the ratio, so 26 QPS (client-bound) against 76.5
    (ceiling) is not "native higher" (the decoder comparison of 2026-12-07 said it was)."""
    from loadtest.analysis.compare import PeakInterval, PeakRatio

    both_open = PeakRatio(
        "triton-grpc-stream",
        PeakInterval(26.0, 26.0, 27.3, open_above=True),
        PeakInterval(76.5, 76.5, 80.3, open_above=True),
        0.05,
    )
    assert both_open.interval == (0.0, math.inf) and not both_open.differs
    assert both_open.verdict.startswith("not decided: triton-grpc-stream and native found no")
    # a bracketed Triton peak below a lower-bound native one: native is higher, whatever its top
    below = PeakRatio(
        "t", PeakInterval(20, 20, 22), PeakInterval(76.5, 76.5, 80.3, open_above=True), 0.05
    )
    assert below.differs and below.verdict == "native higher"
    # a lower-bound Triton peak above native's bracket: Triton is higher
    above = PeakRatio(
        "t", PeakInterval(90, 90, 95, open_above=True), PeakInterval(40, 40, 42), 0.05
    )
    assert above.differs and above.verdict == "Triton higher"
    # an open Triton peak below native's: undecided (Triton's true peak may be above)
    assert not PeakRatio(
        "t", PeakInterval(20, 20, 22, open_above=True), PeakInterval(76.5, 76.5, 80.3), 0.05
    ).differs


def test_bootstrap_p99_is_seeded_and_counts_failures_as_infinite():
    from loadtest.analysis.compare import EqualQpsInterval, bootstrap_percentile

    rng = np.random.default_rng(3)
    fast = rng.exponential(10e6, 2000)
    slow = fast * 3
    a = bootstrap_percentile(fast, 0, 0.99, seed=1)
    assert a == bootstrap_percentile(fast, 0, 0.99, seed=1)  # seeded: reproducible
    assert a is not None and a[0] <= np.percentile(fast, 99) <= a[1]
    b = bootstrap_percentile(slow, 0, 0.99, seed=1)
    assert b is not None and EqualQpsInterval(10, a, b).verdict == "Triton lower"
    other = bootstrap_percentile(rng.exponential(10e6, 2000), 0, 0.99, seed=2)
    assert other is not None
    assert EqualQpsInterval(10, a, other).verdict == "no difference measured at this resolution"
    dropped = bootstrap_percentile(fast, 100, 0.99, seed=1)  # 5 % failed: p99 is ∞
    assert dropped == (np.inf, np.inf)
    assert bootstrap_percentile(np.array([]), 0, 0.99, seed=1) is None


def interleaved_on_fakes(triton_servers: int, native_servers: int):
    """Both fakes 40 ms per query (capacity 25 QPS per server), searched in turns with 1 s
    probes at p90 ≤ 400 ms: ten service times, so each peak is close to its capacity. Low rates,
    so a loaded CI machine keeps up; a search the client fell behind in (a stalled machine says
    nothing about the comparison) is run once more, as test_peak does."""
    import asyncio

    from loadtest.core.settings import NS_PER_S, PeakSettings
    from loadtest.scenarios.searches.compare_peak_run import interleaved_peaks
    from loadtest.targets.fake import FAKE_MODEL, FakeTarget, ServiceLaw

    ms = 1_000_000
    settings = PeakSettings(
        target_latency_ns=400 * ms,
        percentile=0.9,
        probe_duration_ns=NS_PER_S,
        budget_ns=60 * NS_PER_S,
        resolution=0.1,
        calibration_ns=NS_PER_S,
        late_threshold_ns=100 * ms,  # measures the comparison, not the shared CI machine
        sample_count=8,
    )
    order: list[tuple[str, bool]] = []

    async def go():
        targets = {
            "triton-grpc": FakeTarget(ServiceLaw("constant", 40 * ms), servers=triton_servers),
            "native": FakeTarget(ServiceLaw("constant", 40 * ms), servers=native_servers),
        }
        for target in targets.values():
            await target.open()
        return await interleaved_peaks(
            targets, FAKE_MODEL, 8, settings, 10,
            on_probe=lambda name, run, repeat: order.append((name, repeat)),
        )  # fmt: skip

    peaks = asyncio.run(go())
    if any(r.probe.client_bound for p in peaks.peaks.values() for r in p.runs):
        order.clear()
        peaks = asyncio.run(go())
    return peaks, order


def test_a_client_bound_boundary_repeat_counts_as_a_run_and_the_repeats_end():
    """Seen in a compare run: the boundary's repeats came back client-bound (the client behind
    its schedule on cores the server also used) and, not counted, were repeated 16 times until
    the budget ran out. A client-bound repeat is one run at the peak: `repeats` of them, then
    the search is over; its peak stays the rate that passed."""
    from types import SimpleNamespace

    from loadtest.scenarios.searches.compare_peak_run import _Search
    from loadtest.scenarios.searches.peak_search import Probe

    concluded = SimpleNamespace(next_qps=lambda probes: None)
    search = _Search("triton-grpc-stream", target=None, search=concluded)  # type: ignore[arg-type]

    def run(qps: float, valid: bool = True, client_bound: bool = False) -> None:
        probe = Probe(qps, 1_000_000, valid, client_bound)
        search.add(SimpleNamespace(probe=probe), repeat=bool(search.runs))  # type: ignore[arg-type]

    run(27.6)
    run(34.5, valid=False, client_bound=True)
    run(33.6)
    assert search.next_probe(1) == (33.6, True)
    run(33.6, client_bound=True)
    assert search.next_probe(1) == (None, False)  # one repeat asked, one run: over
    assert search.next_probe(2) == (33.6, True)
    run(33.6)
    assert search.next_probe(2) == (None, False)


def test_compare_peaks_on_fakes_of_two_capacities_give_their_ratio():
    from loadtest.report.compare_peak_report import peak_ratios, peak_search_json

    peaks, order = interleaved_on_fakes(4, 2)  # 100 against 50 QPS: the known ratio is 2
    (ratio,) = peak_ratios(peaks)
    assert ratio.interval is not None and ratio.ratio is not None
    low, high = ratio.interval
    assert low <= 2.0 <= high, (ratio, peaks.peaks)
    assert abs(ratio.ratio - 2.0) <= high - low
    assert ratio.differs and ratio.verdict == "Triton higher"
    # probes interleaved: the targets take turns while both are searching
    names = [name for name, _ in order]
    assert names[:4] == ["triton-grpc", "native", "triton-grpc", "native"]
    # each boundary probe was repeated on another seed and passed both times
    for peak in peaks.peaks.values():
        at_peak = [r for r in peak.runs if r.probe.qps == peak.peak_qps]
        assert len(at_peak) >= 2 and all(r.probe.valid for r in at_peak)
        assert len({r.settings.schedule_seed for r in at_peak}) >= 2
    data = peak_search_json(peaks)
    assert data["ratios"][0]["verdict"] == "Triton higher" and data["interleaved"]
    assert any(p["repeat"] for p in data["targets"][0]["probes"])


def test_compare_peaks_on_fakes_of_equal_capacity_say_no_difference():
    from loadtest.report.compare_peak_report import peak_ratios, ratio_lines

    peaks, _ = interleaved_on_fakes(2, 2)
    (ratio,) = peak_ratios(peaks)
    assert ratio.interval is not None and ratio.interval[0] <= 1.0 <= ratio.interval[1], peaks
    assert not ratio.differs, peaks
    (line,) = ratio_lines(peaks, 400, 0.9)
    assert "of native onnxruntime's throughput at p90 ≤ 400 ms" in line
    assert line.endswith("no difference measured at this resolution")


def test_compare_cli_searches_the_peak_without_qps(tmp_path: Path):
    out = tmp_path / "cmp"
    result = loadtest(
        "compare", "-t", "triton-grpc", "--url",
        "fake://?servers=2&law=constant&service_ms=40", "--target-latency", "400",
        "--percentile", "90", "--probe-duration", "1", "--budget", "40", "--resolution", "0.1",
        "--late-threshold", "100", "--output", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    assert "Peak under the SLO" in result.stdout and "(repeat)" in result.stdout
    data = json.loads((out / "compare.json").read_text())
    assert data["schema_version"] == 1 and data["rows"] == [] and data["settings"]["qps"] == []
    search = data["peak_search"]
    assert [t["target"] for t in search["targets"]] == ["triton-grpc"]
    assert all(t["peak_qps"] for t in search["targets"]) and search["ratios"] == []
    assert data["p99_intervals"] == []


def test_native_configured_unlike_triton_is_named():
    from loadtest.analysis.compare import config_differences
    from loadtest.targets.native import NativeOptions

    triton = {
        "instances": 2, "max_batch_size": 64, "dynamic_batching": True,
        "max_queue_delay_us": 100, "intra_op_thread_count": "1", "inter_op_thread_count": None,
    }  # fmt: skip
    same = NativeOptions(
        instances=2, intra_op_threads=1, max_batch_size=64, dynamic_batching=True,
        max_queue_delay_us=100,
    )  # fmt: skip
    assert config_differences(triton, same) == []
    assert config_differences(None, same) == []
    one = NativeOptions(instances=1, intra_op_threads=1)
    assert config_differences(triton, one) == [
        "instances: Triton 2, native 1",
        "dynamic batching: Triton True, native False",
    ]


def test_html_shows_the_peak_search_and_reads_files_without_it():
    from loadtest.report.html import compare_peak_html

    assert compare_peak_html({"rows": []}) == ""  # a compare.json written before the search
    data = {
        "peak_search": {
            "targets": [
                {
                    "target": "native",
                    "peak_qps": 10.0,
                    "low_qps": 10.0,
                    "high_qps": 11.0,
                    "status": "bracketed",
                    "probes": [{}, {}],
                }
            ],
            "ratios": [
                {
                    "target": "triton-grpc",
                    "ratio": 0.97,
                    "low": 0.8,
                    "high": 1.2,
                    "verdict": "no difference measured at this resolution",
                }
            ],
        },
        "p99_intervals": [
            {
                "target": "triton-grpc",
                "qps": 8,
                "p99_ns": [1e8, None],
                "native_p99_ns": [9e7, 1.2e8],
                "verdict": "no difference",
            }
        ],
    }
    html = compare_peak_html(data)
    assert "Peak under the SLO" in html and "native" in html
    assert "triton-grpc ÷ native peak: 97 % (interval 80 %–120 %)" in html
    assert "100.0–∞ ms against native 90.0–120.0 ms" in html
