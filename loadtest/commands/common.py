"""What every scenario command shares: the target/deployment flags and the run-report-write flow.

A scenario command builds its own validated settings, then hands `execute` a `play` coroutine;
`execute` finds or starts the server, builds the sample library, shows the live view, interprets,
renders, writes result.json + mlperf_log_summary.txt, and turns Ctrl-C into a partial result and
exit code 130.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from loadtest.commands.report import write_run_html
from loadtest.core.records import Records
from loadtest.core.secrets import Header, parse_header
from loadtest.core.settings import (
    NS_PER_MS,
    NS_PER_S,
    LoopKind,
    Protocol,
    ScenarioSettings,
    SharedMemoryKind,
    TargetSettings,
    TlsSettings,
)
from loadtest.core.target import ModelSpec, Target
from loadtest.engine import timing
from loadtest.engine.measurement import Measurement
from loadtest.engine.samples import open_with_samples
from loadtest.engine.selfmeasure import Progress
from loadtest.errors import SettingsError
from loadtest.models import SUITE
from loadtest.observe.probe import RunObserver
from loadtest.report.compare_report import split_table
from loadtest.report.live import LiveView
from loadtest.report.results import RunReport, build_environment, write_outputs
from loadtest.report.terminal import render_report
from loadtest.server import deployment as deployment_module
from loadtest.server.deployment import Deployment, EmbeddedMode
from loadtest.targets import target_for
from loadtest.targets.shared_memory import with_shared_memory

console = Console()
notes = Console(stderr=True)

# --- flags every scenario command takes -------------------------------------------------------
ModelOption = Annotated[str, typer.Option("--model", "-m", help="Model to load test.")]
UrlOption = Annotated[
    str | None,
    typer.Option(
        help="Triton address (default 127.0.0.1:8001 for gRPC, :8000 for HTTP); https:// or "
        "grpcs:// for TLS; user:password@ for Basic auth (the password is never written)."
    ),
]
ProtocolOption = Annotated[Protocol, typer.Option(help="Wire protocol.")]
VersionOption = Annotated[str, typer.Option(help="Model version ('' = latest).")]
TimeoutOption = Annotated[float, typer.Option(help="Per-request timeout in seconds.")]
EmbeddedOption = Annotated[
    EmbeddedMode,
    typer.Option(help="Start the embedded Triton: auto = when nothing answers at a loopback URL."),
]
RepositoryOption = Annotated[Path, typer.Option(help="Model repository for the embedded Triton.")]
SampleSeedOption = Annotated[int, typer.Option(help="Sample order and random-input seed.")]
SamplesOption = Annotated[int, typer.Option(help="Size of the in-memory sample library.")]
InputDataOption = Annotated[
    Path | None, typer.Option(help=".npz of real inputs: one array per input, axis 0 = sample.")
]
ShapeOption = Annotated[
    list[str] | None, typer.Option(help="Concrete shape for a dynamic input: NAME:D1,D2,...")
]
OutputOption = Annotated[
    Path | None, typer.Option(help="Directory for result.json and mlperf_log_summary.txt.")
]
RecordsOption = Annotated[bool, typer.Option(help="Store per-query records in result.json.")]
LiveOption = Annotated[bool, typer.Option(help="Live view while running (terminals only).")]
DurationOption = Annotated[
    float | None,
    typer.Option(help="Minimum duration in seconds [default: 60; 600 with --mlperf]."),
]
MaxDurationOption = Annotated[
    float, typer.Option(help="Stop issuing after this many seconds (0 = no cap).")
]
MinQueriesOption = Annotated[int, typer.Option(help="Minimum number of queries.")]
MlperfOption = Annotated[bool, typer.Option("--mlperf", help="Official minimums: 600 s duration.")]
WorkersOption = Annotated[
    int,
    typer.Option(
        help="Generator processes; 0 = automatic from the rate (at most one per CPU core).",
    ),
]
LoopOption = Annotated[
    LoopKind, typer.Option(help="Event loop of each generator process (precise: µs timers).")
]
RayOption = Annotated[
    str,
    typer.Option(
        "--ray",
        help="Place the workers on Ray actors of the cluster at this address (needs the ray "
        "extra); e.g. ray://head:10001 or auto.",
    ),
]
SharedMemoryOption = Annotated[
    SharedMemoryKind,
    typer.Option(help="Pass tensors through Triton shared memory (same host only)."),
]
DEFAULT_REPOSITORY = Path("model_repository")

# --- TLS and request headers (issue #12): every command that talks to a server ---------------
# Declared together; `access_flags` turns them into AccessFlags, which TargetFlags (and compare)
# hand to TargetSettings: the one place they enter the settings.
TlsOption = Annotated[
    bool,
    typer.Option(
        "--tls",
        help="TLS for a bare host:port --url (https:// and grpcs:// URLs select it themselves).",
    ),
]
CaCertOption = Annotated[
    Path | None,
    typer.Option(help="PEM CA certificate(s) to verify the server with [default: system roots]."),
]
ClientCertOption = Annotated[
    Path | None, typer.Option(help="PEM client certificate, for mutual TLS (with --client-key).")
]
ClientKeyOption = Annotated[
    Path | None, typer.Option(help="PEM private key of --client-cert (mutual TLS).")
]
HeaderOption = Annotated[
    list[str] | None,
    typer.Option(
        "--header",
        "-H",
        help="NAME:VALUE sent with every request (HTTP header, gRPC metadata); repeatable. "
        "NAME:@env:VAR or NAME:@file:PATH reads the value from there (out of shell history "
        "and ps). Values are never written: reports show ***.",
    ),
]


@dataclass(frozen=True)
class AccessFlags:
    """--tls, --ca-cert, --client-cert, --client-key and --header, parsed once."""

    tls: TlsSettings | None = None
    headers: tuple[Header, ...] = ()


def access_flags(
    tls: bool = False,
    ca_cert: Path | None = None,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    header: list[str] | None = None,
) -> AccessFlags:
    """Any TLS flag turns TLS on (a CA file or client certificate states the intent); the URL's
    scheme must then agree (TargetSettings refuses http:// or grpc:// with TLS)."""
    wants_tls = tls or any(p is not None for p in (ca_cert, client_cert, client_key))
    return AccessFlags(
        tls=TlsSettings(ca_cert, client_cert, client_key) if wants_tls else None,
        headers=tuple(parse_header(text) for text in header or []),
    )


@dataclass(frozen=True)
class TargetFlags:
    """The target-side flags, gathered once per command."""

    model: str
    url: str | None
    protocol: Protocol
    model_version: str
    timeout_s: float
    embedded: EmbeddedMode
    repository: Path
    input_data: Path | None
    shapes: dict[str, tuple[int, ...]]
    shared_memory: SharedMemoryKind = SharedMemoryKind.NONE
    access: AccessFlags = AccessFlags()

    def target_settings(self) -> TargetSettings:
        default_url = f"127.0.0.1:{deployment_module.default_port(self.protocol)}"
        return TargetSettings(
            url=self.url or default_url,
            protocol=self.protocol,
            model=self.model,
            model_version=self.model_version,
            request_timeout_s=self.timeout_s,
            tls=self.access.tls,
            headers=self.access.headers,
        )


def parse_shapes(values: list[str] | None) -> dict[str, tuple[int, ...]]:
    """'name:1,384' -> {'name': (1, 384)}."""
    shapes: dict[str, tuple[int, ...]] = {}
    for value in values or []:
        name, _, dims = value.partition(":")
        try:
            shapes[name] = tuple(int(d) for d in dims.split(","))
        except ValueError:
            raise SettingsError(f"--shape {value!r} is not NAME:D1,D2,...") from None
        if not name or not shapes[name]:
            raise SettingsError(f"--shape {value!r} is not NAME:D1,D2,...")
    return shapes


def min_duration_ns(duration_s: float | None, mlperf: bool, default_ns: int) -> int:
    """--duration, or the default; --mlperf raises the default to 600 s and refuses less."""
    official = 600 * NS_PER_S
    if duration_s is None:
        return official if mlperf else default_ns
    if mlperf and duration_s * NS_PER_S < official:
        raise SettingsError(f"--mlperf needs --duration ≥ 600 s, got {duration_s:g}")
    if duration_s <= 0:
        raise SettingsError(f"--duration must be > 0 s, got {duration_s:g}")
    return int(duration_s * NS_PER_S)


def max_duration_ns(max_duration_s: float) -> int:
    if max_duration_s < 0:
        raise SettingsError(f"--max-duration must be ≥ 0 s, got {max_duration_s:g}")
    return int(max_duration_s * NS_PER_S)


def target_latency_ns(model: str, given_ms: float | None) -> int:
    """--target-latency, else the suite model's MLPerf Server bound."""
    if given_ms is not None:
        if given_ms <= 0:
            raise SettingsError(f"--target-latency must be > 0 ms, got {given_ms:g}")
        return int(given_ms * NS_PER_MS)
    if model in SUITE:
        return SUITE[model].target_latency_ns
    raise SettingsError(
        f"model {model!r} is not in the benchmark suite, so it has no MLPerf target latency: "
        "pass --target-latency MS"
    )


def say(text: str) -> None:
    notes.print(f"[dim]{text}[/]", highlight=False)


# play(target, model, library size, live-view tick, the resolved target settings)
Play = Callable[
    [Target, ModelSpec, int, Callable[[Records | Progress, int], None], TargetSettings],
    Coroutine[Any, Any, Measurement],
]


@contextlib.contextmanager
def connected(flags: TargetFlags) -> Iterator[tuple[Deployment, Target]]:
    """The deployment to measure (the embedded Triton started if needed) and a target for it."""
    requested = flags.target_settings()
    with deployment_module.resolve(requested, flags.embedded, flags.repository, say) as deployment:
        target = target_for(deployment.target)
        yield deployment, with_shared_memory(target, flags.shared_memory, tag="main")


def execute(
    settings: ScenarioSettings,
    flags: TargetFlags,
    title: str,
    span_ns: int,
    play: Play,
    output: Path | None,
    live: bool,
    sample_count: int,
    sample_seed: int,
    batch_size: int = 1,
    loop: LoopKind = LoopKind.PRECISE,
    html: Path | None = None,
) -> RunReport:
    """Find or start the server, run `play`, then report and write; see the module docstring.

    The server side (Triton's statistics split, server CPU, :8002 metrics) is observed around the
    run when the target is a Triton, so the one RunReport built afterwards holds all of it.
    """
    requested = flags.target_settings()
    observer = RunObserver()
    with connected(flags) as (deployment, target):
        resolved = deployment.target
        heading = f"{title} against {target.description}"

        async def measure() -> Measurement:
            try:
                spec, library = await open_with_samples(
                    target, sample_count, sample_seed, flags.input_data, flags.shapes, batch_size
                )
                view = LiveView(console, span_ns, heading, enabled=live)
                with view:
                    run = play(target, spec, len(library), view.tick, resolved)
                    return await observer.around(target, run)
            finally:
                await target.close()

        if not live or not console.is_terminal:
            say(heading)
        measurement = timing.run(measure(), loop.value)
        environment = build_environment(target, deployment)
    report = RunReport.from_measurement(
        settings, requested, resolved, measurement, environment, observer.result
    )
    render_report(console, report)
    if report.server_side is not None:
        console.print(split_table([(report.target.model, report.server_side)]))
    out_dir = write_outputs(report, output)
    console.print(f"results: {out_dir / 'result.json'}  {out_dir / 'mlperf_log_summary.txt'}")
    if html is not None:
        write_run_html(report.to_json(), html, label=output.name if output else "run")
    if measurement.outcome.interrupted:
        console.print(
            f"[yellow]partial result[/] ({measurement.outcome.stop_reason}): written above"
        )
        raise typer.Exit(130)
    if deployment.embedded is not None:
        console.print(
            "[dim]This measured the embedded Triton on this machine. To measure a real deployment: "
            "docker compose up (see README), then add --url HOST:8001 --embedded never[/]",
            highlight=False,
        )
    return report
