"""`loadtest find-peak`: the highest Server QPS that is VALID, within a time budget."""

from __future__ import annotations

import asyncio
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
from loadtest.engine import stopping, timing
from loadtest.engine.samples import open_with_samples
from loadtest.models import DEFAULT_SERVER_MODEL
from loadtest.report.peak_report import (
    PEAK_FILES,
    peak_json,
    probe_row,
    render_peak,
    write_peak,
)
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
    server_timeout: common.ServerTimeoutOption = None,
    embedded: common.EmbeddedOption = common.EmbeddedMode.AUTO,
    repository: common.RepositoryOption = common.DEFAULT_REPOSITORY,
    seed: Annotated[int, typer.Option(help="Schedule (arrival times) seed.")] = 0,
    sample_seed: common.SampleSeedOption = 1,
    samples: common.SamplesOption = 64,
    input_data: common.InputDataOption = None,
    shape: common.ShapeOption = None,
    output: common.OutputOption = None,
    force: common.ForceOption = False,
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
        server_timeout_s=server_timeout,
    )
    client = ClientSettings(workers=workers, loop=loop, ray_address=ray)
    stopping.reset()  # one command, one stop request
    common.check_outputs(output, None, force, PEAK_FILES)
    console = common.console
    try:
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
                    # A stop signal from here on ends the search after the probe it interrupts.
                    with stopping.catching(asyncio.get_running_loop()):
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
                                f"({settings.calibration_in_flight} in flight); probing below "
                                "1.1 × that"
                            ),
                        )
                    stopping.defer_signals()  # a signal now waits until find-peak.json is written
                    return spec, outcome
                finally:
                    await target.close()

            # Probes played here (one worker) use this loop; worker processes pick their own.
            parent_loop = LoopKind.PRECISE if loop is LoopKind.AUTO else loop
            spec, outcome = timing.run(measure(), parent_loop.value)
            environment = build_environment(target, deployment)
            resolved = deployment.target
            render_peak(console, settings, outcome)
            result = peak_json(settings, resolved, spec, environment, outcome)
            saved = write_peak(result, output, model, force)
            if saved.directory is not None:
                where = "rescued: " if saved.rescued else "results: "
                console.print(where + "  ".join(str(p) for p in saved.files), highlight=False)
    finally:
        stopping.install_process_handlers()
    if outcome.interrupted or stopping.requested():
        console.print(
            f"[yellow]partial result[/] ({outcome.stop_reason or stopping.requested()}): "
            "written above",
            highlight=False,
        )
        common.finish_saving(saved, "find-peak result")
        raise typer.Exit(stopping.exit_code())
    common.finish_saving(saved, "find-peak result")
    if outcome.conclusion.peak_qps is None:
        raise typer.Exit(3)
