"""What every scenario command shares: parsing its flags and the run-report-write flow.

The flags themselves are declared in options.py. A scenario command gathers its target-side
flags into a `TargetFlags` and builds its own validated settings, then hands `execute` a `play`
coroutine; `execute` checks where the result will go (before any load), finds or starts the
server, builds the sample library, shows the live view, interprets, renders, writes result.json +
mlperf_log_summary.txt (atomically; rescued elsewhere, exit 4, if that fails), and turns Ctrl-C
or SIGTERM into a partial result, written before the embedded server stops, and exit code 130 or
143.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import typer

from loadtest.core.records import Records
from loadtest.core.settings import (
    NS_PER_MS,
    NS_PER_S,
    ErrorAbort,
    LoopKind,
    ScenarioSettings,
    TargetSettings,
)
from loadtest.core.target import ModelSpec, Target
from loadtest.engine import stopping, timing
from loadtest.engine.measurement import Measurement
from loadtest.engine.runner import OnStart
from loadtest.engine.samples import random_samples, sample_library
from loadtest.engine.selfmeasure import Progress
from loadtest.errors import ExitCode, ResultRescued, SettingsError
from loadtest.models import SUITE
from loadtest.observe.probe import RunObserver
from loadtest.report import outputs
from loadtest.report.compare_report import split_table
from loadtest.report.console import make_console
from loadtest.report.html import render_html
from loadtest.report.live import LiveView
from loadtest.report.resultfile import from_data
from loadtest.report.results import (
    RUN_FILES,
    RunReport,
    build_environment,
    default_output_name,
    run_files,
)
from loadtest.report.terminal import render_report
from loadtest.rules.cache_check import CacheCheck
from loadtest.rules.output_check import OutputCheck
from loadtest.rules.validity import Verdict
from loadtest.scenarios.mlperf import accuracy
from loadtest.scenarios.mlperf.cache_probe import PROBE_PAIRS, probe_cache
from loadtest.scenarios.target_flags import TargetFlags, access_flags
from loadtest.server import deployment as deployment_module
from loadtest.server.deployment import Deployment
from loadtest.targets import target_for
from loadtest.targets.shared_memory import with_shared_memory

console = make_console()
notes = make_console(stderr=True)

__all__ = ["TargetFlags", "access_flags", "connected", "execute", "parse_shapes", "say"]


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


def error_rules(
    error_budget: float | None, abort_rate: float | None, window_s: float, mlperf: bool
) -> dict[str, Any]:
    """The settings fields of --error-budget and --abort-on-error-rate/--window (validated)."""
    if error_budget is not None and mlperf:
        raise SettingsError(
            "--error-budget is not MLPerf's rule (any failed query is INVALID): drop --mlperf or it"
        )
    abort = None if abort_rate is None else ErrorAbort(abort_rate, int(window_s * NS_PER_S))
    return {"error_budget": error_budget, "abort": abort}


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
        bound = SUITE[model].target_latency_ns
        if bound is None:
            raise SettingsError(
                f"{model} has no Server latency bound: {SUITE[model].no_server}; use "
                "`loadtest offline` or `loadtest single-stream` (or your own --target-latency)"
            )
        return bound
    raise SettingsError(
        f"model {model!r} is not in the benchmark suite, so it has no MLPerf target latency: "
        "pass --target-latency MS"
    )


def say(text: str) -> None:
    notes.print(f"[dim]{text}[/]", highlight=False)


# play(target, model, library size, live-view tick, the resolved target settings, on_start): the
# play awaits on_start at its t = 0 (see observe.probe.RunObserver).
Play = Callable[
    [
        Target,
        ModelSpec,
        int,
        Callable[[Records | Progress, int], None],
        TargetSettings,
        OnStart,
    ],
    Coroutine[Any, Any, Measurement],
]


@contextlib.contextmanager
def connected(flags: TargetFlags) -> Iterator[tuple[Deployment, Target]]:
    """The deployment to measure (the embedded Triton started if needed) and a target for it."""
    requested = flags.target_settings()
    with deployment_module.resolve(requested, flags.embedded, flags.repository, say) as deployment:
        target = target_for(deployment.target)
        yield deployment, with_shared_memory(target, flags.shared_memory, tag="main")


def check_outputs(
    output: Path | None, html: Path | None, force: bool, files: tuple[str, ...]
) -> None:
    """Before any load: --output and --html are usable and overwrite nothing unasked (exit 1)."""
    outputs.check_directory(output, files, force)
    if html is not None:
        outputs.check_file(html, force, "--html")


def finish_saving(saved: outputs.Saved, what: str) -> None:
    """Say where the files went; a rescue raises ResultRescued (exit 4) unless the run was stopped
    by a signal, whose exit code then wins (the rescue directory is printed either way)."""
    if not saved.rescued:
        return
    if saved.lost:
        message = f"cannot save the {what} anywhere: {saved.problem}"
    else:
        message = (
            f"cannot write the {what} where asked ({saved.problem}); saved in {saved.directory} "
            "instead"
        )
    if stopping.requested():
        notes.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        return
    raise ResultRescued(message)


@dataclass
class AfterRun:
    """What is judged after the run, beside its records: --check-outputs and --same-sample."""

    outputs: OutputCheck | None = None
    cache: CacheCheck | None = None


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
    force: bool = False,
    settings_used: Callable[[], ScenarioSettings] | None = None,
) -> RunReport:
    """Check the outputs, find or start the server, run `play`, then report and write; see the
    module docstring. `settings_used`, when given, returns after the run the settings it actually
    ran under (Offline's `--expected-qps auto` is resolved by a calibration inside `play`).

    The server side (Triton's statistics split, server CPU, :8002 metrics) is observed around the
    run when the target is a Triton, so the one RunReport built afterwards holds all of it. The
    files are written before any embedded server is stopped.
    """
    stopping.reset()  # one command, one stop request
    requested = flags.target_settings()
    check_outputs(output, html, force, RUN_FILES)
    observer = RunObserver()
    checks = AfterRun()
    try:
        with connected(flags) as (deployment, target):
            resolved = deployment.target
            heading = f"{title} against {target.description}"

            async def measure() -> Measurement:
                closed = False
                try:
                    spec = await target.open()
                    library = sample_library(
                        spec, sample_count, sample_seed, flags.input_data, flags.shapes,
                        batch_size,
                    )  # fmt: skip
                    # --same-sample's unique samples: beyond the run's library, never sent by it,
                    # and drawn afresh each run (a seed from the OS, written to result.json): a
                    # fixed seed would send the same "unique" samples as the last run, which a
                    # response cache already holds.
                    probe_seed = secrets.randbits(63)
                    probe = (
                        random_samples(spec, PROBE_PAIRS, probe_seed, flags.shapes, batch_size)
                        if settings.same_sample
                        else []
                    )
                    await target.prepare([*library, *probe])
                    references: accuracy.References = []
                    reference = ""
                    if settings.check_outputs:
                        if not target.capabilities.keeps_outputs:
                            raise SettingsError(
                                f"--check-outputs: {target.description} cannot keep its answers"
                            )
                        say("--check-outputs: computing reference outputs with onnxruntime")
                        references, reference = await accuracy.references_for(
                            resolved.url, flags.repository, resolved.model, library
                        )
                    view = LiveView(console, span_ns, heading, enabled=live)
                    # From here a stop signal ends the run with a result instead of unwinding it.
                    with view, stopping.catching(asyncio.get_running_loop()):
                        try:
                            measurement = await observer.around(
                                target,
                                lambda on_start: play(
                                    target, spec, len(library), view.tick, resolved, on_start
                                ),
                            )
                            if settings.same_sample and not measurement.outcome.interrupted:
                                unique = list(range(len(library), len(library) + len(probe)))
                                found = await probe_cache(target, 0, unique, sample_seed)
                                checks.cache = replace(found, unique_seed=probe_seed)
                        finally:
                            closed = True
                            await target.close()
                    stopping.defer_signals()  # a signal now waits until the result is written
                    if settings.check_outputs:
                        checks.outputs = accuracy.verify(
                            measurement.outcome,
                            target,
                            references,
                            settings.check_outputs,
                            settings.sample_seed,
                            reference,
                        )
                    return measurement
                finally:
                    if not closed:
                        await target.close()

            if not live or not console.is_terminal:
                say(heading)
            measurement = timing.run(measure(), loop.value)
            environment = build_environment(target, deployment)
            if settings_used is not None:
                settings = settings_used()
            report = RunReport.from_measurement(
                settings,
                requested,
                resolved,
                measurement,
                environment,
                observer.result,
                output_check=checks.outputs,
                cache_check=checks.cache,
            )
            render_report(console, report)
            if report.server_side is not None:
                console.print(split_table([(report.target.model, report.server_side)]))
            saved = write_run(report, output, html, force)
    finally:
        stopping.install_process_handlers()
    if measurement.outcome.interrupted:
        reason = measurement.outcome.stop_reason
        console.print(f"[yellow]partial result[/] ({reason}): written above", highlight=False)
    if stopping.requested():
        finish_saving(saved, "result")
        raise typer.Exit(stopping.exit_code())
    finish_saving(saved, "result")
    if deployment.embedded is not None:
        console.print(
            "[dim]This measured the embedded Triton on this machine. To measure a real deployment: "
            "docker compose up (see README), then add --url HOST:8001 --embedded never[/]",
            highlight=False,
        )
    code = verdict_exit_code(report.verdict)
    if code is not ExitCode.OK:
        raise typer.Exit(code)
    return report


def write_run(
    report: RunReport, output: Path | None, html: Path | None, force: bool
) -> outputs.Saved:
    """result.json + mlperf_log_summary.txt (+ the --html report), all atomically, or rescued."""
    data = report.to_json()
    extra: dict[Path, str] = {}
    if html is not None:
        label = output.name if output else "run"
        extra[html] = render_html([from_data(data, label)])
    saved = outputs.save(
        run_files(report, data), output, default_output_name(report), force=force, extra=extra
    )
    say_saved(saved)
    return saved


def say_saved(saved: outputs.Saved) -> None:
    """One line naming the files written ("results:"), or where they were rescued to."""
    if saved.directory is not None:
        where = "rescued: " if saved.rescued else "results: "
        console.print(where + "  ".join(str(p) for p in saved.files), highlight=False)


def verdict_exit_code(verdict: Verdict) -> ExitCode:
    """0 VALID, 5 INVALID only because the client fell behind, 3 any other INVALID."""
    if verdict.valid:
        return ExitCode.OK
    return ExitCode.CLIENT_BOUND if verdict.client_bound else ExitCode.INVALID
