"""The black-box matrix of bad input (#26): one row per behaviour, across all 15 commands.

Each row is a command line and the exit code the README's table gives it: 2 for a malformed flag
or value (nan, inf, 1e300, a port out of range, ...), 1 for an error that is one clear line (an
unreadable or hostile input file, nothing listening, a contradiction between flags). A row fails
on any traceback, on another exit code, or on an exit without its one line.

Rows run the CLI in process (typer's CliRunner): every one is refused before any load, so the
matrix takes seconds. The only addresses are the in-process fake target and loopback ports where
nothing listens; no row starts an embedded Triton (--embedded never wherever a Triton URL is).
"""

from __future__ import annotations

import json
import signal
import socket
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_bad_input import _float_flags
from typer.testing import CliRunner

from loadtest.cli import app
from loadtest.errors import ExitCode, LoadtestError

USAGE, ERROR = int(ExitCode.USAGE), int(ExitCode.ERROR)
FAKE = "fake://?servers=4&service_ms=1"
NEVER = ["--embedded", "never"]  # never an embedded Triton in place of a Triton URL
ROW_SECONDS = 30  # a row that got past the checks would start a run: fail it, do not hang


def _free_port() -> int:
    """A loopback port where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DEAD = f"127.0.0.1:{_free_port()}"

# What each command needs besides the flag under test, so the row reaches that flag's check.
BASE: dict[str, list[str]] = {
    "server": ["--url", FAKE, "--no-live"],
    "offline": ["--url", FAKE, "--no-live"],
    "single-stream": ["--url", FAKE, "--no-live"],
    "multi-stream": ["--url", FAKE, "--no-live"],
    "find-peak": ["--url", FAKE, "--no-live"],
    "sweep": ["--url", FAKE, "--no-live"],
    "mix": ["-m", "tiny", "--url", FAKE, "--no-live"],
    "compare": ["--url", FAKE, "--no-live"],
    "plan": [],
    "stub": [],
    "diff": ["{files}/ok.json", "{files}/ok.json"],
    "sessions": ["--url", f"http://{DEAD}", "--turns", "fixed:2"],
}
PLAN_REQUIRED = {"--target-qps": "100", "--peak-qps": "50"}

# --- every float flag of every command: nan, inf, 1e300, a billionth of a billionth, text -----
FLOAT_VALUES = ["nan", "-inf", "1e300", "-1e300", "1e-300", "abc"]


def _float_rows() -> Iterator[tuple[list[str], int]]:
    for command, flag, _info in _float_flags():
        if command not in BASE:
            continue
        base = list(BASE[command])
        if command == "plan":
            for name, value in PLAN_REQUIRED.items():
                if name != flag:
                    base += [name, value]
        for value in FLOAT_VALUES:
            yield [command, *base, flag, value], USAGE


# --- hand-written rows: one behaviour each ----------------------------------------------------
LOAD_COMMANDS = ["server", "offline", "single-stream", "multi-stream", "find-peak", "sweep"]
HAND: list[tuple[list[str], int]] = []
for _command in [*LOAD_COMMANDS, "compare"]:
    HAND += [
        ([_command, "--url", "127.0.0.1:99999", *NEVER], USAGE),
        ([_command, "--url", "127.0.0.1:abc", *NEVER], USAGE),
        ([_command, "--url", "u:pw@127.0.0.1:70000", *NEVER], USAGE),
        ([_command, "--url", f"{DEAD}/v2/models", *NEVER], ERROR),
        ([_command, "--url", f"{DEAD}?x=1", *NEVER], ERROR),
        (
            [_command, "--url", f"http://{DEAD}#top", "--protocol", "http", *NEVER],
            ERROR,
        ),
        ([_command, "--url", DEAD, *NEVER, "--no-live"], ERROR),
        ([_command, "--url", FAKE, "--samples", "99999999999"], USAGE),
        ([_command, "--url", FAKE, "--samples", "0"], USAGE),
        ([_command, "--url", FAKE, "--samples", "-5"], USAGE),
        ([_command, "--url", FAKE, "--samples", "many"], USAGE),
        ([_command, "--url", FAKE, "--seed", "-1"], USAGE),
        ([_command, "--url", FAKE, "--sample-seed", "1.5"], USAGE),
        ([_command, "--url", FAKE, "--header", "x-bin:abc", "--no-live"], ERROR),
        ([_command, "--url", FAKE, "--header", "novalue", "--no-live"], ERROR),
        ([_command, "--url", FAKE, "--header", "content-length:5", "--no-live"], ERROR),
        ([_command, "--url", FAKE, "--header", "bad name:x", "--no-live"], ERROR),
        ([_command, "--url", FAKE, "--protocol", "carrier-pigeon"], USAGE),
        ([_command, "--url", FAKE, "--timeout", "0", "--no-live"], ERROR),
        ([_command, "--url", FAKE, "--timeout", "-1", "--no-live"], ERROR),
        ([_command, "--url", FAKE, "--no-such-flag"], USAGE),
        ([_command, "--url", FAKE, "--shape", "INPUT0", "--no-live"], ERROR),
    ]
HAND += [
    (["server", "--url", FAKE, "--qps", "0", "--no-live"], ERROR),
    (["server", "--url", FAKE, "--qps", "-10", "--no-live"], ERROR),
    (["server", "--url", FAKE, "--qps", "1e9", "--duration", "1e9", "--no-live"], ERROR),
    (["server", "--url", FAKE, "--percentile", "100", "--no-live"], ERROR),
    (["server", "--url", FAKE, "--percentile", "0", "--no-live"], ERROR),
    (["server", "--url", FAKE, "--error-budget", "2", "--no-live"], ERROR),
    (["server", "--url", FAKE, "--abort-on-error-rate", "1.5", "--no-live"], ERROR),
    (["server", "--url", FAKE, "--check-outputs", "2", "--no-live"], ERROR),
    (["server", "--url", FAKE, "--workers", "-1", "--no-live"], ERROR),
    (["server", "--url", FAKE, "--tls", "--no-live"], ERROR),
    (["server", "--url", FAKE, "--ca-cert", "{files}/bad.pem", "--no-live"], ERROR),
    (
        [
            "server",
            "--url",
            f"grpcs://{DEAD}",
            "--ca-cert",
            "{files}/bad.pem",
            "--embedded",
            "never",
            "--no-live",
        ],
        ERROR,
    ),
    (
        [
            "server",
            "--url",
            f"grpcs://{DEAD}",
            "--ca-cert",
            "{files}/missing.pem",
            "--embedded",
            "never",
            "--no-live",
        ],
        ERROR,
    ),
    (["server", "--url", f"https://{DEAD}", *NEVER, "--no-live"], ERROR),
    (["server", "--url", f"http://{DEAD}", *NEVER, "--no-live"], ERROR),
    (["server", "--url", "ftp://127.0.0.1:1", *NEVER, "--no-live"], ERROR),
    (["server", "--url", "", *NEVER, "--no-live"], USAGE),
    (["server", "--url", " ", *NEVER, "--no-live"], USAGE),
    (["server", "--url", "u@127.0.0.1:1", *NEVER, "--no-live"], ERROR),
    (["server", "--url", FAKE, "--input-data", "{files}/missing.npz", "--no-live"], ERROR),
    (["server", "--url", FAKE, "--output", "{files}/ok.json", "--no-live"], ERROR),
    (["offline", "--url", FAKE, "--expected-qps", "-1"], USAGE),
    (["offline", "--url", FAKE, "--expected-qps", "1e300"], USAGE),
    (["offline", "--url", FAKE, "--batch-size", "0", "--no-live"], ERROR),
    (["find-peak", "--url", FAKE, "--start-qps", "100", "--max-qps", "10", "--no-live"], ERROR),
    (["find-peak", "--url", FAKE, "--max-qps", "-1", "--no-live"], ERROR),
    (["find-peak", "--url", FAKE, "--mix", "{files}/missing.toml", "--no-live"], ERROR),
    (["server", "--url", FAKE, "--slo", "ttft:nan"], USAGE),
    (["server", "--url", FAKE, "--slo", "itl:5"], USAGE),
    (["server", "--url", FAKE, "--slo", "ttft"], USAGE),
    (["server", "--url", FAKE, "--slo", "ttft:5", "--slo", "ttft:6", "--no-live"], ERROR),
    (["server", "--url", FAKE, "--slo", "ttft:50", "--no-live"], ERROR),  # FAKE does not stream
    (["find-peak", "--url", FAKE, "--goodput-target", "99", "--no-live"], ERROR),
    (["find-peak", "--url", FAKE, "--slo", "e2e:50", "--no-live"], ERROR),
    (["find-peak", "--url", FAKE, "--slo", "e2e:50", "--goodput-target", "0", "--no-live"], ERROR),
    (["find-peak", "--url", FAKE, "--slo", "e2e:5", "--goodput-target", "150", "--no-live"], ERROR),
    (
        [
            "find-peak",
            "--url",
            FAKE,
            "--slo",
            "e2e:50",
            "--goodput-target",
            "99",
            "--target-latency",
            "50",
            "--no-live",
        ],
        ERROR,
    ),
    (["find-peak", "--url", FAKE, "--slo", "tpot:5", "--goodput-target", "99", "--no-live"], ERROR),
    (
        ["find-peak", "--mix", "{files}/missing.toml", "--slo", "e2e:5", "--goodput-target", "99"],
        ERROR,
    ),
    (["sweep", "--url", FAKE, "--instances", "0", "--no-live"], ERROR),
    (["sweep", "--url", FAKE, "--max-batch-size", "x", "--no-live"], ERROR),
    (["sweep", "--url", FAKE, "--space", "{files}/missing.toml", "--no-live"], ERROR),
    (["mix", "-m", "tiny:abc", "--url", FAKE, "--no-live"], USAGE),
    (["mix", "-m", "tiny:-5", "--url", FAKE, "--no-live"], ERROR),
    (["mix", "{files}/missing.toml", "--url", FAKE, "--no-live"], ERROR),
    (["compare", "--url", FAKE, "--qps", "-1", "--no-live"], ERROR),
    (["compare", "--url", FAKE, "--target", "nothing"], USAGE),
    (["plan", "--target-qps", "100"], ERROR),
    (["plan", "--target-qps", "100", "--peak-qps", "-1"], ERROR),
    (["plan", "--target-qps", "100", "--peak-qps", "50", "--headroom", "1.5"], ERROR),
    (["plan", "--target-qps", "100", "--from", "{files}/deep.json"], ERROR),
    (["plan", "--target-qps", "100", "--from", "{files}/missing.json"], ERROR),
    (["plan", "--target-qps", "100", "--from", "{files}/ok.json"], ERROR),
    (["plan", "--target-qps", "100", "--from", "{files}/list.json"], ERROR),
    (["serve", "--http-port", "65536"], USAGE),
    (["serve", "--grpc-port", "abc"], USAGE),
    (["stub", "--grpc-port", "-1"], USAGE),
    (["stub", "--http-port", "1e3"], USAGE),
    (["stub", "--servers", "2"], ERROR),  # a queue without a service time
    (["stub", "--service", "exponential"], ERROR),
    (["stub", "--servers", "-1", "--delay-ms", "5"], ERROR),
    (["stub", "--service", "gamma", "--delay-ms", "5"], USAGE),
    (["models", "build", "--seed", "-1"], USAGE),
    (["models", "build", "--repository", "{tmp}/repo", "--model", "no-such-model"], ERROR),
    (["models", "frobnicate"], USAGE),
    (["no-such-command"], USAGE),
]
# The readers: every hostile file, through every command that reads result files.
READERS = {
    "report": lambda f: ["report", f, "-o", "{tmp}/r.html"],
    "diff": lambda f: ["diff", "{files}/ok.json", f],
    "diff-baseline": lambda f: ["diff", f, "{files}/ok.json"],
    "export": lambda f: ["export", f, "-o", "{tmp}/csv"],
}
HOSTILE_FILES = [
    "deep.json",
    "deep_object.json",
    "p99_text.json",
    "p99_nan.json",
    "p99_infinity.json",
    "p99_list.json",
    "truncated.json",
    "empty.json",
    "list.json",
    "binary.json",
    "missing.json",
    "wrong_schema.json",
    "future_version.json",
]
for _reader, _argv in READERS.items():
    for _name in HOSTILE_FILES:
        HAND.append((_argv("{files}/" + _name), ERROR))

# sessions: every bad flag is refused before any connection (the URL is a dead port)
_SESSIONS = ["sessions", "--url", f"http://{DEAD}"]
HAND += [
    # a law that does not parse is a malformed value (2), as on every command
    ([*_SESSIONS, "--turns", "fixed:0"], USAGE),
    ([*_SESSIONS, "--turns", "fixed:2", "--think-time", "later"], USAGE),
    ([*_SESSIONS, "--turns", "fixed:2", "--think-time", "uniform:9:1"], USAGE),
    ([*_SESSIONS, "--turns", "fixed:2", "--protocol", "grpc"], ERROR),  # unary: no turns
    ([*_SESSIONS, "--input-data", "{files}/missing.json"], ERROR),
    ([*_SESSIONS, "--sessions", "0"], USAGE),
]

ROWS = [*_float_rows(), *HAND]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hostile files, and one good Server result (ok.json) written by hand."""
    root = tmp_path_factory.mktemp("hostile")
    ok = {
        "schema": "loadtest.result",
        "schema_version": 1,
        "scenario": "Server",
        "summary": {"latency": {"count": 1, "p99_ns": 1000}},
        "verdict": {"valid": True},
    }
    (root / "ok.json").write_text(json.dumps(ok))

    def with_p99(value: str) -> str:
        return json.dumps(ok).replace('"p99_ns": 1000', f'"p99_ns": {value}')

    (root / "deep.json").write_text("[" * 100_000)
    (root / "deep_object.json").write_text('{"a":' * 50_000 + "1" + "}" * 50_000)
    (root / "p99_text.json").write_text(with_p99('"abc"'))
    (root / "p99_nan.json").write_text(with_p99("NaN"))
    (root / "p99_infinity.json").write_text(with_p99("Infinity"))
    (root / "p99_list.json").write_text(with_p99('"[1]"'))
    (root / "truncated.json").write_text(json.dumps(ok)[:40])
    (root / "empty.json").write_text("")
    (root / "list.json").write_text("[1, 2, 3]")
    (root / "binary.json").write_bytes(bytes(range(256)))
    (root / "wrong_schema.json").write_text(json.dumps({**ok, "schema": "other"}))
    (root / "future_version.json").write_text(json.dumps({**ok, "schema_version": 99}))
    (root / "bad.pem").write_text("not a certificate\n")
    return root


def _timeout(_signum: int, _frame: typing.Any) -> None:
    raise TimeoutError(f"a row ran past {ROW_SECONDS} s: it got past every check")


def test_the_matrix_has_a_row_per_behaviour_and_enough_of_them():
    assert len(ROWS) >= 150
    commands = {args[0] for args, _ in ROWS}
    assert len(commands) >= 15, sorted(commands)
    assert len({tuple(args) for args, _ in ROWS}) == len(ROWS), "duplicate rows"


@pytest.mark.parametrize(
    ("args", "code"), ROWS, ids=[" ".join(r[0]).replace(DEAD, "127.0.0.1:DEAD") for r in ROWS]
)
def test_bad_input_is_one_line_and_the_documented_code(
    args: list[str], code: int, files: Path, tmp_path: Path
):
    argv = [a.replace("{files}", str(files)).replace("{tmp}", str(tmp_path)) for a in args]
    previous = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(ROW_SECONDS)
    try:
        result = CliRunner().invoke(app, argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    exc = result.exception
    assert "Traceback" not in result.output, result.output
    if isinstance(exc, LoadtestError):  # cli.main prints it as its one line, with its code
        message, exit_code = str(exc), exc.exit_code
    elif exc is None or isinstance(exc, SystemExit):
        message, exit_code = "", result.exit_code
    else:
        raise AssertionError(f"traceback: {exc!r}\n{result.output}")
    assert exit_code == code, f"exit {exit_code}, README says {code}\n{result.output}{message}"
    if code == ERROR:
        assert message.strip() and "\n" not in message.strip(), (message, result.output)
    else:
        assert (
            "Invalid value" in result.output
            or "No such" in result.output
            or ("Missing" in result.output or "Got unexpected" in result.output)
        ), result.output
