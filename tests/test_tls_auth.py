"""TLS, auth headers, and secrets that are never written (issue #12).

Real TLS endpoints made here with certificates made here (tests/tls_certs.py, openssl CLI): the
stub serving HTTPS and gRPC over TLS, and (marked `triton`) the embedded Triton serving gRPC over
TLS. Every address is loopback.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from test_cli import expected_exit_code
from tls_certs import Pair, make_ca, make_cert

from loadtest.core.secrets import Header, Secret, parse_header, redact_url
from loadtest.core.settings import Protocol, TargetSettings, TlsSettings
from loadtest.engine.samples import random_samples
from loadtest.errors import ExitCode, SettingsError, TargetError
from loadtest.observe.observer import observer_for_target
from loadtest.report.results import plain
from loadtest.server.deployment import EmbeddedMode, resolve
from loadtest.stub.process import Stub, running_stub
from loadtest.targets import target_for
from loadtest.targets.triton_grpc import TritonGrpcTarget
from loadtest.targets.triton_http import _outcome
from loadtest.targets.wrapper import TargetWrapper

PROTOCOLS = ["grpc", "http"]
TLS_SCHEME = {"grpc": "grpcs", "http": "https"}
TOKEN = "stub-token-4711"


def loadtest(*args: str, env: dict[str, str] | None = None, timeout: float = 180):
    return subprocess.run(
        [sys.executable, "-m", "loadtest.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "160", **(env or {})},
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error line, after checking it is the only thing on stderr and no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return " ".join(lines[lines.index(errors[0]) :])  # a long line may wrap


# -- certificates and servers ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Certs:
    ca: Pair
    other_ca: Pair
    server: Pair
    expired: Pair
    client: Pair


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    directory = tmp_path_factory.mktemp("certs")
    ca = make_ca(directory, "test-ca")
    return Certs(
        ca=ca,
        other_ca=make_ca(directory, "other-ca"),
        server=make_cert(directory, "server", ca),
        expired=make_cert(directory, "expired", ca, expired=True),
        client=make_cert(directory, "client", ca, client=True),
    )


@pytest.fixture(scope="module")
def tls_stub(certs: Certs) -> Iterator[Stub]:
    with running_stub(
        "--tls-cert", str(certs.server.cert), "--tls-key", str(certs.server.key)
    ) as s:
        yield s


@pytest.fixture(scope="module")
def expired_stub(certs: Certs) -> Iterator[Stub]:
    with running_stub(
        "--tls-cert", str(certs.expired.cert), "--tls-key", str(certs.expired.key)
    ) as s:
        yield s


@pytest.fixture(scope="module")
def token_stub() -> Iterator[Stub]:
    """Plaintext, and every request needs the token (read from the environment, not argv)."""
    with running_stub(
        "--require-token", "@env:STUB_TOKEN", env={**os.environ, "STUB_TOKEN": TOKEN}
    ) as s:
        yield s


def _port(stub: Stub, protocol: str) -> int:
    return stub.grpc_port if protocol == "grpc" else stub.http_port


def _settings(url: str, protocol: str, **kwargs) -> TargetSettings:
    return TargetSettings(url=url, protocol=Protocol(protocol), model="tiny", **kwargs)


async def _exercise(settings: TargetSettings, queries: int = 3) -> list[str | None]:
    """open, prepare (warm-up included), `queries` queries, close; the error kinds."""
    target = target_for(settings)
    try:
        spec = await target.open()
        await target.prepare(random_samples(spec, 2, seed=1))
        return [await target.infer(i % 2) for i in range(queries)]
    finally:
        await target.close()


# -- the Secret type, header syntax, URL redaction (no network) ----------------------------------


def test_a_secret_never_shows_itself_but_crosses_to_workers():
    secret = Secret("hunter2")
    shown = [str(secret), repr(secret), f"{secret}", f"{secret!r}", plain(secret)]
    shown.append(repr(Header("X-Key", secret)) + str(Header("X-Key", secret)))
    assert all("hunter2" not in text for text in shown) and "***" in shown[0]
    with pytest.raises(TypeError):
        json.dumps({"value": secret})  # refused, never guessed
    assert pickle.loads(pickle.dumps(secret)).reveal() == "hunter2"
    settings = _settings("127.0.0.1:1", "http", headers=(parse_header("X-Key:hunter2"),))
    assert "hunter2" not in repr(settings) + json.dumps(plain(settings))
    assert pickle.loads(pickle.dumps(settings)).headers[0].value.reveal() == "hunter2"


def test_header_values_from_the_command_line_the_environment_or_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LT_TOKEN", "Bearer from-env")
    token_file = tmp_path / "token"
    token_file.write_text("Bearer from-file\n")
    assert parse_header("X-Key: literal").value.reveal() == "literal"
    assert parse_header("Authorization:@env:LT_TOKEN").value.reveal() == "Bearer from-env"
    assert parse_header(f"Authorization:@file:{token_file}").value.reveal() == "Bearer from-file"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no-colon-s3cret", "NAME:VALUE"),
        ("Bad Name:s3cret", "not a valid header name"),
        ("Content-Length:s3cret", "sets this header itself"),
        ("grpc-timeout:s3cret", "sets this header itself"),
        ("X-Key:", "the value is empty"),
        ("X-Key:@env:LT_NOT_SET_ANYWHERE", "environment variable 'LT_NOT_SET_ANYWHERE' is not set"),
        ("X-Key:@file:/nonexistent/s3cret-file", "cannot read"),
    ],
)
def test_a_bad_header_is_one_line_that_never_holds_the_value(text, message):
    with pytest.raises(SettingsError, match=message) as error:
        parse_header(text)
    assert "s3cret" not in str(error.value).replace("s3cret-file", "")


def test_a_header_value_cannot_inject_a_line(tmp_path):
    injected = tmp_path / "injected"
    injected.write_text("ok\r\nX-Evil: 1\n")
    with pytest.raises(SettingsError, match="line break"):
        parse_header(f"X-Key:@file:{injected}")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pa55@host:8443/v2", "https://user:***@host:8443/v2"),
        ("user:pa55@host:8001", "user:***@host:8001"),
        ("grpcs://u:p%40ss@[::1]:8001", "grpcs://u:***@[::1]:8001"),
        ("https://host:8443", "https://host:8443"),
        ("127.0.0.1:8001", "127.0.0.1:8001"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_url_credentials_become_basic_auth_and_the_url_keeps_stars():
    settings = _settings("https://alice:pa55@127.0.0.1:8443", "http")
    assert settings.url == "https://alice:***@127.0.0.1:8443" and settings.tls == TlsSettings()
    (header,) = settings.headers
    expected = "Basic " + base64.b64encode(b"alice:pa55").decode()
    assert header.name == "Authorization" and header.value.reveal() == expected
    again = dataclasses.replace(settings, url=settings.url)  # rebuilt settings stay the same
    assert again.headers == settings.headers and again.url == settings.url


@pytest.mark.parametrize(
    ("url", "protocol", "kwargs", "message"),
    [
        ("http://h:8000", "grpc", {}, "does not fit --protocol grpc: use grpc:// or grpcs://"),
        ("https://h:8000", "grpc", {}, r"does not fit --protocol grpc.*--protocol http"),
        ("grpcs://h:8001", "http", {}, "does not fit --protocol http: use http:// or https://"),
        ("ftp://h:21", "http", {}, "does not fit --protocol http"),
        ("http://h:8000", "http", {"tls": TlsSettings()}, "plaintext but TLS was asked for"),
        ("grpc://h:8001", "grpc", {"tls": TlsSettings()}, "use grpcs://"),
        ("fake://", "grpc", {"tls": TlsSettings()}, "the fake target has no TLS"),
        ("https://bob@h", "http", {}, "names a user but no password"),
        ("https://bob:***@h", "http", {}, "mark a hidden one"),
        (
            "https://bob:pw@h",
            "http",
            {"headers": (parse_header("authorization:Bearer x"),)},
            "give one of them",
        ),
        (
            "h:1",
            "http",
            {"headers": (parse_header("X-A:1"), parse_header("x-a:2"))},
            "given twice",
        ),
    ],
)
def test_settings_refuse_what_would_downgrade_or_drop_silently(url, protocol, kwargs, message):
    with pytest.raises(SettingsError, match=message) as error:
        _settings(url, protocol, **kwargs)
    assert "pw" not in str(error.value)


def test_tls_flags_need_files_and_a_complete_client_pair(tmp_path):
    with pytest.raises(SettingsError, match="no such file"):
        TlsSettings(ca_cert=tmp_path / "missing.pem")
    (tmp_path / "c.pem").write_text("x")
    with pytest.raises(SettingsError, match="go together"):
        TlsSettings(client_cert=tmp_path / "c.pem")


def test_refused_credentials_are_their_own_error_kinds():
    assert _outcome(401, b'{"error":"no"}', None) == "unauthenticated"
    assert _outcome(403, b'{"error":"no"}', None) == "permission-denied"
    target = TritonGrpcTarget("127.0.0.1:1", "tiny")
    restricted = "This protocol is restricted, expecting header 'triton-grpc-protocol-k'"
    for code, details, kind in [
        (grpc.StatusCode.UNAUTHENTICATED, "no", "unauthenticated"),
        (grpc.StatusCode.PERMISSION_DENIED, "no", "permission-denied"),
        (grpc.StatusCode.UNAVAILABLE, restricted, "permission-denied"),  # Triton's own check
        (grpc.StatusCode.UNAVAILABLE, "Socket closed", "grpc UNAVAILABLE: Socket closed"),
    ]:
        error = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)
        assert target._kind(error) == kind


def test_the_embedded_triton_never_stands_in_for_a_tls_url():
    tls = _settings("grpcs://127.0.0.1:1", "grpc")
    repository = Path("model_repository")
    with (
        pytest.raises(SettingsError, match="serves plaintext only"),
        resolve(tls, EmbeddedMode.ALWAYS, repository, print),
    ):
        pass
    with (
        pytest.raises(TargetError, match="not started in its place"),
        resolve(tls, EmbeddedMode.AUTO, repository, print),
    ):
        pass


def test_statistics_reader_gets_tls_and_headers_through_a_wrapper(certs):
    settings = _settings(
        "grpcs://127.0.0.1:1",
        "grpc",
        tls=TlsSettings(ca_cert=certs.ca.cert),
        headers=(parse_header("X-Key:v"),),
    )
    observer = observer_for_target(TargetWrapper(target_for(settings)))
    assert observer is not None
    credentials = observer.statistics.credentials
    assert credentials.tls == settings.tls and credentials.headers == settings.headers


# -- TLS against the stub: both protocols -------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tls_to_the_stub_with_its_ca(tls_stub, certs, protocol):
    url = f"{TLS_SCHEME[protocol]}://127.0.0.1:{_port(tls_stub, protocol)}"
    settings = _settings(url, protocol, tls=TlsSettings(ca_cert=certs.ca.cert))
    assert asyncio.run(_exercise(settings)) == [None] * 3
    shown = {"grpc": "triton grpc (TLS) 127.0.0.1:", "http": "triton https 127.0.0.1:"}
    assert target_for(settings).description.startswith(shown[protocol])


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("wrong-ca", "not signed by a trusted CA"),
        ("system-roots", "not signed by a trusted CA"),
        ("expired", "certificate has expired"),
        ("plaintext-server", "does not speak TLS"),
        ("tls-server-plaintext-url", "the server speaks TLS"),
    ],
)
def test_tls_faults_are_one_clear_line(
    tls_stub, expired_stub, stub, certs, protocol, case, message
):
    server = {"expired": expired_stub, "plaintext-server": stub}.get(case, tls_stub)
    port = _port(server, protocol)
    tls: TlsSettings | None = TlsSettings(ca_cert=certs.ca.cert)
    scheme = TLS_SCHEME[protocol]
    if case == "wrong-ca":
        tls = TlsSettings(ca_cert=certs.other_ca.cert)
    elif case == "system-roots":
        tls = TlsSettings()
    elif case == "tls-server-plaintext-url":
        tls, scheme = None, protocol
    with pytest.raises(TargetError, match=message) as error:
        asyncio.run(_exercise(_settings(f"{scheme}://127.0.0.1:{port}", protocol, tls=tls)))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_mutual_tls_with_the_stub(certs, protocol):
    with running_stub(
        "--tls-cert", str(certs.server.cert), "--tls-key", str(certs.server.key),
        "--tls-client-ca", str(certs.ca.cert),
    ) as server:  # fmt: skip
        url = f"{TLS_SCHEME[protocol]}://localhost:{_port(server, protocol)}"
        without = _settings(url, protocol, tls=TlsSettings(ca_cert=certs.ca.cert))
        with pytest.raises(TargetError, match="client certificate") as error:
            asyncio.run(_exercise(without))
        assert "\n" not in str(error.value)
        tls = TlsSettings(certs.ca.cert, certs.client.cert, certs.client.key)
        assert asyncio.run(_exercise(_settings(url, protocol, tls=tls))) == [None] * 3


# -- auth headers against the stub: both protocols ----------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_bearer_header_or_url_credentials_pass_the_stubs_token_check(token_stub, protocol):
    port = _port(token_stub, protocol)
    bearer = (parse_header(f"Authorization:Bearer {TOKEN}"),)
    assert (
        asyncio.run(_exercise(_settings(f"127.0.0.1:{port}", protocol, headers=bearer)))
        == [None] * 3
    )
    basic = _settings(f"{protocol}://someone:{TOKEN}@127.0.0.1:{port}", protocol)
    assert asyncio.run(_exercise(basic)) == [None] * 3


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("token", [None, "not-the-token-9"])
def test_a_missing_or_wrong_token_stops_at_open_with_one_line(token_stub, protocol, token):
    headers = (parse_header(f"Authorization:Bearer {token}"),) if token else ()
    settings = _settings(f"127.0.0.1:{_port(token_stub, protocol)}", protocol, headers=headers)
    with pytest.raises(TargetError, match=r"refused the request \(.*unauthenticated\)") as error:
        asyncio.run(_exercise(settings))
    assert "\n" not in str(error.value) and "not-the-token-9" not in str(error.value)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_token_revoked_mid_run_is_counted_as_unauthenticated(protocol, monkeypatch):
    monkeypatch.setenv("STUB_TOKEN", TOKEN)
    monkeypatch.setenv("LT_AUTH", f"Bearer {TOKEN}")
    with running_stub("--require-token", "@env:STUB_TOKEN", "--token-expires-after", "20") as s:
        headers = (parse_header("Authorization:@env:LT_AUTH"),)
        settings = _settings(f"127.0.0.1:{_port(s, protocol)}", protocol, headers=headers)
        kinds = asyncio.run(_exercise(settings, queries=40))
    assert kinds[0] is None and set(kinds) == {None, "unauthenticated"}
    assert kinds[-1] == "unauthenticated"


def test_the_cli_counts_a_revoked_token_and_workers_send_the_headers(tmp_path):
    """`loadtest server` with 2 worker processes: each opens its own target from the settings
    (TLS-free here, token required), so a worker that lost the header would stop the run."""
    env = {"STUB_TOKEN": TOKEN, "LT_AUTH": f"Bearer {TOKEN}"}
    with running_stub(
        "--require-token", "@env:STUB_TOKEN", "--token-expires-after", "150",
        env={**os.environ, **env},
    ) as server:  # fmt: skip
        result = loadtest(
            "server", "--url", f"http://127.0.0.1:{server.http_port}", "--protocol", "http",
            "--embedded", "never", "--qps", "200", "--duration", "2", "--target-latency", "50",
            "--no-live", "--workers", "2", "--header", "Authorization:@env:LT_AUTH",
            "--output", str(tmp_path / "run"),
            env=env,
        )  # fmt: skip
    assert result.returncode == ExitCode.INVALID, result.stderr  # the revoked token's failures
    data = json.loads((tmp_path / "run" / "result.json").read_text())
    assert data["client"]["worker_count"] == 2
    errors = data["summary"]["errors_by_kind"]
    assert set(errors) == {"unauthenticated"} and errors["unauthenticated"] > 100
    assert data["verdict"]["valid"] is False
    assert "unauthenticated" in result.stdout
    assert data["target"]["headers"] == [{"name": "Authorization", "value": "***"}]


def test_a_scheme_that_does_not_fit_is_one_line_on_the_command_line():
    line = one_line_error(
        loadtest("server", "--url", "http://127.0.0.1:1", "--protocol", "grpc", "--no-live")
    )
    assert "does not fit --protocol grpc" in line


def test_an_expired_certificate_is_one_line_on_the_command_line(expired_stub, certs):
    result = loadtest(
        "single-stream", "--url", f"https://127.0.0.1:{expired_stub.http_port}",
        "--protocol", "http", "--ca-cert", str(certs.ca.cert), "--no-live", "--duration", "1",
    )  # fmt: skip
    assert "certificate has expired" in one_line_error(result)


# -- secrets are never written ------------------------------------------------------------------

URL_SECRET = "url-pa55-Zq8"
ENV_SECRET = "env-secret-Xv3"
LITERAL_SECRET = "literal-secret-Kw5"


def _secret_strings() -> list[str]:
    basic = base64.b64encode(f"tester:{URL_SECRET}".encode()).decode()
    return [URL_SECRET, ENV_SECRET, LITERAL_SECRET, basic]


def test_no_command_writes_or_prints_a_secret(tmp_path):
    """Every command that writes output runs with a secret URL password (the stub's token, so it
    must be sent) and two secret headers; then every file written and all console output are
    searched for the secrets."""
    env = {"LT_API_KEY": ENV_SECRET}
    out = tmp_path / "out"
    consoles: list[str] = []

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        result = loadtest(*args, env=env)
        consoles.append(result.stdout + result.stderr)
        assert result.returncode in (0, 3, 5), (args[0], result.stdout, result.stderr)
        return result

    stub_env = {**os.environ, "STUB_TOKEN": URL_SECRET}
    with running_stub("--require-token", "@env:STUB_TOKEN", env=stub_env) as server:
        url = f"http://tester:{URL_SECRET}@127.0.0.1:{server.http_port}"
        common = [
            "--url", url, "--protocol", "http", "--embedded", "never", "--model", "tiny",
            "--header", "X-Api-Key:@env:LT_API_KEY", "--header", f"X-Literal:{LITERAL_SECRET}",
        ]  # fmt: skip
        quick = ["--duration", "1", "--no-live"]
        run("server", *common, *quick, "--qps", "100", "--target-latency", "50", "--records",
            "--workers", "1", "--html", str(out / "server.html"),
            "--output", str(out / "server"))  # fmt: skip
        run("offline", *common, *quick, "--expected-qps", "100", "--output", str(out / "offline"))
        run("single-stream", *common, *quick, "--output", str(out / "single"))
        run("multi-stream", *common, *quick, "--samples-per-query", "2",
            "--output", str(out / "multi"))  # fmt: skip
        run("find-peak", *common, "--target-latency", "50", "--budget", "4",
            "--probe-duration", "1", "--start-qps", "50", "--max-qps", "100", "--workers", "1",
            "--output", str(out / "peak"))  # fmt: skip
        run("compare", "--target", "triton-http", "--http-url", url, "--embedded", "never",
            "--model", "tiny",
            "--header", "X-Api-Key:@env:LT_API_KEY", "--header", f"X-Literal:{LITERAL_SECRET}",
            "--qps", "50", "--duration", "1", "--target-latency", "50",
            "--metrics-url", f"http://tester:{URL_SECRET}@127.0.0.1:1/metrics",
            "--output", str(out / "compare"))  # fmt: skip
    run("report", str(out / "server" / "result.json"), str(out / "peak" / "find-peak.json"),
        str(out / "compare" / "compare.json"), "--output", str(out / "report.html"))  # fmt: skip
    run("export", str(out / "server" / "result.json"), "--csv", "--output", str(out / "csv"))

    written = sorted(p for p in out.rglob("*") if p.is_file())
    names = {p.name for p in written}
    assert {"result.json", "mlperf_log_summary.txt", "find-peak.json", "compare.json"} <= names
    assert {"server.html", "report.html", "records.csv", "summary.csv"} <= names
    for text, where in [*((p.read_text(errors="replace"), str(p)) for p in written),
                        *((c, "console") for c in consoles)]:  # fmt: skip
        for secret in _secret_strings():
            assert secret not in text, f"{secret!r} leaked into {where}"
    # What is written instead: the URL with ***, and each header's name with ***.
    result = json.loads((out / "server" / "result.json").read_text())
    assert result["target"]["url"] == "http://tester:***@127.0.0.1:" + url.rsplit(":", 1)[1]
    assert result["target"]["requested_url"] == result["target"]["url"]
    assert {h["name"]: h["value"] for h in result["target"]["headers"]} == {
        "X-Api-Key": "***",
        "X-Literal": "***",
        "Authorization": "***",
    }
    compare = json.loads((out / "compare" / "compare.json").read_text())
    assert "***" in compare["settings"]["urls"]["triton-http"]
    assert compare["settings"]["metrics_url"].startswith("http://tester:***@")


# -- the embedded Triton serving gRPC over TLS ---------------------------------------------------


@pytest.fixture(scope="module")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from loadtest.models import build_repository

    repository = tmp_path_factory.mktemp("tls_repository")
    build_repository(repository, ["tiny"])
    return repository


def _triton(repository: Path, cert: Pair, client_ca: Path | None = None):
    from loadtest.server.embedded import EmbeddedTriton, grpc_tls_args

    args = grpc_tls_args(cert.cert, cert.key, client_ca, mutual=client_ca is not None)
    return EmbeddedTriton(repository, models=["tiny"], extra_args=args)


@pytest.mark.triton
def test_triton_grpc_over_tls_end_to_end_with_statistics(tiny_repository, certs, tmp_path):
    """`loadtest server` against Triton's TLS gRPC port: queries, the warm-up and Triton's
    statistics (the server-side split) all go over TLS; its plaintext HTTP port behind an
    https URL and a wrong CA are one line each."""
    with _triton(tiny_repository, certs.server) as triton:
        result = loadtest(
            "server", "--url", f"grpcs://{triton.grpc_url}", "--ca-cert", str(certs.ca.cert),
            "--embedded", "never", "--qps", "50", "--duration", "2", "--target-latency", "200",
            "--no-live", "--workers", "1", "--output", str(tmp_path / "run"),
        )  # fmt: skip
        data = json.loads((tmp_path / "run" / "result.json").read_text())
        assert result.returncode == expected_exit_code(data), result.stderr
        assert data["summary"]["errors"] == 0 and data["target"]["tls"]["ca_cert"]
        split = data["server_side"]["split"]
        assert split is not None and split["requests"] == data["summary"]["completed_ok"]
        wrong_ca = loadtest(
            "single-stream", "--url", f"grpcs://{triton.grpc_url}", "--ca-cert",
            str(certs.other_ca.cert), "--embedded", "never", "--no-live", "--duration", "1",
        )  # fmt: skip
        assert "not signed by a trusted CA" in one_line_error(wrong_ca)
        plaintext = loadtest(
            "single-stream", "--url", f"https://{triton.http_url}", "--protocol", "http",
            "--ca-cert", str(certs.ca.cert), "--embedded", "never", "--no-live",
        )  # fmt: skip
        assert "TLS handshake" in one_line_error(plaintext)
        downgrade = loadtest(
            "single-stream", "--url", f"grpc://{triton.grpc_url}", "--embedded", "never",
            "--no-live", "--duration", "1",
        )  # fmt: skip
        assert "the server speaks TLS" in one_line_error(downgrade)


@pytest.mark.triton
def test_triton_with_an_expired_certificate_is_one_line(tiny_repository, certs):
    with _triton(tiny_repository, certs.expired) as triton:
        settings = _settings(
            f"grpcs://{triton.grpc_url}", "grpc", tls=TlsSettings(ca_cert=certs.ca.cert)
        )
        with pytest.raises(TargetError, match="certificate has expired"):
            asyncio.run(_exercise(settings))


@pytest.mark.triton
def test_triton_mutual_tls(tiny_repository, certs):
    with _triton(tiny_repository, certs.server, client_ca=certs.ca.cert) as triton:
        url = f"grpcs://localhost:{triton.grpc_url.rsplit(':', 1)[1]}"
        with pytest.raises(TargetError, match="client certificate"):
            asyncio.run(_exercise(_settings(url, "grpc", tls=TlsSettings(certs.ca.cert))))
        tls = TlsSettings(certs.ca.cert, certs.client.cert, certs.client.key)
        assert asyncio.run(_exercise(_settings(url, "grpc", tls=tls))) == [None] * 3


@pytest.mark.triton
def test_triton_restricted_apis_get_the_headers_on_every_call(tiny_repository, tmp_path):
    """Triton's own header check (restricted APIs): queries, metadata, config and statistics
    all need the key, so a run with a server-side split proves every client sent it; without
    it, the first call stops the run in one line (HTTP 403 / gRPC UNAVAILABLE 'restricted'
    are both `permission-denied`)."""
    from loadtest.server.embedded import EmbeddedTriton

    apis = "inference,statistics,metadata,model-config:x-lt-key=k1"
    args = [f"--grpc-restricted-protocol={apis}", f"--http-restricted-api={apis}"]
    with EmbeddedTriton(tiny_repository, models=["tiny"], extra_args=args) as triton:
        # gRPC metadata carries Triton's prefix for restricted-protocol keys.
        for protocol, url, name in [
            ("grpc", triton.grpc_url, "triton-grpc-protocol-x-lt-key"),
            ("http", triton.http_url, "x-lt-key"),
        ]:
            common = ["--url", url, "--protocol", protocol, "--embedded", "never", "--no-live"]
            out = tmp_path / protocol
            result = loadtest(
                "server", *common, "--header", f"{name}:@env:LT_KEY", "--qps", "50",
                "--duration", "1", "--target-latency", "200", "--workers", "1",
                "--output", str(out),
                env={"LT_KEY": "k1"},
            )  # fmt: skip
            data = json.loads((out / "result.json").read_text())
            assert result.returncode == expected_exit_code(data), result.stderr
            assert data["summary"]["errors"] == 0
            assert data["server_side"]["split"]["requests"] == data["summary"]["completed_ok"]
            refused = loadtest("single-stream", *common, "--duration", "1")
            assert "permission-denied" in one_line_error(refused)
