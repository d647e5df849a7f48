"""`loadtest mix`: several models at once, each on its own open-loop stream and judged by its own
bound, then (by default) each alone on the same schedule: interference as a number."""

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
)
from loadtest.engine import stopping, timing
from loadtest.errors import ExitCode, SettingsError
from loadtest.report import outputs
from loadtest.report.mix_report import (
    MixReport,
    build_mix_report,
    default_mix_name,
    mix_file_names,
    mix_files,
    render_mix,
)
from loadtest.report.progress import PlaysProgress
from loadtest.report.resultfile import from_data
from loadtest.scenarios.experiments.mix_run import (
    MixOutcome,
    close_entries,
    measure_mix,
    open_entries,
)
from loadtest.scenarios.experiments.mix_spec import (
    MixDefaults,
    MixSpec,
    build_mix,
    parse_model_flag,
    read_mix_file,
)
from loadtest.server.mix_deployment import MixMemberTarget, resolve_mix


def model_entry(text: str) -> str:
    """--model NAME[@HOST:PORT]:QPS[:BOUND_MS]: malformed text is a usage error (exit 2)."""
    try:
        parse_model_flag(text)
    except SettingsError as exc:
        raise typer.BadParameter(str(exc)) from None
    return text


MixModelOption = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        "-m",
        parser=model_entry,
        help="An entry NAME\\[@HOST:PORT]:QPS\\[:BOUND_MS] (QPS 'offline' for an Offline entry); "
        "repeatable, added to MIX.toml's entries.",
    ),
]


@groups.takes_groups
def mix(
    *,
    mix_file: Annotated[
        Path | None, typer.Argument(help="MIX.toml: \\[\\[model]] entries (see README).")
    ] = None,
    model: MixModelOption = None,
    total_qps: Annotated[
        float | None,
        typer.Option(
            parser=finite_float, help="Total Server rate that the entries' weights split."
        ),
    ] = None,
    isolated: Annotated[
        bool,
        typer.Option(
            "--isolated/--no-isolated",
            help="Also run every entry alone on the same schedule first (the interference table).",
        ),
    ] = True,
    run: Annotated[groups.RunLength, groups.take(min_queries=100)],
    percentile: options.PercentileOption = options.PERCENTILE,
    late_threshold: options.LateThresholdOption = options.LATE_THRESHOLD_MS,
    endpoint: Annotated[groups.Endpoint, groups.take("model_version", "server_timeout")],
    seed: options.SeedOption = 0,
    samples: Annotated[
        groups.SampleLibrary, groups.take("input_data", "shape", *groups.NO_PROMPT_FLAGS)
    ],
    output: groups.Output,
    client: Annotated[groups.Client, groups.take("shared_memory")],
    access: groups.Access,
) -> None:
    """Run several models at once, each with its own Poisson stream and MLPerf verdict; then
    compare each with itself alone."""
    defaults = entry_defaults(
        endpoint,
        access,
        min_duration_ns=common.min_duration_ns(run.duration, False, 60 * NS_PER_S),
        seed=seed,
        total_qps=_positive_or_none(total_qps),
        percentile=percentile / 100,
        samples=samples.samples,
        sample_seed=samples.sample_seed,
        min_queries=run.min_queries,
        max_duration_ns=common.max_duration_ns(run.max_duration),
        late_threshold_ns=int(late_threshold * NS_PER_MS),
        keep_records=output.records,
    )
    spec = load_mix(mix_file, model, defaults)
    run_mix_command(spec, client.settings(), isolated, endpoint, output)


def entry_defaults(endpoint: groups.Endpoint, access: groups.Access, **given: Any) -> MixDefaults:
    """What every entry takes from the command line: where the default server is and how it is
    reached (the gRPC client flags and --ignore-eos too: each entry's target checks that they
    fit its protocol, in one line); `given` is the rest, the command's own (mix's run length,
    find-peak's probes)."""
    return MixDefaults(
        protocol=endpoint.wire,
        url=endpoint.url,
        timeout_s=endpoint.timeout,
        embedded=endpoint.embedded,
        repository=endpoint.repository,
        access=access.flags(),
        grpc=endpoint.grpc(),
        ignore_eos=endpoint.ignore_eos,
        **given,
    )


def _positive_or_none(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise SettingsError(f"--total-qps must be > 0, got {value:g}")
    return value


def load_mix(mix_file: Path | None, flags: list[str] | None, defaults: MixDefaults) -> MixSpec:
    """The validated mix from the file and/or the --model flags (one line naming what is wrong)."""
    document: dict[str, Any] = read_mix_file(mix_file) if mix_file is not None else {}
    source = str(mix_file) if mix_file is not None else "--model flags"
    if mix_file is None and not flags:
        raise SettingsError("give a MIX.toml, or --model NAME[@HOST:PORT]:QPS[:BOUND_MS] entries")
    return build_mix(document, [parse_model_flag(f) for f in flags or []], defaults, source)


def run_mix_command(
    spec: MixSpec,
    client: ClientSettings,
    isolated: bool,
    endpoint: groups.Endpoint,
    flags: groups.Output,
) -> MixReport:
    """Check the outputs, resolve every entry's server, measure, report, write; exit code."""
    embedded, repository, timeout_s = endpoint.embedded, endpoint.repository, endpoint.timeout
    output, html, force = flags.output, flags.html, flags.force
    stopping.reset()
    common.check_outputs(output, html, force, mix_file_names(spec))
    members = [
        MixMemberTarget(e.name, e.flags.target_settings(), e.url_given) for e in spec.entries
    ]
    drain_timeout_ns = int((timeout_s + 5) * NS_PER_S)
    try:
        with resolve_mix(members, embedded, repository, common.say) as deployments:
            view = PlaysProgress(
                common.console,
                spec.min_duration_ns / NS_PER_S,
                f"mix of {len(spec.entries)} entries",
                enabled=flags.live,
            )

            def say(text: str) -> None:
                common.say(text)
                view.stage(text)

            async def measure() -> tuple[MixOutcome, list[Any]]:
                opened = await open_entries(spec, deployments)
                try:
                    with view, stopping.catching(asyncio.get_running_loop()):
                        outcome = await measure_mix(
                            spec, opened, client, drain_timeout_ns, isolated, say
                        )
                finally:
                    await close_entries(opened)
                stopping.defer_signals()
                return outcome, opened

            parent_loop = LoopKind.PRECISE if client.loop is LoopKind.AUTO else client.loop
            outcome, opened = timing.run(measure(), parent_loop.value)
            report = build_mix_report(outcome, opened, deployments, client, isolated)
            render_mix(common.console, report)
            saved = write_mix(report, output, html, force)
            embedded_used = any(d.embedded is not None for d in deployments.values())
    finally:
        stopping.install_process_handlers()
    if report.interrupted:
        common.console.print(
            f"[yellow]partial result[/] ({report.stop_reason or 'stopped'}): written above",
            highlight=False,
        )
    if stopping.requested():
        common.finish_saving(saved, "mix result")
        raise typer.Exit(stopping.exit_code())
    common.finish_saving(saved, "mix result")
    if embedded_used:
        common.console.print(
            "[dim]This measured the embedded Triton on this machine (every entry without its "
            "own URL shared it).[/]",
            highlight=False,
        )
    if not report.valid:
        raise typer.Exit(ExitCode.CLIENT_BOUND if report.client_bound else ExitCode.INVALID)
    return report


def write_mix(
    report: MixReport, output: Path | None, html: Path | None, force: bool
) -> outputs.Saved:
    data = report.to_json()
    extra: dict[Path, str] = {}
    if html is not None:
        from loadtest.report.html import render_html  # plotly: only when HTML is asked for

        extra[html] = render_html([from_data(data, output.name if output else "mix")])
    saved = outputs.save(
        mix_files(report, data), output, default_mix_name(report), force=force, extra=extra
    )
    common.say_saved(saved)
    return saved
