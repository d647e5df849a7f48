"""Shards on Ray actors (the `ray` extra): a private `--ray local`, and a real two-node cluster.

Skipped where Ray is not installed, except with LOADTEST_REQUIRE_RAY=1 (set by .ci/run), where a
missing Ray fails the run. The two-node cluster is `ray start --head` plus `ray start --address` on
this host (one CPU each, so SPREAD must put one actor on each node), with its own temporary
directory, ports and auth token; the tests stop every process it started, by process group.
Whether a run left anything behind is checked from a child subreaper: every process the run
started, orphaned or not, is reparented to it, so none can slip away unseen.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest

from loadtest.core.schedule import merged_schedule, shard_schedule

try:
    from ray._private import services
except ImportError:
    if os.environ.get("LOADTEST_REQUIRE_RAY") == "1":
        pytest.fail("ray is required (LOADTEST_REQUIRE_RAY=1) but not installed", pytrace=False)
    pytest.skip("ray is not installed: pip install -e '.[ray]'", allow_module_level=True)

pytestmark = pytest.mark.ray
NS = 1_000_000_000
FAKE_URL = "fake://?servers=64&law=constant&service_ms=1"
LOADTEST = [str(Path(sys.executable).with_name("loadtest"))]
RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]
EXITED_WAIT_S = 5.0  # a process the run started and still alive this long after it exited: left

# Runs COMMAND as a child subreaper, waits for it, then reports (one JSON line) every process that
# is still below this harness EXITED_WAIT_S later, kills those, and exits with the command's code.
HARNESS = textwrap.dedent(
    """
    import ctypes, json, subprocess, sys, time, psutil
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
    wait_s, out, command = float(sys.argv[1]), sys.argv[2], sys.argv[3:]
    with open(out, "w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        psutil.wait_procs(psutil.Process().children(), timeout=0.1)  # reaps exited orphans
    left = [p for p in psutil.Process().children(recursive=True) if p.is_running()]
    names = []
    for p in left:
        try:
            names.append(" ".join(p.cmdline())[:120] or p.name())
        except psutil.Error:
            names.append(str(p.pid))
    print(json.dumps(names))
    for p in left:
        p.kill()
    psutil.wait_procs(left, timeout=5)
    sys.exit(code)
    """
)


def _run_left(
    args: list[str],
    tmp_path: Path,
    env: dict[str, str] | None = None,
    wait_s: float = EXITED_WAIT_S,
) -> tuple[int, str, list[str]]:
    """Run loadtest ARGS; its exit code, its output, and what it left alive `wait_s` later."""
    out = tmp_path / "output.txt"
    done = subprocess.run(
        [sys.executable, "-c", HARNESS, str(wait_s), str(out), *LOADTEST, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=240,
    )
    return done.returncode, out.read_text(), json.loads(done.stdout.strip().splitlines()[-1])


def _server_args(address: str, output: Path, duration_s: float = 2, qps: float = 300) -> list[str]:
    """2 s at 300 QPS: about 600 queries, more than the 459 that early stopping needs at p99."""
    return [
        "server",
        "--url",
        FAKE_URL,
        "--qps",
        str(qps),
        "--duration",
        str(duration_s),
        "--workers",
        "2",
        "--ray",
        address,
        "--records",
        "--output",
        str(output),
    ]


def _exact_schedule(result: dict, workers: int = 2) -> None:
    """The merged records are exactly the sharded Poisson schedule, every query once."""
    s = result["settings"]
    expected = merged_schedule(
        [
            shard_schedule(
                s["qps"],
                s["min_duration_ns"],
                s["min_query_count"],
                s["sample_count"],
                s["schedule_seed"],
                s["sample_seed"],
                k,
                workers,
            )
            for k in range(workers)
        ]
    )
    columns = result["records"]["columns"]
    assert np.array_equal(np.asarray(columns["scheduled_ns"]), expected.scheduled_ns)
    assert np.array_equal(np.asarray(columns["sample_index"]), expected.sample_index)


def _free_port() -> int:
    return _free_ports(1)[0]


def _free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports: all held at once while they are chosen, or the OS
    may hand the same one out twice (seen in CI: the head's GCS and Ray Client server both got
    40105, and `ray start` refused)."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


@dataclass
class Cluster:
    """A two-node Ray cluster on this host, ours alone (temp dir, ports, token)."""

    address: str  # GCS address, for --ray auto (RAY_ADDRESS)
    client_port: int  # Ray Client server, for --ray ray://127.0.0.1:PORT
    env: dict[str, str]  # what a driver needs: the token
    starters: list[subprocess.Popen[bytes]]
    temp_dir: Path  # Ray's --temp-dir: its session logs

    def client_server_logs(self) -> str:
        """The head's Ray Client proxy and per-client server logs, out and err, those not empty.

        Why a per-client server failed to start: its own .err has been seen empty, so the
        proxy's log (which says how it saw the server go) comes with it.
        """
        logs = sorted(self.temp_dir.glob("session_*/logs/ray_client_server*"))
        return "\n".join(
            f"{log.name}: {text[-2000:]}"
            for log in logs
            if (text := log.read_text(errors="replace").strip())
        )

    def processes(self) -> dict[int, str]:
        """Every process of the cluster now (both `ray start --block` trees): pid -> title."""
        found: dict[int, str] = {}
        for starter in self.starters:
            with contextlib.suppress(psutil.Error):
                top = psutil.Process(starter.pid)
                for p in [top, *top.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        found[p.pid] = " ".join(p.cmdline()) or p.name()
        return found

    def actors(self) -> list[psutil.Process]:
        return [
            psutil.Process(pid)
            for pid, name in self.processes().items()
            if name.startswith("ray::ShardActor")
        ]


def _start_node(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [*RAY_CLI, "start", "--block", "--num-cpus", "1", "--disable-usage-stats", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: stopped whole, nothing else
        )


def _wait_started(starter: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while "Ray runtime started" not in log.read_text():
        if starter.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"ray start failed:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)


def _stop_group(starter: subprocess.Popen[bytes]) -> None:
    """The whole node at once (a test cluster has nothing to drain): its own process group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(starter.pid, signal.SIGKILL)
    starter.wait(10)


SPECIFIC_SERVER_IDLE_S = 10
# Ray's proxy failing to start its per-client server, in the two ways seen on loaded 2-core CI
# machines: its own message, and psutil tripping over the previous per-client server's zombie.
RAY_CLIENT_START_FAILURES = ("Starting Ray client server failed", "psutil.ZombieProcess")
RAY_CLIENT_START_ATTEMPTS = 3


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="lt-ray-", dir="/tmp"))  # short: Ray's socket paths
    token = root / "token"
    token.write_text(secrets.token_hex(32))
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    # TIMEOUT_FOR_SPECIFIC_SERVER_S: the head's per-client server exits after this many idle
    # seconds (30 by default), so "left as found" can be checked soon after the run. It also
    # counts from the server's start, before the client has connected through the proxy: at 2 s
    # a slow start on 2 busy cores made the server quit first ("Starting Ray client server
    # failed"), so it is SPECIFIC_SERVER_IDLE_S.
    node_env = {
        **os.environ,
        **env,
        "RAY_USAGE_STATS_ENABLED": "0",
        "TIMEOUT_FOR_SPECIFIC_SERVER_S": str(SPECIFIC_SERVER_IDLE_S),
    }
    port, client_port = _free_ports(2)
    starters: list[subprocess.Popen[bytes]] = []
    try:
        head = [
            "--head",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--ray-client-server-port",
            str(client_port),
            "--include-dashboard=false",
            "--temp-dir",
            str(root / "ray"),
        ]
        starters.append(_start_node(head, root / "head.log", node_env))
        # Ray 2.60 turns 127.0.0.1 into this host's own address (the one its route out has);
        # the second node joins there, started at once: it waits for the head's GCS itself.
        address = f"{services.get_node_ip_address()}:{port}"
        worker = ["--address", address, "--node-ip-address", "127.0.0.1"]
        starters.append(_start_node(worker, root / "worker.log", node_env))
        _wait_started(starters[0], root / "head.log")
        _wait_started(starters[1], root / "worker.log")
        yield Cluster(address, client_port, env, starters, root / "ray")
    finally:
        for starter in reversed(starters):
            _stop_group(starter)
        shutil.rmtree(root, ignore_errors=True)


def _driver_env(cluster: Cluster, **more: str) -> dict[str, str]:
    return {**cluster.env, **more}


def test_ray_local_stops_every_process_it_started(tmp_path: Path) -> None:
    temp = Path(tempfile.mkdtemp(prefix="lt-", dir="/tmp"))  # short: Ray's socket paths
    try:
        code, output, left = _run_left(
            _server_args("local", tmp_path / "out"), tmp_path, {"TMPDIR": str(temp)}
        )
        assert list(temp.glob("loadtest-ray-*")) == []  # the private Ray's directory is gone too
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert code in (0, 5), output  # VALID, or INVALID only because this busy host fell behind
    assert left == [], f"left running {EXITED_WAIT_S:g} s after exit: {left}"
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["client"]["placement"] == "ray local"
    assert len({w["pid"] for w in result["client"]["workers"]}) == 2
    _exact_schedule(result)


@pytest.mark.parametrize("through", ["auto", "client"])
def test_two_nodes_spread_merge_exactly_and_are_left_as_found(
    cluster: Cluster, tmp_path: Path, through: str
) -> None:
    before = cluster.processes()
    if through == "auto":
        address, env = "auto", _driver_env(cluster, RAY_ADDRESS=cluster.address)
    else:
        address, env = f"ray://127.0.0.1:{cluster.client_port}", _driver_env(cluster)
    code, output, left = _run_left(_server_args(address, tmp_path / "out"), tmp_path, env, 1.0)
    earlier: list[str] = []
    while (
        through == "client"
        and any(failure in output for failure in RAY_CLIENT_START_FAILURES)
        and len(earlier) < RAY_CLIENT_START_ATTEMPTS - 1
    ):
        # Ray's own proxy sometimes fails to start its per-client server on a loaded 2-core CI
        # machine: each way seen in full suites, once twice in a row (CI of 90a9ad3), never in
        # this test alone (0 failures in 3 runs beside three CPU hogs). What it logged goes with
        # the final outcome, and the last attempt's failure fails the test.
        earlier.append(f"{output}\n{cluster.client_server_logs()}")
        code, output, left = _run_left(_server_args(address, tmp_path / "out"), tmp_path, env, 1.0)
    for number, failure in enumerate(earlier, 1):
        output = f"{output}\n(attempt {number}: {failure})"
    assert code in (0, 5), output
    assert left == []  # the driver side: nothing of ours runs on
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    _exact_schedule(result)
    nodes = {w["ray_node"] for w in result["client"]["workers"]}
    assert len(nodes) == 2, "one actor on each node (one CPU each, SPREAD)"
    assert result["summary"]["completed_ok"] == result["summary"]["scheduled"]
    # The cluster: its actors are gone and nothing else was added or taken (within 5 s; with
    # Ray Client, once the head's per-client server has idled out, which is Ray's own timer).
    wait_s = EXITED_WAIT_S + (SPECIFIC_SERVER_IDLE_S if through == "client" else 0)
    deadline = time.monotonic() + wait_s
    while cluster.processes().keys() != before.keys() and time.monotonic() < deadline:
        time.sleep(0.2)
    now = cluster.processes()
    assert now.keys() - before.keys() == set(), {p: now[p] for p in now.keys() - before.keys()}
    assert before.keys() - now.keys() == set()


def test_an_actor_lost_mid_run_is_named_and_its_queries_never_answered(
    cluster: Cluster, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run = subprocess.Popen(
        [*LOADTEST, *_server_args("auto", out, duration_s=5)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **_driver_env(cluster, RAY_ADDRESS=cluster.address)},
    )
    try:
        deadline = time.monotonic() + 90
        playing: set[int] = set()  # actors seen in `run` or a heartbeat (sent only once it runs)
        # Ray retitles an actor's process with the method it is running, but a threaded actor's
        # title flips to each 0.2 s heartbeat and back to idle while `run` goes on: both titles
        # need never show `.run` at one instant, so each actor is counted once it has shown one.
        while len(actors := cluster.actors()) < 2 or playing != {a.pid for a in actors}:
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()[0]
            for actor in actors:
                with contextlib.suppress(psutil.Error):
                    title = " ".join(actor.cmdline())
                    if "ShardActor.run" in title or "ShardActor.heartbeat" in title:
                        playing.add(actor.pid)
            time.sleep(0.05)
        time.sleep(3.0)  # past the 2 s start delay, 1–3 s into the 5 s run
        victim = actors[0]
        victim.kill()
        output, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 3, output  # INVALID, with the result written
    result = json.loads((out / "result.json").read_text())
    lost = [w for w in result["client"]["workers"] if w["pid"] == victim.pid]
    assert len(lost) == 1 and lost[0]["issued"] == 0
    shard = lost[0]["shard"]
    assert f"shard {shard} lost" in output
    assert f"shard {shard} lost" in result["run"]["stop_reason"]
    assert result["run"]["partial"] is True
    s = result["settings"]
    own = shard_schedule(
        s["qps"],
        s["min_duration_ns"],
        s["min_query_count"],
        s["sample_count"],
        s["schedule_seed"],
        s["sample_seed"],
        shard,
        2,
    )
    summary = result["summary"]
    assert summary["pending"] >= len(own)  # the lost shard's queries: never answered
    assert summary["completed_ok"] > 0  # the other shard played on
    assert summary["completed_ok"] + summary["pending"] + summary["errors"] == len(
        result["records"]["columns"]["scheduled_ns"]
    )
    assert result["verdict"]["valid"] is False


def test_unreachable_ray_address_is_one_clear_line_and_quick(tmp_path: Path) -> None:
    for address in (f"127.0.0.1:{_free_port()}", f"ray://127.0.0.1:{_free_port()}"):
        started = time.monotonic()
        done = subprocess.run(
            [*LOADTEST, *_server_args(address, tmp_path / "out")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 1
        assert f"error: cannot reach the Ray cluster at '{address}'" in done.stdout + done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        assert time.monotonic() - started < 20  # Ray alone retries for 30 s to minutes
