"""`loadtest find-peak`: the highest Server QPS that is VALID, within a time budget."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from loadtest.commands import common, options
from loadtest.commands.options import finite_float
from loadtest.core.settings import (
    AUTO_WORKERS,
    NS_PER_MS,
    NS_PER_S,
    ClientSettings,
    LoopKind,
    PeakSettings,
    Protocol,
    TargetSettings,
)
from loadtest.core.target import ModelSpec, Target
from loadtest.engine import stopping, timing
from loadtest.engine.samples import open_with_samples
from loadtest.errors import ExitCode
from loadtest.models import DEFAULT_SERVER_MODEL
from loadtest.report.peak_report import (
    PEAK_FILES,
    peak_json,
    probe_row,
    render_peak,
    write_peak,
)
from loadtest.report.progress import BudgetProgress
from loadtest.report.results import build_environment
from loadtest.scenarios.mlperf.play import Generator
from loadtest.scenarios.searches.peak_run import PeakOutcome, ProbeRun, search_peak
from loadtest.server.deployment import EmbeddedMode


def find_peak(
    model: options.ModelOption = DEFAULT_SERVER_MODEL,
    target_latency: options.TargetLatencyOption = None,
    percentile: options.PercentileOption = options.PERCENTILE,
    budget: Annotated[
        float, typer.Option(parser=finite_float, help="Total time budget in seconds.")
    ] = 180.0,
    probe_duration: Annotated[
        float, typer.Option(parser=finite_float, help="Minimum duration of each probe in seconds.")
    ] = 10.0,
    start_qps: Annotated[
        float,
        typer.Option(
            parser=finite_float,
            help="First rate to probe; 0 = calibrate from closed-loop throughput.",
        ),
    ] = 0.0,
    max_qps: Annotated[
        float, typer.Option(parser=finite_float, help="Never probe above this rate (0 = no cap).")
    ] = 0.0,
    late_threshold: options.LateThresholdOption = options.LATE_THRESHOLD_MS,
    resolution: Annotated[
        float,
        typer.Option(
            parser=finite_float, help="Stop when the bracket is this narrow (fraction of its top)."
        ),
    ] = 0.05,
    url: options.UrlOption = None,
    protocol: options.ProtocolOption = Protocol.GRPC,
    model_version: options.VersionOption = "",
    timeout: options.TimeoutOption = options.TIMEOUT_S,
    server_timeout: options.ServerTimeoutOption = None,
    embedded: options.EmbeddedOption = EmbeddedMode.AUTO,
    repository: options.RepositoryOption = options.REPOSITORY,
    seed: options.SeedOption = 0,
    sample_seed: options.SampleSeedOption = options.SAMPLE_SEED,
    samples: options.SamplesOption = options.SAMPLES,
    input_data: options.InputDataOption = None,
    shape: options.ShapeOption = None,
    output: options.OutputOption = None,
    force: options.ForceOption = False,
    workers: options.WorkersOption = AUTO_WORKERS,
    loop: options.LoopOption = LoopKind.AUTO,
    ray: options.RayOption = "",
    tls: options.TlsOption = False,
    ca_cert: options.CaCertOption = None,
    client_cert: options.ClientCertOption = None,
    client_key: options.ClientKeyOption = None,
    header: options.HeaderOption = None,
    live: options.LiveOption = True,
    mix: Annotated[
        Path | None,
        typer.Option(
            "--mix",
            help="MIX.toml: scale every entry's rate together (weights fixed) until the first "
            "entry breaks its own bound; the peak is the mix's total QPS (--model and "
            "--target-latency are then the file's).",
        ),
    ] = None,
) -> None:
    """Find the highest Server-scenario QPS whose run is VALID (latency bound, early stopping)."""
    if mix is not None:
        from loadtest.commands.mix_peak import from_find_peak

        access = common.access_flags(tls, ca_cert, client_cert, client_key, header)
        from_find_peak(mix, locals(), access)
        return
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
        model=model,
        url=url,
        protocol=protocol,
        model_version=model_version,
        timeout_s=timeout,
        embedded=embedded,
        repository=repository,
        input_data=input_data,
        shapes=common.parse_shapes(shape),
        access=common.access_flags(tls, ca_cert, client_cert, client_key, header),
        server_timeout_s=server_timeout,
    )
    client = ClientSettings(workers=workers, loop=loop, ray_address=ray)
    stopping.reset()  # one command, one stop request
    common.check_outputs(output, None, force, PEAK_FILES)
    console = common.console
    try:
        spec, outcome, environment, resolved = _search(flags, settings, client, live)
        render_peak(console, settings, outcome)
        result = peak_json(settings, resolved, spec, environment, outcome)
        saved = write_peak(result, output, model, force)
        common.say_saved(saved)
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
        raise typer.Exit(ExitCode.INVALID)


def _search(
    flags: common.TargetFlags, settings: PeakSettings, client: ClientSettings, live: bool
) -> tuple[ModelSpec, PeakOutcome, dict[str, Any], TargetSettings]:
    """The search against the deployment: (model, outcome, environment, resolved target)."""
    with common.connected(flags) as (deployment, target):
        generator = Generator(client, deployment.target, flags.input_data, flags.shapes)
        common.say(
            f"find-peak against {target.description}: p{settings.percentile * 100:g} ≤ "
            f"{settings.target_latency_ns / NS_PER_MS:g} ms, budget "
            f"{settings.budget_ns / NS_PER_S:g} s, probes ≥ "
            f"{settings.probe_duration_ns / NS_PER_S:g} s"
        )
        # Probes played here (one worker) use this loop; worker processes pick their own.
        parent_loop = LoopKind.PRECISE if client.loop is LoopKind.AUTO else client.loop
        spec, outcome = timing.run(
            _measure(target, generator, settings, flags, live), parent_loop.value
        )
        return spec, outcome, build_environment(target, deployment), deployment.target


async def _measure(
    target: Target,
    generator: Generator,
    settings: PeakSettings,
    flags: common.TargetFlags,
    live: bool,
) -> tuple[ModelSpec, PeakOutcome]:
    percentile = f"p{settings.percentile * 100:g}"
    view = BudgetProgress(
        common.console,
        settings.budget_ns / NS_PER_S,
        f"find-peak against {target.description}",
        enabled=live,
    )

    def show(run: ProbeRun) -> None:
        cells = probe_row(run, settings.percentile, settings.target_latency_ns)
        common.console.print("probe: " + " | ".join(cells), highlight=False)
        probe = run.probe
        if probe.valid and not probe.client_bound:
            label = f"VALID at {probe.qps:,.1f} QPS ({percentile} {probe.latency_ns / 1e6:.2f} ms)"
            view.probe_done(probe.qps, label)
        else:
            view.probe_done()

    try:
        spec, library = await open_with_samples(
            target, settings.sample_count, settings.sample_seed, flags.input_data, flags.shapes
        )
        # A stop signal from here on ends the search after the probe it interrupts.
        with view, stopping.catching(asyncio.get_running_loop()):
            outcome = await search_peak(
                target,
                spec,
                len(library),
                settings,
                flags.timeout_s,
                on_probe=show,
                generator=generator,
                on_calibration=lambda qps: common.say(
                    f"calibration: {qps:,.1f} queries/s closed loop "
                    f"({settings.calibration_in_flight} in flight); probing below 1.1 × that"
                ),
                on_stage=view.stage,
                on_tick=view.tick,
            )
        stopping.defer_signals()  # a signal now waits until find-peak.json is written
        return spec, outcome
    finally:
        await target.close()
