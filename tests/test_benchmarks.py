"""benchmarks/ still runs: every script's --help, a one-rung run where that is cheap (the stub,
never an embedded Triton), the no-overwrite rule for results files, and the core split the
generator benchmark pins client and server to.

The scripts import the package and each other, so a module that moves or a name that changes
breaks them here, not in the next person's long benchmark run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO_ROOT / "benchmarks"
SCRIPTS = sorted(
    path.name
    for path in BENCHMARKS.glob("*.py")
    # modules the scripts import
    if path.name not in {"results_file.py", "pinning.py", "server_run.py", "loadgen_sut.py"}
)


@pytest.fixture(autouse=True)
def benchmarks_importable() -> Iterator[None]:
    """The benchmark modules import each other by bare name (they run as scripts)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield
    finally:
        sys.path.remove(str(BENCHMARKS))


def run_script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    # This checkout's package, not whichever one is installed.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_every_script_is_checked_here() -> None:
    # A new script is a new entry here, not a silent gap.
    assert SCRIPTS == [
        "clean_rate.py",
        "decoder_steps.py",
        "embedded_server.py",
        "generator.py",
        "grpc_clients.py",
        "issuer_phases.py",
        "issuer_runqueue.py",
        "loadgen_compare.py",
        "proxy_goaway.py",
        "stream_client.py",
        "stream_queueing.py",
        "trace_load.py",
        "trace_replay.py",
        "wire_call_cpu.py",
        "worker_calibration.py",
    ]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script: str) -> None:
    result = run_script(f"benchmarks/{script}", "--help", timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:"), result.stdout


def test_generator_one_rung_against_the_stub(tmp_path: Path) -> None:
    output = tmp_path / "generator.txt"
    result = run_script(
        "benchmarks/generator.py",
        "--targets", "stub", "--protocols", "http", "--skip-pa", "--workers", "1",
        "--rungs", "1", "--seconds", "0.5", "--capacity-seconds", "0.5",
        "--output", str(output),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    text = output.read_text()
    assert text.startswith("python benchmarks/generator.py --targets stub")
    assert "commit: " in text and "pinning: " in text
    assert "stub http closed-loop capacity:" in text
    assert "\n  2000 " in text  # the one rung: the stub's ladder starts at 2000 QPS
    assert "highest clean rate (QPS)" in text and "finished " in text


def test_issuer_phases_one_rate_against_the_stub(stub: object) -> None:
    result = run_script(
        "benchmarks/issuer_phases.py",
        "--url", stub.http_url, "--protocol", "http", "--rates", "200", "--seconds", "0.5",  # type: ignore[attr-defined]
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert rows[0][:3] == ["200", "lag", "p99"], result.stdout  # the one rate's row
    assert "timer sleeps/q" in result.stdout and "GC gen0" in result.stdout


def test_decoder_steps_times_prefill_and_decode(tmp_path: Path) -> None:
    output = tmp_path / "decoder-steps.txt"
    result = run_script("benchmarks/decoder_steps.py", "--lengths", "16,64", "--repeats", "2",
                        "--output", str(output))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in output.read_text().splitlines() if line.startswith("  ")]
    assert [row[0] for row in rows[1:]] == ["16", "64"], rows  # one row per input length
    assert all(float(value) > 0 for row in rows[1:] for value in row[1:]), rows


def test_trace_load_times_every_format(tmp_path: Path) -> None:
    output = tmp_path / "trace-load.txt"
    result = run_script("benchmarks/trace_load.py", "--rows", "500", "--repeats", "1",
                        "--output", str(output))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split()[0]: line.split() for line in output.read_text().splitlines()[7:14]}
    assert set(rows) == {"loadtest", "loadgen", "mooncake", "azure", "burstgpt", "csv", "jsonl"}
    assert all(row[-1] == "500" for row in rows.values()), rows  # every row became a query


def _loadgen_or_skip() -> None:
    """LoadGen (the loadgen extra) is needed; skipped without it unless LOADTEST_REQUIRE_LOADGEN=1
    (.ci/run), where a missing one fails."""
    try:
        import mlperf_loadgen  # noqa: F401
    except ImportError:
        if os.environ.get("LOADTEST_REQUIRE_LOADGEN") == "1":
            pytest.fail("mlcommons-loadgen is required (LOADTEST_REQUIRE_LOADGEN=1)", pytrace=False)
        pytest.skip("mlcommons-loadgen is not installed (pip install 'loadtest[loadgen]')")


def test_loadgen_compare_one_short_round(tmp_path: Path) -> None:
    _loadgen_or_skip()
    output = tmp_path / "loadgen-compare.txt"
    result = run_script(
        "benchmarks/loadgen_compare.py", "--qps", "200", "--seconds", "0.3", "--rounds", "1",
        "--output", str(output),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    text = output.read_text()
    assert "mlcommons-loadgen 6.0.17" in text and "ρ = 0.30" in text
    # Both tools played LoadGen's schedule, query for query, and neither failed one.
    (played,) = [line for line in text.splitlines() if line.startswith("round 1 ")]
    counts = re.match(r"round 1 \(LoadGen first\): ([\d,]+) queries scheduled by LoadGen, "
                      r"([\d,]+) replayed", played)  # fmt: skip
    assert counts and counts[1] == counts[2] and int(counts[1].replace(",", "")) > 20, played
    assert played.endswith("largest difference 0 ns)"), played
    assert "failed: LoadGen's SUT 0, loadtest 0" in text
    # A 60-query p99 is its slowest query or so: noise on a shared machine, so no band here.
    (ratio,) = [line for line in text.splitlines() if line.startswith("p99 loadtest ÷ LoadGen")]
    assert 0 < float(ratio.split(": ")[1].split(";")[0]) < float("inf"), ratio
    # Each tool's p50/p90/p99, computed here and as the tool reported it: four rows of figures.
    figures = re.compile(r"^  (LoadGen|loadtest) +\(.+\) +\d+\.\d{3} +\d+\.\d{3} +\d+\.\d{3}$")
    assert sum(bool(figures.match(line)) for line in text.splitlines()) == 4, text


@pytest.mark.triton
def test_loadgen_compare_against_triton_holding_each_request_a_fixed_time(tmp_path: Path) -> None:
    """`--server triton-fixed`: the embedded Triton serves benchmarks/fixed_service/, and every
    query of both tools is held at least --service-ms (the model's sleep, one at a time)."""
    _loadgen_or_skip()
    output = tmp_path / "loadgen-compare.txt"
    result = run_script(
        "benchmarks/loadgen_compare.py", "--server", "triton-fixed", "--service-ms", "20",
        "--qps", "10", "--seconds", "1", "--rounds", "1", "--output", str(output),
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    text = output.read_text()
    assert "serving benchmarks/fixed_service/" in text and "20 ms per request" in text
    assert "failed: LoadGen's SUT 0, loadtest 0" in text
    rows = [line for line in text.splitlines() if "(its trace's complete_ns)" in line]
    rows += [line for line in text.splitlines() if "(its records)" in line]
    assert len(rows) == 2, text
    for row in rows:
        p50_ms = float(row.split()[-3])
        assert 20.0 <= p50_ms < 200.0, row  # held the 20 ms, and not lost in a queue


def test_trace_replay_one_short_round(tmp_path: Path) -> None:
    output = tmp_path / "trace-replay.txt"
    result = run_script(
        "benchmarks/trace_replay.py", "--rows", "300", "--seconds", "0.5", "--output", str(output)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = output.read_text().splitlines()
    trace = next(line.split() for line in lines if line.startswith("  trace "))
    poisson = next(line.split() for line in lines if line.startswith("  poisson "))
    assert trace[1] == "300"  # every row of the trace became a query
    assert 200 < int(poisson[1]) < 400  # the same mean rate for the same time
    assert sum("send lag p50" in line for line in lines) == 2
    assert any(line.startswith("  send lag, trace ÷ Poisson: p50 ") for line in lines)


@pytest.mark.parametrize(
    "script",
    [
        "decoder_steps.py",
        "generator.py",
        "grpc_clients.py",
        "issuer_runqueue.py",
        "loadgen_compare.py",
        "stream_queueing.py",
        "trace_load.py",
        "trace_replay.py",
        "worker_calibration.py",
    ],
)
def test_an_existing_output_is_refused_before_any_load(script: str, tmp_path: Path) -> None:
    kept = tmp_path / "kept.txt"
    kept.write_text("a committed result\n")
    result = run_script(f"benchmarks/{script}", "--output", str(kept), timeout=60)
    assert result.returncode == 2
    assert "exists: pass --force" in result.stderr
    assert kept.read_text() == "a committed result\n"


def test_the_default_output_is_a_new_dated_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import results_file

    monkeypatch.setattr(results_file, "RESULTS", tmp_path)
    first = results_file.default_path("generator-benchmark")
    assert first.parent == tmp_path
    assert first.name.startswith("generator-benchmark-20") and first.suffix == ".txt"
    first.write_text("run 1\n")
    second = results_file.default_path("generator-benchmark")
    assert second != first and not second.exists()


def test_the_default_results_folder_is_benchmarks_results() -> None:
    import results_file

    assert results_file.RESULTS == BENCHMARKS / "results"
    assert (BENCHMARKS / "results" / "INDEX.md").is_file()


def test_cores_split_disjoint() -> None:
    import pinning

    assert pinning.parse_cores("0-2,5") == frozenset({0, 1, 2, 5})
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        with pytest.raises(ValueError, match="two cores"):
            pinning.split_cores()
        return
    cores = pinning.split_cores()
    assert cores.client and cores.server and not cores.client & cores.server
    assert max(cores.client) < min(cores.server)
    assert cores.client | cores.server == frozenset(allowed)
    first = str(allowed[0])
    with pytest.raises(ValueError, match="disjoint"):
        pinning.split_cores(first, first)


def test_this_process_on_cores_and_back() -> None:
    import pinning

    before = os.sched_getaffinity(0)
    one = frozenset({min(before)})
    with pinning.this_process_on(one):
        assert os.sched_getaffinity(0) == one
        assert pinning.allowed_cores(os.getpid(), descendants=False) == one
    assert os.sched_getaffinity(0) == before
