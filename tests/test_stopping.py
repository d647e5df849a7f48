"""Stopping and deadlines: SIGTERM is Ctrl-C with exit code 143 in every command, workers and
actors stop when their parent does (SIGKILL included), and --timeout means what it says on both
protocols, a hung server included."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from loadtest.core.records import SERVER_TIMEOUT, TIMEOUT, Status
from loadtest.core.schedule import server_schedule
from loadtest.engine import stopping
from loadtest.engine.runner import ClosedLoopRunner, Runner
from loadtest.errors import ExitCode
from loadtest.stub.process import Stub, running_stub
from loadtest.targets.fake import fake_from_url

# A run that measured: VALID (0), INVALID (3) or client-bound (5); these tests are about
# stopping and files, not about the verdict of a 1-second run.
MEASURED = (0, 3, 5)

NS = 1_000_000_000
FAKE = "fake://?servers=4&law=constant&service_ms=2"


@pytest.fixture(autouse=True)
def fresh_stop_state() -> Iterator[None]:
    """In-process tests share engine/stopping's process-wide state: start and end clean."""
    stopping.reset()
    yield
    stopping.reset()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in found.split()]


def _gone(pids: list[int], within_s: float) -> list[int]:
    """The pids still running after `within_s` (reaped or not, a zombie is gone)."""
    deadline = time.monotonic() + within_s
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if _alive(pid)]


def _start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "loadtest.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "160"},
    )


def _wait_for_heading(process: subprocess.Popen[str], text: str) -> None:
    """Read stderr until the command says it started measuring."""
    assert process.stderr is not None
    for line in process.stderr:
        if text in line:
            return
    raise AssertionError(f"{text!r} never appeared; exit code {process.wait()}")


# -- the stop request itself ------------------------------------------------------------------


def test_a_stop_requested_before_a_run_stops_it_before_it_issues():
    async def play() -> tuple[object, object]:
        target = fake_from_url(FAKE)
        await target.open()
        stopping.request_stop(signal.SIGTERM)
        schedule = server_schedule(100, NS, 1, 4, 0, 1)
        outcome = await Runner(schedule, target).run()
        closed = await ClosedLoopRunner(
            np.zeros(50, np.int32), target, workers=2, all_due_at_start=True
        ).run()
        return outcome, closed

    outcome, closed = asyncio.run(play())
    for result in (outcome, closed):
        assert result.interrupted and result.stop_reason == "terminated (SIGTERM)"  # type: ignore[attr-defined]
        assert result.records.issued.sum() == 0  # type: ignore[attr-defined]
    assert stopping.exit_code() == ExitCode.TERMINATED


def test_catching_puts_the_previous_handlers_back():
    """asyncio alone would leave SIGTERM at SIG_DFL after a run: killed, no result."""
    stopping.install_process_handlers()
    try:

        async def inside() -> None:
            with stopping.catching(asyncio.get_running_loop()):
                with stopping.catching(asyncio.get_running_loop()):  # nests
                    pass
                os.kill(os.getpid(), signal.SIGTERM)
                await asyncio.sleep(0.05)

        asyncio.run(inside())
        assert stopping.requested() == "terminated (SIGTERM)"
        assert signal.getsignal(signal.SIGTERM) is stopping.raise_interrupt
        assert signal.getsignal(signal.SIGINT) is stopping.raise_interrupt
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def test_an_urgent_stop_skips_the_drain():
    async def play() -> float:
        target = fake_from_url("fake://?servers=64&law=constant&service_ms=5000")
        await target.open()
        runner = Runner(server_schedule(50, 10 * NS, 1, 4, 0, 1), target)
        loop = asyncio.get_running_loop()
        loop.call_later(0.5, stopping.request_stop, None, "the parent process is gone", True)
        started = time.monotonic()
        outcome = await runner.run()
        assert outcome.interrupted and outcome.records.pending.sum() > 0
        return time.monotonic() - started

    assert asyncio.run(play()) < 1.2  # not 0.5 s + the 2 s drain


# -- SIGTERM in every command: partial result, exit 143 --------------------------------------

_STREAM = ["--target-latency", "50", "--duration", "60", "--no-live"]
COMMANDS = {
    "server": ["server", "--url", FAKE, "--qps", "100", "--late-threshold", "50", *_STREAM],
    "offline": [
        "offline", "--url", "fake://?servers=2&law=constant&service_ms=20", "--expected-qps",
        "100", "--max-in-flight", "2", "--duration", "60", "--no-live",
    ],
    "single-stream": ["single-stream", "--url", FAKE, *_STREAM],
    "multi-stream": ["multi-stream", "--url", FAKE, *_STREAM],
}  # fmt: skip


@pytest.mark.parametrize("command", list(COMMANDS))
def test_sigterm_writes_the_partial_result_and_exits_143(tmp_path: Path, command: str):
    process = _start(*COMMANDS[command], "--output", "out", cwd=tmp_path)
    _wait_for_heading(process, "scenario")
    time.sleep(1.5)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == ExitCode.TERMINATED, stdout + stderr
    assert "Traceback" not in stderr
    data = json.loads((tmp_path / "out" / "result.json").read_text())  # complete JSON
    assert data["run"]["partial"] is True
    assert data["run"]["stop_reason"] == "terminated (SIGTERM)"
    assert data["summary"]["issued"] > 0
    assert (tmp_path / "out" / "mlperf_log_summary.txt").is_file()
    assert "partial result" in stdout
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_sigint_still_exits_130_with_the_partial_result(tmp_path: Path):
    process = _start(*COMMANDS["single-stream"], "--output", "out", cwd=tmp_path)
    _wait_for_heading(process, "scenario")
    time.sleep(1)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    assert process.returncode == ExitCode.INTERRUPTED
    data = json.loads((tmp_path / "out" / "result.json").read_text())
    assert data["run"]["partial"] is True and "Ctrl-C" in data["run"]["stop_reason"]


def test_sigterm_stops_find_peak_with_a_partial_find_peak_json(tmp_path: Path):
    process = _start(
        "find-peak", "--url", FAKE, "--target-latency", "50", "--start-qps", "100",
        "--probe-duration", "30", "--budget", "120", "--output", "out", cwd=tmp_path,
    )  # fmt: skip
    _wait_for_heading(process, "find-peak against")
    time.sleep(2)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == ExitCode.TERMINATED, stdout + stderr
    data = json.loads((tmp_path / "out" / "find-peak.json").read_text())
    assert data["partial"] is True and data["stop_reason"] == "terminated (SIGTERM)"
    assert len(data["probes"]) == 1


def test_sigterm_stops_compare_with_a_partial_compare_json(tmp_path: Path):
    from loadtest.models import build_repository

    build_repository(tmp_path / "repo", ["tiny"])
    process = _start(
        "compare", "--target", "native", "--model", "tiny", "--onnx",
        str(tmp_path / "repo" / "tiny" / "1" / "model.onnx"), "--qps", "50", "--qps", "60",
        "--duration", "30", "--output", "out", cwd=tmp_path,
    )  # fmt: skip
    _wait_for_heading(process, "native: 50 QPS")
    time.sleep(2)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == ExitCode.TERMINATED, stdout + stderr
    data = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert data["partial"] is True and data["stop_reason"] == "terminated (SIGTERM)"
    assert len(data["rows"]) == 1  # the interrupted run; the 60 QPS one never started


def test_sigterm_with_two_workers_writes_the_merged_partial_result(tmp_path: Path):
    process = _start(*COMMANDS["server"], "--workers", "2", "--output", "out", cwd=tmp_path)
    _wait_for_heading(process, "scenario")
    time.sleep(3)
    workers = _children(process.pid)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == ExitCode.TERMINATED, stdout + stderr
    data = json.loads((tmp_path / "out" / "result.json").read_text())
    assert data["run"]["partial"] is True and data["client"]["worker_count"] == 2
    assert "terminated (SIGTERM)" in data["run"]["stop_reason"]
    assert len(workers) >= 2 and not _gone(workers, within_s=1.0)


# -- workers die with their parent ------------------------------------------------------------


@pytest.fixture(scope="module")
def counting_stub() -> Iterator[Stub]:
    with running_stub() as stub:
        yield stub


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sigkill_of_the_parent_stops_two_workers_within_a_second(
    counting_stub: Stub, tmp_path: Path, protocol: str
):
    """Before: the two workers went on sending ~100 QPS for 11 s after their parent's SIGKILL."""
    stub = counting_stub
    url = stub.http_url if protocol == "http" else stub.grpc_url
    process = _start(
        "server", "--url", url, "--protocol", protocol, "--embedded", "never", "--workers", "2",
        "--qps", "200", "--duration", "60", "--target-latency", "50", "--no-live",
        "--output", "out", cwd=tmp_path,
    )  # fmt: skip
    base = stub.counters()["infer_count"]
    deadline = time.monotonic() + 90
    while stub.counters()["infer_count"] < base + 300:  # both workers are playing
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    workers = _children(process.pid)
    killed_ns = time.time_ns()
    process.kill()
    process.wait(timeout=10)
    time.sleep(2)
    after = stub.counters()
    last_after_kill_s = (after["last_infer_unix_ns"] - killed_ns) / NS
    assert last_after_kill_s < 1.0, f"a query reached the server {last_after_kill_s:.3f} s later"
    time.sleep(1)
    assert stub.counters()["infer_count"] == after["infer_count"]
    assert len(workers) >= 2 and not _gone(workers, within_s=1.0)
    assert not (tmp_path / "out").exists()  # SIGKILL leaves no result (and no half of one)


def test_a_ray_shard_actor_stops_when_the_heartbeats_stop():
    """ShardActor without Ray: with no heartbeat its lease runs out and it stops issuing."""
    from loadtest.core.settings import ClientSettings, Protocol, ServerSettings, TargetSettings
    from loadtest.shards.plan import ShardPlan
    from loadtest.shards.ray_actors import ShardActor

    plan = ShardPlan(
        target=TargetSettings(url=FAKE, protocol=Protocol.GRPC, model="fake"),
        settings=ServerSettings(qps=100, target_latency_ns=50_000_000, min_duration_ns=30 * NS),
        client=ClientSettings(workers=1),
        shard=0,
        shards=1,
        library_size=8,
    )
    actor = ShardActor()
    assert actor.prepare(plan)
    started = time.monotonic()
    result = actor.run(time.time_ns() + 100_000_000, lease_s=0.5)
    assert time.monotonic() - started < 2.0  # not the 30 s scheduled
    assert result.interrupted and "no heartbeat" in result.stop_reason
    import ray

    assert not ray.is_initialized()  # asking where it runs started no Ray node


def test_a_ray_shard_actor_stops_on_request_with_its_partial_shard():
    from loadtest.core.settings import ClientSettings, Protocol, ServerSettings, TargetSettings
    from loadtest.shards.plan import ShardPlan
    from loadtest.shards.ray_actors import ShardActor

    plan = ShardPlan(
        target=TargetSettings(url=FAKE, protocol=Protocol.GRPC, model="fake"),
        settings=ServerSettings(qps=100, target_latency_ns=50_000_000, min_duration_ns=30 * NS),
        client=ClientSettings(workers=1),
        shard=0,
        shards=1,
        library_size=8,
    )
    actor = ShardActor()
    actor.prepare(plan)
    threading.Timer(1.0, actor.stop, args=("terminated (SIGTERM)",)).start()
    result = actor.run(time.time_ns() + 100_000_000, lease_s=0)
    assert result.interrupted and result.stop_reason == "terminated (SIGTERM)"
    assert 50 < result.issued < 3000


# -- deadlines ----------------------------------------------------------------------------------


def _server_run(
    url: str, protocol: str, out: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, "-m", "loadtest.cli", "server", "--url", url, "--protocol", protocol,
            "--embedded", "never", "--target-latency", "50", "--no-live", "--output", str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def slow_stub() -> Iterator[Stub]:
    """Every answer 40 ms late: a service time without compute."""
    with running_stub(delay_ms=40) as stub:
        yield stub


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_timeout_shorter_than_the_service_time_counts_timeouts(
    slow_stub: Stub, tmp_path: Path, protocol: str
):
    """A 25 ms --timeout on a 40 ms service: every query a "timeout", none late-but-ok; the
    warm-up (its own generous deadline) still lets the run start."""
    url = slow_stub.http_url if protocol == "http" else slow_stub.grpc_url
    result = _server_run(url, protocol, tmp_path / "o", "--qps", "40", "--duration", "2",
                         "--timeout", "0.025")  # fmt: skip
    assert result.returncode in MEASURED, result.stderr
    data = json.loads((tmp_path / "o" / "result.json").read_text())
    summary = data["summary"]
    assert summary["completed_ok"] == 0
    assert summary["errors_by_kind"] == {TIMEOUT: summary["scheduled"]}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_timeout_longer_than_the_service_time_costs_nothing(
    slow_stub: Stub, tmp_path: Path, protocol: str
):
    url = slow_stub.http_url if protocol == "http" else slow_stub.grpc_url
    result = _server_run(url, protocol, tmp_path / "o", "--qps", "40", "--duration", "2",
                         "--timeout", "0.2", "--records")  # fmt: skip
    assert result.returncode in MEASURED, result.stderr
    data = json.loads((tmp_path / "o" / "result.json").read_text())
    assert data["summary"]["completed_ok"] == data["summary"]["scheduled"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_server_timeout_is_sent_and_its_rejections_have_their_own_kind(
    slow_stub: Stub, tmp_path: Path, protocol: str
):
    url = slow_stub.http_url if protocol == "http" else slow_stub.grpc_url
    result = _server_run(url, protocol, tmp_path / "o", "--qps", "40", "--duration", "2",
                         "--server-timeout", "0.01")  # fmt: skip
    assert result.returncode in MEASURED, result.stderr
    summary = json.loads((tmp_path / "o" / "result.json").read_text())["summary"]
    assert summary["errors_by_kind"] == {SERVER_TIMEOUT: summary["scheduled"]}


def test_the_fake_target_honours_the_timeout():
    async def infer() -> list[str | None]:
        target = fake_from_url("fake://?servers=1&law=constant&service_ms=50", timeout_s=0.02)
        await target.open()
        return [await target.infer(0) for _ in range(3)]

    assert asyncio.run(infer()) == [TIMEOUT] * 3


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_server_that_hangs_mid_run_ends_it_within_timeout_and_drain(
    tmp_path: Path, protocol: str
):
    """The stub is frozen (SIGSTOP: connections are still accepted, nothing is answered) a
    second into a 3 s run with --timeout 0.5: the run ends about when it was due to, and every
    scheduled query is accounted for: answered, or failed as a timeout. (The command then still
    asks the frozen server for its statistics, which has its own 5 s deadline.)"""
    with running_stub() as stub:
        url = stub.http_url if protocol == "http" else stub.grpc_url
        process = _start(
            "server", "--url", url, "--protocol", protocol, "--embedded", "never", "--qps", "50",
            "--duration", "3", "--timeout", "0.5", "--target-latency", "50", "--no-live",
            "--records", "--output", "out", cwd=tmp_path,
        )  # fmt: skip
        try:
            _wait_for_heading(process, "scenario")
            time.sleep(1)
            os.kill(stub.pid, signal.SIGSTOP)
            frozen = time.monotonic()
            stdout, stderr = process.communicate(timeout=60)
            ended_after_s = time.monotonic() - frozen
        finally:
            os.kill(stub.pid, signal.SIGCONT)
    assert process.returncode in MEASURED, stdout + stderr
    data = json.loads((tmp_path / "out" / "result.json").read_text())
    run_s = data["run"]["duration_ns"] / NS
    assert run_s < 3 + 0.5 + 0.5, run_s  # the run: its schedule, then the last deadline
    assert ended_after_s < 2 + 0.5 + 5 + 2, ended_after_s  # + the statistics' own deadline
    status = np.asarray(data["records"]["columns"]["status"])
    assert not (status == Status.PENDING).any()
    kinds = data["summary"]["errors_by_kind"]
    assert kinds.get(TIMEOUT, 0) > 20 and set(kinds) == {TIMEOUT}
    assert data["summary"]["completed_ok"] + kinds[TIMEOUT] == data["summary"]["scheduled"]


@pytest.mark.triton
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_triton_drops_what_outlives_server_timeout(
    built_repository: Path, tmp_path: Path, protocol: str
):
    """Real Triton: tiny's batcher holds requests 200 ms for a batch of 64, and its queue policy
    lets a request's "timeout" override the default; with --server-timeout 0.02 Triton rejects
    every query ("Request timeout expired"), counted as server-timeout on both protocols, while
    the warm-up (sent without the parameter) still passes."""
    import shutil

    repository = tmp_path / "repo"
    shutil.copytree(built_repository / "tiny", repository / "tiny")
    config = repository / "tiny" / "config.pbtxt"
    config.write_text(
        config.read_text().replace(
            "dynamic_batching {\n  max_queue_delay_microseconds: 100\n}",
            "dynamic_batching {\n  preferred_batch_size: 64\n  max_queue_delay_microseconds: "
            "200000\n  default_queue_policy {\n    timeout_action: REJECT\n"
            "    default_timeout_microseconds: 10000000\n    allow_timeout_override: true\n  }\n}",
        )
    )
    assert "allow_timeout_override" in config.read_text()
    result = subprocess.run(
        [
            sys.executable, "-m", "loadtest.cli", "server", "--repository", str(repository),
            "--url", "127.0.0.1:9", "--protocol", protocol, "--qps", "20", "--duration", "2",
            "--server-timeout", "0.02", "--timeout", "1", "--target-latency", "500",
            "--no-live", "--output", str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode in MEASURED, result.stderr
    summary = json.loads((tmp_path / "o" / "result.json").read_text())["summary"]
    assert summary["errors_by_kind"] == {SERVER_TIMEOUT: summary["scheduled"]}


@pytest.mark.triton
def test_sigterm_while_the_embedded_triton_loads_leaves_nothing_behind(
    built_repository: Path, tmp_path: Path
):
    """Stopped mid-load, Triton used to leave its Python backend stub (which ignores SIGTERM)
    running as an orphan with its /dev/shm region; the whole process group goes now."""
    from loadtest.server.embedded import _group_members

    shm_before = set(Path("/dev/shm").glob("triton_*"))
    process = _start(
        "server", "--repository", str(built_repository), "--url", "127.0.0.1:9", "--qps", "20",
        "--duration", "30", "--no-live", "--output", "out", cwd=tmp_path,
    )  # fmt: skip
    _wait_for_heading(process, "starting the embedded Triton")
    time.sleep(0.1)
    servers = _children(process.pid)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == ExitCode.TERMINATED, stdout + stderr
    assert "stopped before a result was measured" in stderr
    assert not (tmp_path / "out").exists()
    deadline = time.monotonic() + 5
    while any(_group_members(pid) for pid in servers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert servers and not [m for pid in servers for m in _group_members(pid)]
    assert set(Path("/dev/shm").glob("triton_*")) <= shm_before
