"""`loadtest find-peak`: the highest Server QPS that is VALID, within a time budget; or, with
--slo and --goodput-target, the highest at which goodput holds (scenarios/searches/peak_run.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from loadtest.commands import common, options
from loadtest.commands import flag_groups as groups
from loadtest.commands.options import finite_float
from loadtest.core.settings import (
    NS_PER_MS,
    NS_PER_S,
    ClientSettings,
    LoopKind,
    PeakSettings,
    TargetSettings,
)
from loadtest.core.slos import Slo, check_measurable, parse_slos
from loadtest.core.target import ModelSpec, Target
from loadtest.engine import stopping, timing
from loadtest.engine.samples import open_with_samples
from loadtest.errors import ExitCode, SettingsError
from loadtest.models import DEFAULT_SERVER_MODEL
from loadtest.report.peak_report import (
    PEAK_FILES,
    passed_label,
    peak_json,
    probe_lines,
    render_peak,
    write_peak,
)
from loadtest.report.progress import BudgetProgress
from loadtest.report.results import build_environment
from loadtest.scenarios.mlperf.play import Generator
from loadtest.scenarios.searches.peak_run import PeakOutcome, ProbeRun, search_peak


@groups.takes_groups
def find_peak(
    *,
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
    endpoint: groups.Endpoint,
    seed: options.SeedOption = 0,
    samples: groups.SampleLibrary,
    output: Annotated[groups.Output, groups.take("records", "live", "html")],
    client: Annotated[groups.Client, groups.take("shared_memory")],
    access: groups.Access,
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
    slo: options.SloOption = None,
    goodput_target: options.GoodputTargetOption = None,
    ttft_bound: options.TtftBoundOption = None,
    tpot_bound: options.TpotBoundOption = None,
    mlperf_model: options.MlperfModelOption = None,
    arrival: groups.Arrival,
) -> None:
    """Find the highest Server-scenario QPS whose run is VALID (latency bound, early stopping),
    with --ttft-bound/--tpot-bound/--mlperf-model under LoadGen's token bounds instead (p TTFT and
    p TPOT, early stopping on each), or, with --slo and --goodput-target, at which that share of
    requests meets every SLO.
    Over --stages or a --trace: the largest speed-up of that shape that stays VALID (every stage
    VALID), reported as the shape's mean QPS at that speed-up."""
    search: dict[str, Any] = {
        "percentile": percentile / 100,
        "probe_duration_ns": int(probe_duration * NS_PER_S),
        "budget_ns": int(budget * NS_PER_S),
        "start_qps": start_qps,
        "max_qps": max_qps,
        "resolution": resolution,
        "late_threshold_ns": int(late_threshold * NS_PER_MS),
        "schedule_seed": seed,
        "sample_seed": samples.sample_seed,
        "sample_count": samples.samples,
    }
    slos = parse_slos(slo)
    tokens = common.token_bound_fields(ttft_bound, tpot_bound, mlperf_model)
    if mix is not None:
        from loadtest.commands.mix_peak import from_find_peak

        if slos or goodput_target is not None:
            raise SettingsError("--slo and --goodput-target search one model: not with --mix")
        if tokens:
            raise SettingsError(
                "--ttft-bound, --tpot-bound and --mlperf-model search one model: not with --mix"
            )
        arrival.refuse_beside("--mix", "each entry plays its own schedule")
        if given := samples.prompt_settings().flags_given():
            raise SettingsError(f"{given[0]}: not with --mix (each entry has its own samples)")
        from_find_peak(mix, search, endpoint, client.settings(), access, output)
        return
    share = _goodput_share(goodput_target, slos)
    law, prompts = groups.prompted_law(samples, arrival, arrival.search_law(), endpoint.wire)
    settings = PeakSettings(
        target_latency_ns=_bound_ns(model, target_latency, slos, share, tokens),
        arrival_law=law,
        slos=slos,
        goodput_target=share,
        **tokens,
        **search,
    )
    flags = groups.target_flags(model, endpoint, samples, access, prompts=prompts)
    client_settings = client.settings()
    stopping.reset()  # one command, one stop request
    common.check_outputs(output.output, None, output.force, PEAK_FILES)
    console = common.console
    try:
        spec, outcome, environment, resolved = _search(flags, settings, client_settings, live)
        render_peak(console, settings, outcome)
        result = peak_json(settings, resolved, spec, environment, outcome)
        if settings.shaped:
            result["shape"] = _shape_peak(settings, outcome.conclusion.peak_qps)
        saved = write_peak(result, output.output, model, output.force)
        common.say_saved(saved)
    finally:
        stopping.install_process_handlers()
    common.finish_or_stop(saved, "find-peak result", outcome.interrupted, outcome.stop_reason)
    if outcome.conclusion.peak_qps is None:
        raise typer.Exit(ExitCode.INVALID)


def _goodput_share(percent: float | None, slos: tuple[Slo, ...]) -> float:
    """--goodput-target as a share (0.0: MLPerf's rule); the goodput rule needs it and --slo."""
    if percent is not None and not 0 < percent <= 100:
        raise SettingsError(f"--goodput-target must be a percentage in (0, 100], got {percent:g}")
    if (percent is None) != (not slos):
        raise SettingsError(
            "find-peak's goodput rule needs both --slo NAME:MS (what a good request meets) and "
            "--goodput-target PERCENT (the share of requests that must be good)"
        )
    return 0.0 if percent is None else percent / 100


def _bound_ns(
    model: str,
    target_latency: float | None,
    slos: tuple[Slo, ...],
    share: float,
    tokens: dict[str, Any],
) -> int:
    """MLPerf's rule: --target-latency (or the suite model's). The goodput and token rules have
    none of their own: the tightest --slo (or token bound) stands in, for the send lag a client
    may show and keep up (5 % of it, at least --late-threshold), and --target-latency is refused
    as a rule not searched (LoadGen's LLM keys set `target_latency = 0`: only TTFT and TPOT)."""
    if tokens:
        if target_latency is not None:
            raise SettingsError(
                "--target-latency is an end-to-end bound; with --ttft-bound, --tpot-bound or "
                "--mlperf-model the search holds LoadGen's token bounds only (its LLM keys set "
                "target_latency = 0)"
            )
        return min(b for b in (tokens["ttft_bound_ns"], tokens["tpot_bound_ns"]) if b)
    if not share:
        return common.target_latency_ns(model, target_latency)
    if target_latency is not None:
        raise SettingsError(
            "--target-latency is MLPerf's p99 rule; with --goodput-target the search holds --slo "
            "instead (add --slo e2e:MS for an end-to-end bound)"
        )
    return min(s.bound_ns for s in slos)


def _shape_peak(settings: PeakSettings, peak_qps: float | None) -> dict[str, Any]:
    """find-peak over a shape: its own mean rate, and the speed-up at the peak (None: none)."""
    mean = settings.shape_mean_qps
    assert mean is not None  # only over a shape
    speedup = None if peak_qps is None else peak_qps / mean
    if peak_qps is not None:
        common.console.print(
            f"Over the shape: the largest VALID speed-up is ×{speedup:.4g} of its "
            f"{mean:,.4g} QPS mean",
            highlight=False,
        )
    return {"mean_qps": mean, "peak_speedup": speedup}


def _search(
    flags: common.TargetFlags, settings: PeakSettings, client: ClientSettings, live: bool
) -> tuple[ModelSpec, PeakOutcome, dict[str, Any], TargetSettings]:
    """The search against the deployment: (model, outcome, environment, resolved target)."""
    with common.connected(flags) as (deployment, target):
        generator = Generator(
            client, deployment.target, flags.input_data, flags.shapes, flags.prompts
        )
        law = settings.arrival_law
        common.say(
            f"find-peak against {target.description}, "
            f"{getattr(law, 'label', law.name)} arrivals: {settings.rule_text()}, budget "
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
    view = BudgetProgress(
        common.console,
        settings.budget_ns / NS_PER_S,
        f"find-peak against {target.description}",
        enabled=live,
    )

    def show(run: ProbeRun) -> None:
        for line in probe_lines(run, settings.percentile, settings.target_latency_ns):
            common.console.print(line, highlight=False)
        probe = run.probe
        if probe.valid and not probe.client_bound:
            view.probe_done(probe.qps, passed_label(run, settings))
        else:
            view.probe_done()

    try:
        spec, library = await open_with_samples(
            target,
            settings.sample_count,
            settings.sample_seed,
            flags.input_data,
            flags.shapes,
            prompts=flags.prompts,
        )
        check_measurable(settings.slos, target.capabilities.streams_parts, target.description)
        if settings.token_rule and not target.capabilities.streams_parts:
            raise SettingsError(
                f"the token bounds need answers in parts (a first token): {target.description} "
                "answers whole; use a streaming --protocol (grpc-stream, http-stream, openai)"
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
