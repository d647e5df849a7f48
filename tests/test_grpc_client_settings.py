"""The gRPC client as recorded settings (issue #26): --grpc-client, --grpc-compression,
--grpc-keepalive and --connections reach the target through TargetSettings/target_for (the one
factory commands, workers and Ray actors use) and result.json; the proxy variables grpcio honours
refuse the wire client in one line; --connections spreads calls round robin; `plan` says how the
balancer must spread them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import numpy as np
import pytest
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from loadtest.analysis.capacity import SPREAD_ASSUMPTION, plan_capacity
from loadtest.cli import app
from loadtest.core.records import Records
from loadtest.core.schedule import server_schedule
from loadtest.core.settings import GrpcOptions, Protocol, TargetSettings
from loadtest.engine.runner import RunOutcome
from loadtest.errors import SettingsError
from loadtest.report.results import plain
from loadtest.report.terminal import _generator_rows
from loadtest.shards.merge import client_report, shard_result
from loadtest.stub.process import running_stub
from loadtest.targets import target_for
from loadtest.targets.grpc_proxy_env import grpc_proxy_for
from loadtest.targets.triton_grpc import TritonGrpcTarget
from loadtest.targets.triton_stream import TritonStreamTarget

URL = "127.0.0.1:1"


def _refusal(args: list[str], exit_code: int = 2) -> str:
    """The one line the CLI prints: typer's usage error, or (cli.main) a SettingsError's text
    with its exit code; never a traceback."""
    result = CliRunner().invoke(app, args)
    if isinstance(result.exception, SettingsError):
        assert result.exception.exit_code == exit_code
        return str(result.exception)
    assert result.exit_code == exit_code and isinstance(result.exception, SystemExit), result.output
    return " ".join(result.output.split())


def test_the_grpc_settings_reach_the_target_through_target_for():
    settings = TargetSettings(
        url=URL,
        grpc_compression="gzip",
        grpc_keepalive_s=5.0,
        grpc_keepalive_timeout_s=2.0,
        connections=3,
    )
    target = target_for(settings)
    assert isinstance(target, TritonGrpcTarget)
    assert target.load_client == "wire" and target.grpc_compression == "gzip"
    assert (target.keepalive_s, target.keepalive_timeout_s, target.connections) == (5.0, 2.0, 3)
    assert "(3 connections)" in target.description
    plain_target = target_for(TargetSettings(url=URL))
    assert isinstance(plain_target, TritonGrpcTarget)
    assert plain_target.grpc_compression is None and plain_target.connections == 1
    assert GrpcOptions.of(TargetSettings(url=URL)) == GrpcOptions()


def test_result_json_records_the_grpc_settings():
    recorded = plain(TargetSettings(url=URL, grpc_client="grpcio"))
    assert recorded["grpc_client"] == "grpcio"
    assert recorded["grpc_compression"] == "none" and recorded["connections"] == 1
    assert recorded["grpc_keepalive_s"] == 0.0 and recorded["grpc_keepalive_timeout_s"] == 20.0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"grpc_client": "h3"}, "--grpc-client 'h3': use one of wire, grpcio"),
        ({"grpc_compression": "br"}, "--grpc-compression 'br': use one of none, gzip, deflate"),
        ({"grpc_keepalive_s": -1.0}, "--grpc-keepalive must be 0"),
        ({"grpc_keepalive_s": 1e300}, "--grpc-keepalive must be 0"),
        ({"connections": 0}, "--connections must be 1 to 64"),
        ({"connections": 10**9}, "--connections must be 1 to 64"),
        ({"connections": 2, "protocol": Protocol.HTTP}, "--connections is for --protocol grpc"),
        (
            {"grpc_compression": "gzip", "protocol": Protocol.HTTP_STREAM},
            "--grpc-compression is for --protocol grpc or grpc-stream",
        ),
        (
            {"connections": 2, "protocol": Protocol.GRPC_STREAM},
            "--connections is for --protocol grpc",
        ),
        (
            {"grpc_keepalive_s": 1.0, "grpc_client": "grpcio"},
            "--grpc-keepalive is for --grpc-client wire, not grpcio",
        ),
        ({"grpc_client": "grpcio", "protocol": Protocol.HTTP}, "--grpc-client is for --protocol"),
    ],
)
def test_bad_or_misplaced_grpc_settings_are_refused(fields, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        TargetSettings(url=URL, **fields)


@pytest.mark.parametrize(
    ("flags", "message", "exit_code"),
    [
        (["--grpc-client", "h3"], "Invalid value for '--grpc-client'", 2),
        (["--grpc-compression", "zstd"], "Invalid value for '--grpc-compression'", 2),
        (["--connections", "0"], "Invalid value for '--connections'", 2),
        (["--connections", "65"], "Invalid value for '--connections'", 2),
        (["--grpc-keepalive", "1e300"], "Invalid value for '--grpc-keepalive'", 2),
        (["--grpc-keepalive", "nan"], "Invalid value for '--grpc-keepalive'", 2),
        (["--protocol", "http", "--connections", "4"], "--connections is for --protocol grpc", 1),
        (["--grpc-client", "grpcio", "--grpc-compression", "gzip"], "for --grpc-client wire", 1),
    ],
)
def test_the_cli_refuses_bad_grpc_flags_in_one_line(flags, message, exit_code):
    args = ["server", "--url", "127.0.0.1:9", "--embedded", "never", "--qps", "10", *flags]
    assert message in _refusal(args, exit_code)


def test_a_mix_takes_the_grpc_flags_for_every_entry(tmp_path):
    """#26: --grpc-client (and the other client flags) reach each mix entry's target and its
    recorded settings; a flag that does not fit an entry's protocol is one line, exit 1."""
    out = tmp_path / "mix"
    with running_stub() as stub:
        run = subprocess.run(
            [sys.executable, "-m", "loadtest.cli", "mix", "--model", "tiny:20", "--model",
             "resnet50:5", "--url", stub.grpc_url, "--embedded", "never", "--grpc-client",
             "grpcio", "--duration", "0.5", "--min-queries", "5", "--no-isolated",
             "--no-live", "--output", str(out)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert run.returncode in (0, 3, 5), run.stderr
    data = json.loads((out / "result.json").read_text())
    for entry in data["entries"]:
        assert entry["together"]["target"]["grpc_client"] == "grpcio"
        assert entry["together"]["summary"]["completed_ok"] > 0
    args = ["mix", "--model", "tiny:10", "--protocol", "http", "--connections", "2",
            "--embedded", "never"]  # fmt: skip
    assert "--connections is for --protocol grpc" in _refusal(args, 1)


# --- the proxy variables, as grpc-core reads them ----------------------------------------------
@pytest.mark.parametrize(
    ("environ", "host", "proxy"),
    [
        ({}, "127.0.0.1", None),
        (
            {"https_proxy": "http://p:3128"},
            "127.0.0.1",
            "https_proxy=http://p:3128",
        ),  # no loopback exemption
        ({"grpc_proxy": "", "https_proxy": "http://p:3128"}, "h", None),  # set and empty: none
        ({"http_proxy": "http://u:pw@p:3128"}, "h", "http_proxy=http://u:***@p:3128"),
        ({"HTTPS_PROXY": "http://p:3128"}, "h", None),  # grpc-core reads lower case only
        ({"https_proxy": "socks5://p:1080"}, "h", None),  # not http: grpc-core ignores it
        ({"https_proxy": "http://p:3128", "no_proxy": "127.0.0.1"}, "127.0.0.1", None),
        ({"https_proxy": "http://p:3128", "no_proxy": "example.com"}, "a.example.com", None),
        (
            {"https_proxy": "http://p:3128", "no_proxy": "example.com"},
            "badexample.com",
            "https_proxy=http://p:3128",
        ),
        ({"https_proxy": "http://p:3128", "no_proxy": "10.0.0.0/8"}, "10.1.2.3", None),
        (
            {"https_proxy": "http://p:3128", "no_proxy": "10.0.0.0/8"},
            "11.1.2.3",
            "https_proxy=http://p:3128",
        ),
        # no_grpc_proxy first, even when it does not list the host
        (
            {"https_proxy": "http://p:3128", "no_grpc_proxy": "other", "no_proxy": "h"},
            "h",
            "https_proxy=http://p:3128",
        ),
        (
            {"grpc_proxy": "http://g:1", "https_proxy": "http://p:3128"},
            "h",
            "grpc_proxy=http://g:1",
        ),
    ],
)
def test_grpc_proxy_for_follows_grpc_core(environ, host, proxy):
    assert grpc_proxy_for(host, environ) == proxy


@pytest.mark.parametrize("target_class", [TritonGrpcTarget, TritonStreamTarget])
def test_the_wire_target_refuses_a_proxy_grpcio_would_use(monkeypatch, stub, target_class):
    monkeypatch.setenv("https_proxy", "http://proxy.invalid:3128")
    for name in ("grpc_proxy", "no_grpc_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    target = target_class(URL, "tiny")
    with pytest.raises(SettingsError, match=r"https_proxy=http://proxy\.invalid:3128 applies"):
        asyncio.run(target.open())
    args = ["server", "--url", stub.grpc_url, "-m", "tiny", "--embedded", "never", "--qps", "10"]
    assert "no_grpc_proxy" in _refusal([*args, "--duration", "0.2", "--no-live"])


@pytest.mark.parametrize("target_class", [TritonGrpcTarget, TritonStreamTarget])
def test_the_grpcio_client_is_not_refused_for_a_proxy(monkeypatch, target_class):
    monkeypatch.setenv("https_proxy", "http://proxy.invalid:3128")
    target = target_class(URL, "tiny", load_client="grpcio")
    target._refuse_proxy()  # grpcio routes setup and load alike: nothing to refuse


# --- --connections: round robin -----------------------------------------------------------------
def test_connections_spread_calls_round_robin(stub):
    async def main() -> list[int]:
        target = TritonGrpcTarget(stub.grpc_url, "tiny", connections=3)
        spec = await target.open()
        await target.prepare([{i.name: np.zeros(i.shape, i.numpy_dtype) for i in spec.inputs}])
        assert len(target._wire_clients) == 3
        counts = [0, 0, 0]
        for k, wire in enumerate(target._wire_clients):
            real = wire.call

            def counted(*args, _k=k, _real=real, **kwargs):
                counts[_k] += 1
                return _real(*args, **kwargs)

            wire.call = counted  # type: ignore[method-assign]
        answers: list[str | None] = []
        finished = asyncio.Event()

        def done(error: str | None) -> None:
            answers.append(error)
            if len(answers) == 9:
                finished.set()

        for _ in range(9):
            target.start_infer(0, done)
        await asyncio.wait_for(finished.wait(), 10)
        assert answers == [None] * 9
        await target.infer(0)
        await target.close()
        return counts

    assert asyncio.run(main()) == [4, 3, 3]


# --- transparent retries merged across workers -------------------------------------------------
def test_transparent_retries_merge_across_workers():
    results = []
    for k, retries in enumerate((2, 5)):
        schedule = server_schedule(100, 50_000_000, 1, 1, k, 1)
        records = Records(scheduled_ns=schedule.scheduled_ns, sample_index=schedule.sample_index)
        outcome = RunOutcome(records, 0, 1, interrupted=False, stop_reason="")
        lag = np.zeros(1, np.int64)
        results.append(
            shard_result(k, schedule, outcome, 0.0, lag, 1, 1_000_000, transparent_retries=retries)
        )
    merged = results[0].records
    assert merged is not None
    report = client_report(results, "processes", "asyncio", merged)
    assert [w.transparent_retries for w in report.workers] == [2, 5]
    assert report.transparent_retries == 7 and report.connection_waits == 2
    assert report.to_dict()["transparent_retries"] == 7
    table = Table()
    _generator_rows(table, report)
    console = Console(record=True, width=300)
    console.print(table)
    text = " ".join(console.export_text().split())
    assert "transparent retries" in text and "7 queries were sent again" in text
    assert "2 queries found no free connection (or gRPC stream slot)" in text


def test_plan_states_how_queries_must_be_spread():
    plan = plan_capacity(400, 100)
    assert SPREAD_ASSUMPTION in plan.assumptions
    assert "An L4 balancer spreads connections, not queries" in SPREAD_ASSUMPTION
    result = CliRunner().invoke(app, ["plan", "--target-qps", "400", "--peak-qps", "100"])
    assert result.exit_code == 0, result.output
    assert "L4 balancer" in " ".join(result.output.split())
