"""`loadtest find-peak`: the highest Server QPS that is VALID, within a time budget."""

from __future__ import annotations

from typing import Annotated

import typer

from loadtest.commands import common
from loadtest.core.settings import (
    AUTO_WORKERS,
    LATE_THRESHOLD_NS,
    NS_PER_MS,
    NS_PER_S,
    ClientSettings,
    LoopKind,
    PeakSettings,
    Protocol,
)
from loadtest.core.target import ModelSpec
from loadtest.engine import timing
from loadtest.engine.samples import open_with_samples
from loadtest.models import DEFAULT_SERVER_MODEL
from loadtest.report.peak_report import peak_json, probe_row, render_peak, write_peak
from loadtest.report.results import build_environment
from loadtest.scenarios.peak_run import PeakOutcome, ProbeRun, search_peak
from loadtest.scenarios.play import Generator


def find_peak(
    model: common.ModelOption = DEFAULT_SERVER_MODEL,
    target_latency: Annotated[
        float | None,
        typer.Option(help="Latency bound in ms (default: the model's MLPerf Server bound)."),
    ] = None,
    percentile: Annotated[
        float, typer.Option(help="Latency percentile the bound applies to, in (0, 100).")
    ] = 99.0,
    budget: Annotated[float, typer.Option(help="Total time budget in seconds.")] = 180.0,
    probe_duration: Annotated[
        float, typer.Option(help="Minimum duration of each probe in seconds.")
    ] = 10.0,
    start_qps: Annotated[
        float, typer.Option(help="First rate to probe; 0 = calibrate from closed-loop throughput.")
    ] = 0.0,
    max_qps: Annotated[float, typer.Option(help="Never probe above this rate (0 = no cap).")] = 0.0,
    late_threshold: Annotated[
        float,
        typer.Option(help="A send later than this (ms) counts as late; see 'client kept up'."),
    ] = LATE_THRESHOLD_NS / NS_PER_MS,
    resolution: Annotated[
        float, typer.Option(help="Stop when the bracket is this narrow (fraction of its top).")
    ] = 0.05,
    url: common.UrlOption = None,
    protocol: common.ProtocolOption = Protocol.GRPC,
    model_version: common.VersionOption = "",
    timeout: common.TimeoutOption = 30.0,
    tls: common.TlsOption = False,
    ca_cert: common.CaCertOption = None,
    client_cert: common.ClientCertOption = None,
    client_key: common.ClientKeyOption = None,
    header: common.HeaderOption = None,
    embedded: common.EmbeddedOption = common.EmbeddedMode.AUTO,
    repository: common.RepositoryOption = common.DEFAULT_REPOSITORY,
    seed: Annotated[int, typer.Option(help="Schedule (arrival times) seed.")] = 0,
    sample_seed: common.SampleSeedOption = 1,
    samples: common.SamplesOption = 64,
    input_data: common.InputDataOption = None,
    shape: common.ShapeOption = None,
    output: common.OutputOption = None,
    workers: common.WorkersOption = AUTO_WORKERS,
    loop: common.LoopOption = LoopKind.AUTO,
    ray: common.RayOption = "",
) -> None:
    """Find the highest Server-scenario QPS whose run is VALID (latency bound, early stopping)."""
    settings = PeakSettings(
        target_latency_ns=common.target_latency_ns(model, target_latency),
        percentile=percentile / 100,
        probe_duration_ns=int(probe_duration * NS_PER_S),
        budget_ns=int(budget * NS_PER_S),
        start_qps=start_qps,
        max_qps=max_qps,
        resolution=resolution,
        late_threshold_ns=int(late_threshold * NS_PER_MS),
        schedule_seed=seed,
        sample_seed=sample_seed,
        sample_count=samples,
    )
    flags = common.TargetFlags(
        model,
        url,
        protocol,
        model_version,
        timeout,
        embedded,
        repository,
        input_data,
        common.parse_shapes(shape),
        access=common.access_flags(tls, ca_cert, client_cert, client_key, header),
    )
    client = ClientSettings(workers=workers, loop=loop, ray_address=ray)
    console = common.console
    with common.connected(flags) as (deployment, target):
        generator = Generator(client, deployment.target, flags.input_data, flags.shapes)
        common.say(
            f"find-peak against {target.description}: p{percentile:g} ≤ "
            f"{settings.target_latency_ns / NS_PER_MS:g} ms, budget {budget:g} s, probes ≥ "
            f"{probe_duration:g} s"
        )

        def show(run: ProbeRun) -> None:
            cells = probe_row(run, settings.percentile, settings.target_latency_ns)
            console.print("probe: " + " | ".join(cells), highlight=False)

        async def measure() -> tuple[ModelSpec, PeakOutcome]:
            try:
                spec, library = await open_with_samples(
                    target,
                    settings.sample_count,
                    settings.sample_seed,
                    flags.input_data,
                    flags.shapes,
                )
                outcome = await search_peak(
                    target,
                    spec,
                    len(library),
                    settings,
                    timeout,
                    on_probe=show,
                    generator=generator,
                    on_calibration=lambda qps: common.say(
                        f"calibration: {qps:,.1f} queries/s closed loop "
                        f"({settings.calibration_in_flight} in flight); probing below 1.1 × that"
                    ),
                )
                return spec, outcome
            finally:
                await target.close()

        # Probes played here (one worker) use this loop; worker processes pick their own.
        parent_loop = LoopKind.PRECISE if loop is LoopKind.AUTO else loop
        spec, outcome = timing.run(measure(), parent_loop.value)
        environment = build_environment(target, deployment)
        resolved = deployment.target
    render_peak(console, settings, outcome)
    path = write_peak(peak_json(settings, resolved, spec, environment, outcome), output, model)
    console.print(f"results: {path}")
    if outcome.interrupted:
        raise typer.Exit(130)
    if outcome.conclusion.peak_qps is None:
        raise typer.Exit(3)
