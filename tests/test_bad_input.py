"""Bad input is one clear line and a non-zero exit, never a traceback: a row per case (#13)."""

from __future__ import annotations

import typing

import pytest
from test_options import _callbacks, _flag, _option_info
from typer.testing import CliRunner

from loadtest.cli import app
from loadtest.commands.options import finite_float

FAKE = "fake://?servers=4&service_ms=1"


def _float_flags() -> list[tuple[str, str, typing.Any]]:
    found = []
    for command, callback in _callbacks(app):
        hints = typing.get_type_hints(callback, include_extras=True)
        for parameter, hint in hints.items():
            info = _option_info(hint)
            base = typing.get_args(hint)[0] if info is not None else None
            # float, float | None and list[float] | None all carry float in their arguments
            nested = [a for arg in typing.get_args(base) for a in (arg, *typing.get_args(arg))]
            if info is not None and float in (base, *nested):
                found.append((command, _flag(info, parameter), info))
    return found


def test_every_float_flag_refuses_nan_and_inf():
    flags = _float_flags()
    assert len(flags) > 20
    missing = [(c, f) for c, f, info in flags if info.parser is not finite_float]
    assert not missing, f"float flags without the finite check: {missing}"


ROWS = [
    (["server", "--url", FAKE, "--duration", "nan"], "--duration"),
    (["server", "--url", FAKE, "--duration", "inf"], "--duration"),
    (["server", "--url", FAKE, "--max-duration", "nan"], "--max-duration"),
    (["server", "--url", FAKE, "--target-latency", "inf"], "--target-latency"),
    (["server", "--url", FAKE, "--late-threshold", "nan"], "--late-threshold"),
    (["server", "--url", FAKE, "--timeout", "inf"], "--timeout"),
    (["server", "--url", FAKE, "--qps", "nan"], "--qps"),
    (["server", "--url", FAKE, "--seed", "-1"], "--seed"),
    (["server", "--url", FAKE, "--sample-seed", "-3"], "--sample-seed"),
    (["offline", "--url", FAKE, "--expected-qps", "inf"], "--expected-qps"),
    (["offline", "--url", FAKE, "--expected-qps", "nan"], "--expected-qps"),
    (["offline", "--url", FAKE, "--expected-qps", "-5"], "--expected-qps"),
    (["offline", "--url", FAKE, "--expected-qps", "fast"], "--expected-qps"),
    (["single-stream", "--url", FAKE, "--duration", "nan"], "--duration"),
    (["multi-stream", "--url", FAKE, "--percentile", "nan"], "--percentile"),
    (["find-peak", "--url", FAKE, "--budget", "inf"], "--budget"),
    (["compare", "--url", FAKE, "--qps", "nan"], "--qps"),
    (["plan", "--target-qps", "inf", "--peak-qps", "100"], "--target-qps"),
    (["plan", "--target-qps", "100", "--peak-qps", "nan"], "--peak-qps"),
    (["serve", "--http-port", "70000"], "--http-port"),
    (["serve", "--grpc-port", "-1"], "--grpc-port"),
    (["stub", "--http-port", "65536"], "--http-port"),
    (["stub", "--grpc-server", "nginx"], "--grpc-server"),
    (["models", "build", "--seed", "-1"], "--seed"),
]


@pytest.mark.parametrize(("args", "flag"), ROWS, ids=[" ".join(r[0]) for r in ROWS])
def test_bad_value_is_one_usage_line(args: list[str], flag: str):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert ("Traceback" not in result.output and result.exception is None) or isinstance(
        result.exception, SystemExit
    )
    assert f"Invalid value for '{flag}'" in result.output, result.output


@pytest.mark.parametrize("which", ["--grpc-port", "--http-port"])
def test_stub_on_a_taken_port_is_one_line(which: str):
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        ports = {"--grpc-port": "0", "--http-port": "0", which: port}
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "loadtest.cli",
                "stub",
                *(x for kv in ports.items() for x in kv),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot start the stub server"), lines


def test_stub_stops_on_sigterm_without_a_traceback():
    import signal
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "loadtest.cli", "stub", "--http-port", "0", "--grpc-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline().startswith("ready")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert "Traceback" not in stderr, stderr
    assert process.returncode in (0, 143)
