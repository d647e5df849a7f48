"""Hostile and careless input (#26, section 2): one test per finding, beside the matrix
(test_bad_input_matrix.py) that checks every command's exit codes."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from loadtest.cli import app
from loadtest.commands import flag_groups as groups
from loadtest.commands.compare import verdicts_exit_code
from loadtest.commands.options import MAX_SAMPLES, finite_float, sample_count, url_text
from loadtest.core.json_depth import MAX_JSON_DEPTH, JsonTooDeep, json_depth, loads_bounded
from loadtest.core.secrets import parse_header
from loadtest.core.settings import (
    Protocol,
    ServerSettings,
    TargetSettings,
    TlsSettings,
    is_triton_url,
    url_extras,
)
from loadtest.errors import ExitCode, ResultFileError, SettingsError, TargetError
from loadtest.report.resultfile import load_result
from loadtest.rules.stats import send_lag_stats
from loadtest.rules.validity import (
    CLIENT_KEPT_UP,
    PERFORMANCE,
    Check,
    Verdict,
    lag_cannot_move_verdict,
    make_verdict,
)
from loadtest.scenarios.experiments.compare_run import CompareSetup, _settings_for
from loadtest.scenarios.mlperf.play import closed_loop_throughput
from loadtest.scenarios.searches.peak_search import PeakSearch, Probe
from loadtest.targets.fake import fake_from_url
from loadtest.targets.transport import grpc_credentials

FAKE = "fake://?servers=4&service_ms=1"


# --- huge finite numbers ----------------------------------------------------------------------
@pytest.mark.parametrize("text", ["1e300", "-1e300", "1e10", "1e-300", "-1e-12"])
def test_float_flags_refuse_magnitudes_no_schedule_or_clock_can_hold(text: str):
    with pytest.raises(typer.BadParameter):
        finite_float(text)


@pytest.mark.parametrize("text", ["0", "1e9", "-1e9", "1e-9", "0.5"])
def test_float_flags_keep_every_usable_value(text: str):
    assert finite_float(text) == float(text)


@pytest.mark.parametrize(
    "args",
    [
        ["server", "--url", FAKE, "--qps", "20", "--duration", "1e300"],
        ["server", "--url", FAKE, "--server-timeout", "1e300"],
        ["offline", "--url", FAKE, "--duration", "1e300"],
        ["offline", "--url", FAKE, "--max-duration", "1e300"],
        ["find-peak", "--url", FAKE, "--budget", "1e300"],
        ["find-peak", "--url", FAKE, "--probe-duration", "1e300"],
        ["plan", "--target-qps", "1e300", "--peak-qps", "1e-300"],
    ],
)
def test_the_reported_overflows_are_usage_errors(args: list[str]):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "Invalid value" in result.output


# --- JSON nesting and non-numbers ---------------------------------------------------------------
def test_json_depth_counts_brackets_outside_strings_only():
    assert json_depth('[[1], {"a": [2]}]') == 3
    assert json_depth('"[[[{{{"') == 0
    assert json_depth(r'["a\"[[[", 1]') == 1  # an escaped quote does not end the string
    assert json_depth(r'["a\\", [2]]') == 2  # an escaped backslash does not escape the quote
    assert json_depth("") == 0


def test_deep_json_is_refused_before_it_is_parsed():
    with pytest.raises(JsonTooDeep):
        loads_bounded("[" * 100_000)
    nested = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert loads_bounded(nested) is not None


def _run_file(tmp_path: Path, p99: str) -> Path:
    data = {
        "schema": "loadtest.result",
        "schema_version": 1,
        "scenario": "Server",
        "summary": {"latency": {"count": 1, "p99_ns": 1000}},
        "verdict": {"valid": True},
    }
    path = tmp_path / "result.json"
    path.write_text(json.dumps(data).replace('"p99_ns": 1000', f'"p99_ns": {p99}'))
    return path


@pytest.mark.parametrize("p99", ['"abc"', "NaN", "Infinity", "true"])
def test_a_result_whose_numbers_are_not_numbers_is_refused(tmp_path: Path, p99: str):
    with pytest.raises(ResultFileError, match="p99_ns"):
        load_result(_run_file(tmp_path, p99))


def test_a_result_with_numbers_and_nulls_reads(tmp_path: Path):
    assert load_result(_run_file(tmp_path, "null")).kind == "run"
    assert load_result(_run_file(tmp_path, "12.5")).kind == "run"


def test_diff_refuses_a_non_number_instead_of_dropping_the_row(tmp_path: Path):
    good = _run_file(tmp_path, "1000").rename(tmp_path / "a.json")
    bad = _run_file(tmp_path, '"abc"')
    result = CliRunner().invoke(app, ["diff", str(good), str(bad)])
    assert isinstance(result.exception, ResultFileError), result.output
    assert result.exception.exit_code == ExitCode.ERROR


# --- --samples ------------------------------------------------------------------------------
def test_samples_is_bounded():
    assert sample_count(str(MAX_SAMPLES)) == MAX_SAMPLES
    for text in ("99999999999", "0", "-1", str(MAX_SAMPLES + 1)):
        with pytest.raises(typer.BadParameter):
            sample_count(text)


# --- compare: URL password, exit codes ----------------------------------------------------------
def test_compare_sends_the_url_password_to_every_triton_side():
    endpoint = groups.Endpoint(url="user:s3cret@127.0.0.1:8001")
    flags = groups.target_flags("tiny", endpoint, groups.SampleLibrary(), groups.Access())
    setup = CompareSetup(
        flags=flags,
        targets=("triton-grpc", "triton-http"),
        runs=(),
        template=ServerSettings(qps=10.0, target_latency_ns=10_000_000),
    )
    for name, url in (("triton-grpc", "127.0.0.1:8001"), ("triton-http", "127.0.0.1:8000")):
        settings = _settings_for(setup, name, url)
        assert [h.name for h in settings.headers] == ["Authorization"]
        assert "s3cret" not in settings.url


def _verdict(valid: bool, client_bound: bool = False) -> Verdict:
    checks = [Check(PERFORMANCE, valid or client_bound, "")]
    if client_bound:
        checks.append(Check(CLIENT_KEPT_UP, False, "client-bound"))
    verdict = make_verdict("Server", checks)
    assert verdict.valid == valid and verdict.client_bound == client_bound
    return verdict


def test_compare_exit_code_follows_the_readme():
    assert verdicts_exit_code([_verdict(True), _verdict(False)]) == ExitCode.OK
    assert verdicts_exit_code([_verdict(False), _verdict(False)]) == ExitCode.INVALID
    assert verdicts_exit_code([_verdict(False, client_bound=True)]) == ExitCode.CLIENT_BOUND
    mixed = [_verdict(False, client_bound=True), _verdict(False)]
    assert verdicts_exit_code(mixed) == ExitCode.INVALID


# --- --url ----------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["127.0.0.1:70000", "127.0.0.1:-1", "h:abc", "", "  "])
def test_url_parser_refuses_bad_ports_and_empty_urls(url: str):
    with pytest.raises(typer.BadParameter):
        url_text(url)


@pytest.mark.parametrize(
    ("url", "extras"),
    [
        ("127.0.0.1:8001", ""),
        ("http://h:8000/", ""),
        ("h:8001/v2", "/v2"),
        ("h:8001?x=1", "?x=1"),
        ("grpc://h:8001#f", "#f"),
    ],
)
def test_a_triton_url_with_a_path_query_or_fragment_is_refused(url: str, extras: str):
    assert url_extras(url) == extras
    assert is_triton_url(url) == (extras == "")  # the same rule as is_triton_url
    protocol = Protocol.HTTP if url.startswith("http") else Protocol.GRPC
    if extras:
        with pytest.raises(SettingsError, match="no path, query or fragment"):
            TargetSettings(url=url, protocol=protocol)
    else:
        TargetSettings(url=url, protocol=protocol)


def test_the_fake_target_keeps_its_query():
    assert TargetSettings(url=FAKE).url == FAKE


# --- --max-qps caps closed loops --------------------------------------------------------------
def test_a_closed_loop_under_max_qps_never_sends_faster():
    async def measure() -> float:
        target = fake_from_url("fake://?servers=8&service_ms=1")
        await target.open()
        try:
            qps, _s, _stopped = await closed_loop_throughput(
                target, 8, 1, 16, 500_000_000, max_qps=100.0
            )
        finally:
            await target.close()
        return qps

    qps = asyncio.run(measure())
    assert 50 < qps <= 110  # 16 in flight at 1 ms each would be ~16 000 QPS uncapped


def test_sweep_takes_max_qps():
    result = CliRunner().invoke(app, ["sweep", "--help"])
    assert "--max-qps" in result.output


# --- client health at low rates ---------------------------------------------------------------
BOUND = 15_000_000


def _lag(late_ns: list[int], n: int = 100):
    lag = np.full(n, 50_000, dtype=np.int64)
    lag[: len(late_ns)] = late_ns
    return send_lag_stats(lag, n, bound_ns=BOUND)


def test_one_late_send_among_100_that_cannot_move_the_verdict_is_kept_up():
    lag = _lag([1_020_000])
    assert not lag.kept_up  # the p99 of 100 is their maximum: the old rule failed the run
    latencies = np.sort(np.full(100, 3_000_000))
    assert lag_cannot_move_verdict(lag, latencies, BOUND)
    # far over the bound whatever the lag: the lag did not make it INVALID either
    assert lag_cannot_move_verdict(lag, np.sort(np.full(100, 40_000_000)), BOUND)


def test_late_sends_that_could_move_the_verdict_still_fail():
    lag = _lag([1_020_000])
    near = np.sort(np.array([3_000_000] * 99 + [BOUND + 500_000]))  # over by less than the lag
    assert not lag_cannot_move_verdict(lag, near, BOUND)
    many = _lag([1_020_000, 1_100_000])  # 2 % late: the share rule holds
    assert not lag_cannot_move_verdict(many, np.sort(np.full(100, 3_000_000)), BOUND)


# --- a silent server --------------------------------------------------------------------------
def _silent_server() -> tuple[int, threading.Event]:
    """A loopback port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    done = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        while not done.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue
        for conn in held:
            conn.close()
        server.close()

    threading.Thread(target=accept, daemon=True).start()
    return int(server.getsockname()[1]), done


@pytest.mark.parametrize("protocol", [Protocol.HTTP, Protocol.GRPC])
def test_a_silent_server_gives_a_reason_within_a_few_seconds(protocol: Protocol):
    from loadtest.targets import target_for

    port, done = _silent_server()
    settings = TargetSettings(url=f"127.0.0.1:{port}", protocol=protocol, request_timeout_s=1)

    async def open_it() -> str:
        target = target_for(settings)
        try:
            await target.open()
        except TargetError as exc:
            return str(exc)
        finally:
            await target.close()
        return ""

    began = time.monotonic()
    try:
        message = asyncio.run(open_it())
    finally:
        done.set()
    assert time.monotonic() - began < 12  # max(--timeout, 5 s) + the TLS probe's 2 s + slack
    assert message.split(": ", 1)[-1].strip(), message


# --- smaller -------------------------------------------------------------------------------
def test_a_bin_header_is_refused_as_binary_metadata():
    with pytest.raises(SettingsError, match="binary gRPC metadata"):
        parse_header("x-bin:abc")


def test_a_bad_ca_cert_is_one_line_with_no_grpc_core_logging(tmp_path: Path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(SettingsError, match="not a PEM certificate"):
        grpc_credentials(TlsSettings(ca_cert=bad))
    code = (
        "from loadtest.targets.transport import grpc_credentials\n"
        "from loadtest.core.settings import TlsSettings\n"
        "from pathlib import Path\n"
        f"grpc_credentials(TlsSettings(ca_cert=Path({str(bad)!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert "ssl_transport_security" not in result.stderr
    assert "SettingsError" in result.stderr  # raised by us, before grpc-core saw the file


def test_an_interrupted_search_does_not_say_no_rate_met_the_bound():
    search = PeakSearch(target_latency_ns=BOUND, start_qps=100, resolution=0.05)
    probes = [Probe(qps=100, latency_ns=2 * BOUND, valid=False, client_bound=False)]
    finished = search.conclusion(probes, False)
    assert "met the bound" in finished.text
    stopped = search.conclusion(probes, False, interrupted=True)
    assert "met the bound" not in stopped.text
    assert stopped.text.startswith("stopped before the search finished")
    assert stopped.status == finished.status


def test_export_refuses_to_overwrite_csvs_without_force(tmp_path: Path):
    run = _run_file(tmp_path, "1000")
    out = tmp_path / "csv"
    first = CliRunner().invoke(app, ["export", str(run), "-o", str(out)])
    assert first.exit_code == 0, first.output
    before = (out / "summary.csv").read_text()
    second = CliRunner().invoke(app, ["export", str(run), "-o", str(out)])
    assert isinstance(second.exception, SettingsError), second.output
    assert "--force" in str(second.exception)
    assert (out / "summary.csv").read_text() == before
    forced = CliRunner().invoke(app, ["export", str(run), "-o", str(out), "--force"])
    assert forced.exit_code == 0, forced.output
