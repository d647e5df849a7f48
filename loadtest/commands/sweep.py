"""`loadtest sweep`: the Triton model configuration that carries the most traffic within the SLO.

Each configuration is loaded into the running server through the model-repository API (explicit
model control), measured by find-peak under the same bound, and the original is loaded again at
the end. The strategy and the ranking are scenarios/searches/sweep_search.py's; the driver
scenarios/searches/sweep_run.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
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
    available_cpus,
)
from loadtest.core.target import Target
from loadtest.engine import stopping, timing
from loadtest.errors import ExitCode, SettingsError
from loadtest.models import DEFAULT_SERVER_MODEL
from loadtest.report.outputs import check_file
from loadtest.report.peak_report import probe_lines
from loadtest.report.progress import BudgetProgress
from loadtest.report.resultfile import from_data
from loadtest.report.results import build_environment
from loadtest.report.sweep_report import (
    SWEEP_FILES,
    config_pbtxt,
    peak_speedup,
    render_sweep,
    sweep_json,
    write_sweep,
)
from loadtest.scenarios.mlperf.play import Generator
from loadtest.scenarios.searches.peak_run import ProbeRun
from loadtest.scenarios.searches.sweep_fake import FakeConfigurator
from loadtest.scenarios.searches.sweep_run import (
    ModelConfigurator,
    Samples,
    SweepCallbacks,
    SweepOutcome,
    SweepPoint,
    SweepSettings,
    run_sweep,
)
from loadtest.scenarios.searches.sweep_search import Step
from loadtest.scenarios.searches.sweep_space import (
    build_space,
    parse_flag,
    read_space_file,
    sample_input_bytes,
)
from loadtest.scenarios.searches.sweep_triton import TritonConfigurator
from loadtest.targets.fake import FakeTarget

MIN_POINT_BUDGET_PROBES = 6  # the automatic per-point budget: this many probes


def _axis_option(name: str, example: str) -> Any:
    return typer.Option(f"--{name.replace('_', '-')}", help=f"Values to sweep, e.g. {example}.")


@dataclass(frozen=True)
class SweepBudget:
    """How long the sweep, each point and each probe may take, and how finely each peak is found."""

    budget: Annotated[
        float, typer.Option(parser=finite_float, help="Total time budget of the sweep, seconds.")
    ] = 600.0
    point_budget: Annotated[
        float,
        typer.Option(
            parser=finite_float,
            help="Most seconds one configuration's find-peak may take (0 = six probes' worth).",
        ),
    ] = 0.0
    probe_duration: Annotated[
        float, typer.Option(parser=finite_float, help="Minimum duration of each probe in seconds.")
    ] = 5.0
    resolution: Annotated[
        float,
        typer.Option(
            parser=finite_float, help="Each find-peak stops at this bracket width (fraction)."
        ),
    ] = 0.05
    warmup: Annotated[
        float,
        typer.Option(
            parser=finite_float,
            help="Seconds of closed loop after each load (warms it, caps its search).",
        ),
    ] = 1.0
    repeat: Annotated[
        bool,
        typer.Option(
            "--repeat/--no-repeat", help="Repeat each boundary probe once (the peak's interval)."
        ),
    ] = True
    max_points: Annotated[
        int, typer.Option(help="Measure at most this many configurations (0 = no cap).")
    ] = 0

    def settings(self, peak: PeakSettings) -> SweepSettings:
        automatic = MIN_POINT_BUDGET_PROBES * (self.probe_duration + 1.5)
        return SweepSettings(
            peak=peak,
            point_budget_ns=int((self.point_budget or automatic) * NS_PER_S),
            warmup_ns=int(self.warmup * NS_PER_S),
            repeat_boundary=self.repeat,
            max_points=self.max_points,
        )


@dataclass(frozen=True)
class SpaceFlags:
    """The values to sweep: a TOML file, and per dimension a flag that overrides it."""

    space_file: Annotated[
        Path | None,
        typer.Option("--space", help="TOML file of the values to sweep (names as the flags)."),
    ] = None
    instances: Annotated[str | None, _axis_option("instances", "1,2,4")] = None
    max_batch_size: Annotated[str | None, _axis_option("max_batch_size", "1,8,32")] = None
    queue_delay_us: Annotated[
        str | None, _axis_option("queue_delay_us", "off,0,100,1000 (off = no dynamic batching)")
    ] = None
    preferred_batch_sizes: Annotated[
        str | None, _axis_option("preferred_batch_sizes", "'none;4,8' (';' between choices)")
    ] = None
    intra_op_threads: Annotated[
        str | None, _axis_option("intra_op_threads", "1,2 (onnxruntime backend)")
    ] = None
    inter_op_threads: Annotated[
        str | None, _axis_option("inter_op_threads", "1,2 (onnxruntime backend)")
    ] = None

    def given(self) -> dict[str, tuple[Any, ...]]:
        """The TOML file's dimensions, overridden by the flags (all checked before any load)."""
        given = read_space_file(self.space_file) if self.space_file is not None else {}
        for field in dataclasses.fields(self):
            text = getattr(self, field.name)
            if field.name != "space_file" and text is not None:
                given[field.name] = parse_flag(field.name, text)
        return given


@groups.takes_groups
def sweep(
    *,
    model: options.ModelOption = DEFAULT_SERVER_MODEL,
    target_latency: options.TargetLatencyOption = None,
    percentile: options.PercentileOption = options.PERCENTILE,
    budget: SweepBudget,
    space: SpaceFlags,
    config_out: Annotated[
        Path | None,
        typer.Option(
            "--config-out",
            help="Also write the recommended config.pbtxt here (never into the model "
            "repository: see --apply).",
        ),
    ] = None,
    apply: Annotated[
        bool,
        typer.Option(
            "--apply",
            help="Write the recommended config.pbtxt into --repository/MODEL/ (the old one kept "
            "as config.pbtxt.before-sweep). The server is restored either way.",
        ),
    ] = False,
    html: options.HtmlOption = None,
    max_qps: Annotated[
        float,
        typer.Option(
            parser=finite_float,
            help="Never send faster than this: every warm-up and probe of every configuration "
            "(0 = no cap), to protect a shared server.",
        ),
    ] = 0.0,
    endpoint: Annotated[groups.Endpoint, groups.take("model_version")],
    seed: options.SeedOption = 0,
    samples: groups.SampleLibrary,
    output: Annotated[groups.Output, groups.take("records", "live", "html")],
    client: Annotated[groups.Client, groups.take("ray", "shared_memory")],
    access: groups.Access,
    live: options.LiveOption = True,
    arrival: groups.Arrival,
) -> None:
    """Find the model configuration (instances, batch size, batching delay, threads) with the
    highest VALID Server-scenario peak, climbing from the loaded one within a time budget.
    Over --stages or a --trace each configuration's peak is the largest speed-up of that shape
    that stays VALID (every stage VALID), as find-peak's."""
    law, prompts = groups.prompted_law(samples, arrival, arrival.search_law(), endpoint.wire)
    peak = PeakSettings(
        target_latency_ns=common.target_latency_ns(model, target_latency),
        percentile=percentile / 100,
        probe_duration_ns=int(budget.probe_duration * NS_PER_S),
        budget_ns=int(budget.budget * NS_PER_S),
        resolution=budget.resolution,
        schedule_seed=seed,
        sample_seed=samples.sample_seed,
        sample_count=samples.samples,
        arrival_law=law,
        max_qps=max_qps,
    )
    settings = budget.settings(peak)
    given = space.given()
    flags = groups.target_flags(model, endpoint, samples, access, prompts=prompts)
    stopping.reset()
    common.check_outputs(output.output, html, output.force, SWEEP_FILES)
    applied_to = _check_config_paths(config_out, apply, endpoint.repository, model, output.force)
    try:
        result, outcome = _run(flags, settings, client.settings(), given, live)
        render_sweep(common.console, settings, outcome)
        extra = _extra_files(result, outcome, config_out, html, output.output)
        saved = write_sweep(result, output.output, model, output.force, extra)
        common.say_saved(saved)
    finally:
        stopping.install_process_handlers()
    _say_restored(outcome)
    if applied_to is not None and outcome.winner is not None and not saved.rescued:
        _apply(applied_to, result)
    common.finish_or_stop(saved, "sweep result", outcome.interrupted, outcome.stop_reason)
    if outcome.error:
        common.notes.print(f"[bold red]error:[/] {outcome.error}", highlight=False)
        raise typer.Exit(ExitCode.ERROR)
    raise typer.Exit(_exit_code(outcome))


def _exit_code(outcome: SweepOutcome) -> ExitCode:
    """0 a recommendation (converged or what the budget allowed); 3 no configuration had a VALID
    peak; 5 none did only because every probe was client-bound."""
    if outcome.winner is not None:
        return ExitCode.OK
    measured = [p for p in outcome.points if p.outcome is not None and p.outcome.runs]
    if measured and all(p.client_bound for p in measured):
        return ExitCode.CLIENT_BOUND
    return ExitCode.INVALID


def _check_config_paths(
    config_out: Path | None, apply: bool, repository: Path, model: str, force: bool
) -> Path | None:
    """--config-out must not be the repository's config.pbtxt (that is what --apply is for);
    with --apply, the repository's model directory must exist. Returns where --apply writes."""
    in_repository = (repository / model / "config.pbtxt").resolve()
    if config_out is not None:
        if config_out.resolve() == in_repository and not apply:
            raise SettingsError(
                f"--config-out {config_out} is the model repository's own config.pbtxt: "
                "loadtest writes there only with --apply"
            )
        check_file(config_out, force, "--config-out")
    if not apply:
        return None
    if not in_repository.parent.is_dir():
        raise SettingsError(f"--apply: {in_repository.parent} is not a model directory")
    return in_repository


def _run(
    flags: common.TargetFlags,
    settings: SweepSettings,
    client: ClientSettings,
    given: dict[str, tuple[Any, ...]],
    live: bool,
) -> tuple[dict[str, Any], SweepOutcome]:
    with common.connected(flags) as (deployment, target):
        generator = Generator(
            client, deployment.target, flags.input_data, flags.shapes, flags.prompts
        )
        parent_loop = LoopKind.PRECISE if client.loop is LoopKind.AUTO else client.loop
        outcome, space = timing.run(
            _sweep(target, deployment.target, generator, settings, flags, given, live),
            parent_loop.value,
        )
        environment = build_environment(target, deployment)
        result = sweep_json(settings, deployment.target, None, environment, outcome, space)
        if result["winner"] is not None:
            result["recommended_config_pbtxt"] = config_pbtxt(result["winner"]["config"])
        return result, outcome


def _configurator(target: Target) -> ModelConfigurator:
    if isinstance(target, FakeTarget):
        return FakeConfigurator(target, cores=available_cpus())
    triton = target.capabilities.triton
    if triton is None:
        raise SettingsError(
            f"sweep changes a Triton model's configuration; {target.description} has none"
        )
    return TritonConfigurator(triton)


async def _sweep(
    target: Target,
    resolved: TargetSettings,
    generator: Generator,
    settings: SweepSettings,
    flags: common.TargetFlags,
    given: dict[str, tuple[Any, ...]],
    live: bool,
) -> tuple[SweepOutcome, dict[str, list[Any]]]:
    peak = settings.peak
    configurator = _configurator(target)
    try:
        if isinstance(configurator, TritonConfigurator):
            await configurator.check()  # explicit model control, before anything runs
        original = await configurator.loaded()
        cores = available_cpus()
        space, baseline = build_space(
            original, given, peak.target_latency_ns, cores, sample_input_bytes(original)
        )
    except BaseException:
        await target.close()
        if isinstance(configurator, TritonConfigurator):
            await configurator.close()
        raise
    grid = space.grid_size()
    swept = ", ".join(
        f"{name} {'/'.join(_show(name, v) for v in space.axis(name))}" for name in space.swept()
    )
    heading = f"sweep of {flags.model!r} against {target.description}"
    law = getattr(peak.arrival_law, "label", peak.arrival_law.name)
    bound_ms = peak.target_latency_ns / NS_PER_MS
    common.say(
        f"{heading}: {law} arrivals, p{peak.percentile * 100:g} ≤ {bound_ms:g} ms, "
        f"budget {peak.budget_ns / NS_PER_S:g} s; grid {grid} configurations ({swept}); "
        f"{cores} cores here; climbing from the loaded one: {baseline.label()}"
    )
    view = BudgetProgress(common.console, peak.budget_ns / NS_PER_S, heading, enabled=live)
    best: dict[str, float] = {"qps": -1.0}

    def point_start(number: int, step: Step) -> None:
        text = f"point {number} (grid {grid}): {step.candidate.label()} — {step.reason}"
        view.point(text)
        common.say(text)

    def point_done(point: SweepPoint) -> None:
        common.console.print(_point_line(point, peak), highlight=False)
        qps = point.result.peak_qps
        if qps is not None and point.result.usable and qps > best["qps"]:
            best["qps"] = qps
            view.best(f"{qps:,.1f} QPS with {point.candidate.label()} (point {point.number})")

    def show_probe(run: ProbeRun) -> None:
        for line in probe_lines(run, peak.percentile, peak.target_latency_ns, indent="  "):
            common.console.print(line, highlight=False)
        view.probe_done()

    callbacks = SweepCallbacks(
        on_point_start=point_start,
        on_point=point_done,
        on_probe=show_probe,
        on_stage=view.stage,
        on_tick=view.tick,
    )
    samples = Samples(
        peak.sample_count, peak.sample_seed, flags.input_data, flags.shapes, flags.prompts
    )
    with view, stopping.catching(asyncio.get_running_loop()):
        outcome = await run_sweep(
            target, configurator, space, baseline, settings, samples, flags.timeout_s,
            generator, callbacks,
        )  # fmt: skip
    stopping.defer_signals()  # a signal now waits until sweep.json is written
    if isinstance(configurator, TritonConfigurator):
        await configurator.close()
    return outcome, {name: [_json_value(v) for v in space.axis(name)] for name in space.values}


def _show(name: str, value: object) -> str:
    if value is None:
        return "off" if name == "queue_delay_us" else "as loaded"
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return str(value)


def _json_value(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def _point_line(point: SweepPoint, peak: PeakSettings) -> str:
    result = point.result
    percentile = peak.percentile
    head = f"point {point.number}: {point.candidate.label()}: "
    if not result.usable:
        return head + f"[red]{point.status}[/] {result.failed or ''}".rstrip()
    latency = point.latency_at_peak_ns
    text = (
        f"peak {result.peak_qps:,.1f} QPS (interval {result.low_qps:,.1f}–{result.high_qps:,.1f})"
        + (f", p{percentile * 100:g} {latency / 1e6:.2f} ms there" if latency else "")
        + (f" (×{speedup:.4g} the shape's mean)" if (speedup := peak_speedup(point, peak)) else "")
        + f", {point.elapsed_s:.0f} s"
    )
    if point.client_bound:
        text += " [yellow](some probes client-bound)[/]"
    return head + text


def _extra_files(
    result: dict[str, Any],
    outcome: SweepOutcome,
    config_out: Path | None,
    html: Path | None,
    output: Path | None,
) -> dict[Path, str]:
    extra: dict[Path, str] = {}
    text = result.get("recommended_config_pbtxt")
    if text and config_out is not None:
        extra[config_out] = text
    if html is not None:
        label = output.name if output else "sweep"
        from loadtest.report.html import render_html  # plotly: only when HTML is asked for

        extra[html] = render_html([from_data(result, label)])
    return extra


def _say_restored(outcome: SweepOutcome) -> None:
    if outcome.restore_problem:
        common.notes.print(
            f"[bold red]warning:[/] {outcome.restore_problem}; reload the model from its "
            "repository (POST v2/repository/models/MODEL/load) to undo the sweep",
            highlight=False,
        )
    else:
        common.say("the model's original configuration is loaded again")


def _apply(path: Path, result: dict[str, Any]) -> None:
    from loadtest.report.outputs import write_atomically

    text = result.get("recommended_config_pbtxt")
    if not text:
        return
    backup = path.with_name("config.pbtxt.before-sweep")
    try:
        if path.exists() and not backup.exists():
            write_atomically(backup, path.read_text())
        write_atomically(path, text)
    except OSError as exc:
        raise SettingsError(f"--apply: cannot write {path}: {exc.strerror or exc}") from None
    common.console.print(
        f"applied: {path} (previous kept as {backup.name}); the server still runs the original "
        "until the model is loaded again",
        highlight=False,
    )
