"""`loadtest server`: the MLPerf Server scenario (seeded Poisson arrivals, open loop) end to end."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from loadtest import deployment as deployment_module
from loadtest.errors import SettingsError
from loadtest.experiment import Measurement, open_with_samples, run_server
from loadtest.models import DEFAULT_SERVER_MODEL, DEFAULT_SERVER_QPS, SUITE
from loadtest.report.live import LiveView
from loadtest.report.results import ServerReport, build_environment, write_server_outputs
from loadtest.report.terminal import render_server_report
from loadtest.settings import (
    DEFAULT_MIN_DURATION_NS,
    LATE_THRESHOLD_NS,
    MLPERF_MIN_DURATION_NS,
    NS_PER_MS,
    NS_PER_S,
    Protocol,
    ServerSettings,
    TargetSettings,
)
from loadtest.targets import triton_target

console = Console()
notes = Console(stderr=True)


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


def target_latency_ns(model: str, given_ms: float | None) -> int:
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


def server(
    model: Annotated[str, typer.Option("--model", "-m", help="Model to load test.")] = (
        DEFAULT_SERVER_MODEL
    ),
    qps: Annotated[float, typer.Option(help="Scheduled Poisson arrival rate (queries/s).")] = (
        DEFAULT_SERVER_QPS
    ),
    duration: Annotated[
        float | None,
        typer.Option(help="Minimum duration in seconds [default: 60; 600 with --mlperf]."),
    ] = None,
    min_queries: Annotated[int, typer.Option(help="Minimum number of queries.")] = 100,
    max_duration: Annotated[
        float, typer.Option(help="Stop issuing after this many seconds (0 = no cap).")
    ] = 0.0,
    target_latency: Annotated[
        float | None,
        typer.Option(help="Latency bound in ms (default: the model's MLPerf Server bound)."),
    ] = None,
    percentile: Annotated[
        float, typer.Option(help="Latency percentile the bound applies to, in (0, 100).")
    ] = 99.0,
    late_threshold: Annotated[
        float,
        typer.Option(help="A send later than this (ms) counts as late; see 'client kept up'."),
    ] = LATE_THRESHOLD_NS / NS_PER_MS,
    mlperf: Annotated[
        bool, typer.Option("--mlperf", help="Official minimums: 600 s duration.")
    ] = False,
    url: Annotated[
        str | None,
        typer.Option(help="Triton address (default 127.0.0.1:8001 for gRPC, :8000 for HTTP)."),
    ] = None,
    protocol: Annotated[Protocol, typer.Option(help="Wire protocol.")] = Protocol.GRPC,
    model_version: Annotated[str, typer.Option(help="Model version ('' = latest).")] = "",
    timeout: Annotated[float, typer.Option(help="Per-request timeout in seconds.")] = 30.0,
    embedded: Annotated[
        deployment_module.EmbeddedMode,
        typer.Option(
            help="Start the embedded Triton: auto = when nothing answers at a loopback URL."
        ),
    ] = deployment_module.EmbeddedMode.AUTO,
    repository: Annotated[
        Path, typer.Option(help="Model repository for the embedded Triton.")
    ] = Path("model_repository"),
    seed: Annotated[int, typer.Option(help="Schedule (arrival times) seed.")] = 0,
    sample_seed: Annotated[int, typer.Option(help="Sample order and random-input seed.")] = 1,
    samples: Annotated[int, typer.Option(help="Size of the in-memory sample library.")] = 64,
    input_data: Annotated[
        Path | None, typer.Option(help=".npz of real inputs: one array per input, axis 0 = sample.")
    ] = None,
    shape: Annotated[
        list[str] | None, typer.Option(help="Concrete shape for a dynamic input: NAME:D1,D2,...")
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Directory for result.json and mlperf_log_summary.txt.")
    ] = None,
    records: Annotated[bool, typer.Option(help="Store per-query records in result.json.")] = False,
    live: Annotated[bool, typer.Option(help="Live view while running (terminals only).")] = True,
) -> None:
    """Run the MLPerf Server scenario: Poisson arrivals at --qps, latency from scheduled time."""
    min_duration_ns = MLPERF_MIN_DURATION_NS if mlperf else DEFAULT_MIN_DURATION_NS
    if duration is not None:
        if mlperf and duration * NS_PER_S < MLPERF_MIN_DURATION_NS:
            raise SettingsError(f"--mlperf needs --duration ≥ 600 s, got {duration:g}")
        min_duration_ns = int(duration * NS_PER_S)
    if max_duration < 0:
        raise SettingsError(f"--max-duration must be ≥ 0 s, got {max_duration:g}")
    settings = ServerSettings(
        qps=qps,
        target_latency_ns=target_latency_ns(model, target_latency),
        percentile=percentile / 100,
        min_duration_ns=min_duration_ns,
        min_query_count=min_queries,
        max_duration_ns=int(max_duration * NS_PER_S),
        schedule_seed=seed,
        sample_seed=sample_seed,
        sample_count=samples,
        keep_records=records,
        late_threshold_ns=int(late_threshold * NS_PER_MS),
    )
    default_url = f"127.0.0.1:{deployment_module.default_port(protocol)}"
    target_settings = TargetSettings(
        url=url or default_url,
        protocol=protocol,
        model=model,
        model_version=model_version,
        request_timeout_s=timeout,
    )
    shapes = parse_shapes(shape)

    def say(text: str) -> None:
        notes.print(f"[dim]{text}[/]", highlight=False)

    with deployment_module.resolve(target_settings, embedded, repository, say) as deployment:
        resolved = deployment.target
        target = triton_target(
            resolved.url, resolved.protocol.value, resolved.model, resolved.model_version, timeout
        )
        title = (
            f"Server scenario: {settings.qps:g} QPS Poisson for ≥ "
            f"{settings.min_duration_ns / NS_PER_S:g} s "
            f"against {target.description}"
        )

        async def measure() -> Measurement:
            try:
                spec, library = await open_with_samples(
                    target, settings.sample_count, settings.sample_seed, input_data, shapes
                )
                view = LiveView(console, settings.min_duration_ns, title, enabled=live)
                with view:
                    measurement = await run_server(
                        target,
                        spec,
                        len(library),
                        settings,
                        drain_timeout_ns=int((timeout + 5) * NS_PER_S),
                        on_tick=view.tick,
                    )
                return measurement
            finally:
                await target.close()

        if not live or not console.is_terminal:
            say(title)
        measurement = asyncio.run(measure())
        environment = build_environment(target, deployment)
    report = ServerReport.from_measurement(
        settings, target_settings, resolved, measurement, environment
    )
    render_server_report(console, report)
    out_dir = write_server_outputs(report, output)
    console.print(f"results: {out_dir / 'result.json'}  {out_dir / 'mlperf_log_summary.txt'}")
    if measurement.outcome.interrupted:
        console.print(
            f"[yellow]partial result[/] ({measurement.outcome.stop_reason}): written above"
        )
        raise typer.Exit(130)
    if deployment.embedded is not None:
        console.print(
            "[dim]This measured the embedded Triton on this machine. To measure a real deployment: "
            "docker compose up (see README), then loadtest server --url HOST:8001 --model NAME "
            "--qps N --embedded never[/]",
            highlight=False,
        )
