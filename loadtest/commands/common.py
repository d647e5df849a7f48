"""What every scenario command shares: parsing its flags and the run-report-write flow.

The flags themselves are declared in options.py. A scenario command gathers its target-side
flags into a `TargetFlags` and builds its own validated settings, then hands `execute` a `play`
coroutine; `execute` checks where the result will go (before any load), runs the scenario through
scenarios/run.py (server found or started, samples, live view, play, observation, checks),
renders, writes result.json + mlperf_log_summary.txt (atomically; rescued elsewhere, exit 4, if
that fails) before the embedded server stops, and picks the exit code: the verdict's, or 130 or
143 when Ctrl-C or SIGTERM turned the run into a partial result.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer

from loadtest.core.settings import (
    NS_PER_MS,
    NS_PER_S,
    ErrorAbort,
    LoopKind,
    ScenarioSettings,
    ServerSettings,
)
from loadtest.core.stages import StagedArrivals
from loadtest.core.target import Target
from loadtest.engine import stopping
from loadtest.errors import ExitCode, ResultRescued, SettingsError
from loadtest.models import SUITE
from loadtest.report import outputs
from loadtest.report.compare_report import split_table
from loadtest.report.console import make_console
from loadtest.report.live import LiveView
from loadtest.report.resultfile import from_data
from loadtest.report.results import (
    RUN_FILES,
    RunReport,
    default_output_name,
    run_files,
)
from loadtest.report.terminal import render_report
from loadtest.rules.tokens import MLPERF_TOKEN_BOUNDS_MS, TokenBounds
from loadtest.rules.validity import Verdict
from loadtest.scenarios import run as run_module
from loadtest.scenarios.run import Play, run_scenario
from loadtest.scenarios.target_flags import TargetFlags, access_flags
from loadtest.server.deployment import Deployment

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


def token_bound_fields(
    ttft_ms: float | None, tpot_ms: float | None, mlperf_model: str | None
) -> dict[str, Any]:
    """ServerSettings' token bounds: --mlperf-model's (mlperf.conf), each replaced by
    --ttft-bound / --tpot-bound when given; no fields when none is asked for."""
    ttft_ns = tpot_ns = 0
    source = ""
    if mlperf_model is not None:
        if mlperf_model not in MLPERF_TOKEN_BOUNDS_MS:
            keys = ", ".join(MLPERF_TOKEN_BOUNDS_MS)
            raise SettingsError(f"--mlperf-model {mlperf_model!r} is not one of: {keys}")
        bounds = TokenBounds.of_mlperf_model(mlperf_model)
        ttft_ns, tpot_ns, source = bounds.ttft_ns, bounds.tpot_ns, bounds.source
    for flag, given in (("--ttft-bound", ttft_ms), ("--tpot-bound", tpot_ms)):
        if given is not None and not given > 0:
            raise SettingsError(f"{flag} must be > 0 ms, got {given:g}")
    flags = [
        flag for flag, given in (("--ttft-bound", ttft_ms), ("--tpot-bound", tpot_ms)) if given
    ]
    if ttft_ms is not None:
        ttft_ns = int(ttft_ms * NS_PER_MS)
    if tpot_ms is not None:
        tpot_ns = int(tpot_ms * NS_PER_MS)
    if flags:
        source = ", ".join(flags + ([source] if source else []))
    if not (ttft_ns or tpot_ns):
        return {}
    return {"ttft_bound_ns": ttft_ns, "tpot_bound_ns": tpot_ns, "token_bounds_source": source}


# Why a scenario takes no token bounds: LoadGen holds TTFT and TPOT only in the Server scenario
# (mlperf.conf's `*.Server.ttft_latency` / `tpot_latency`; results.cc's token PerfConstraintsMet).
NO_TOKEN_BOUNDS = {
    "Offline": "LoadGen's Offline has no latency bound and stamps no first token (its LLM figure "
    "is tokens/s, which the run reports)",
    "SingleStream": "LoadGen holds TTFT and TPOT bounds only in the Server scenario (mlperf.conf "
    "*.Server.ttft_latency); SingleStream reports its token figures unbounded",
}


def refuse_token_bounds(
    scenario: str, ttft_ms: float | None, tpot_ms: float | None, mlperf_model: str | None
) -> None:
    """One line for --ttft-bound, --tpot-bound or --mlperf-model on a scenario without them."""
    given = [
        flag
        for flag, value in (
            ("--ttft-bound", ttft_ms),
            ("--tpot-bound", tpot_ms),
            ("--mlperf-model", mlperf_model),
        )
        if value is not None
    ]
    if given:
        raise SettingsError(
            f"{', '.join(given)}: {NO_TOKEN_BOUNDS[scenario]}; use `loadtest server` or "
            "`loadtest find-peak` to hold them"
        )


def say(text: str) -> None:
    notes.print(f"[dim]{text}[/]", highlight=False)


@contextlib.contextmanager
def connected(flags: TargetFlags) -> Iterator[tuple[Deployment, Target]]:
    """scenarios.run.connected, saying what it finds or starts (find-peak, sweep)."""
    with run_module.connected(flags, say) as found:
        yield found


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


def finish_or_stop(
    saved: outputs.Saved, what: str, interrupted: bool, stop_reason: str | None
) -> None:
    """After a search or a comparison is written: a partial one (stopped, or a signal arrived)
    is said and exits with the signal's code; otherwise only the files' fate (finish_saving)."""
    if interrupted or stopping.requested():
        console.print(
            f"[yellow]partial result[/] ({stop_reason or stopping.requested()}): written above",
            highlight=False,
        )
        finish_saving(saved, what)
        raise typer.Exit(stopping.exit_code())
    finish_saving(saved, what)


def _span_ns(settings: ScenarioSettings) -> int:
    """How long the live view expects the run to last: its minimum duration, or the whole of
    its load stages (which are played whole; a trace's minimum duration is already its span)."""
    if isinstance(settings, ServerSettings):
        arrivals = settings.arrivals
        if isinstance(arrivals, StagedArrivals):
            return arrivals.profile.duration_ns
    return settings.min_duration_ns


def execute(
    settings: ScenarioSettings,
    flags: TargetFlags,
    title: str,
    play: Play,
    output: Path | None,
    live: bool,
    batch_size: int = 1,
    loop: LoopKind = LoopKind.PRECISE,
    html: Path | None = None,
    force: bool = False,
    settings_used: Callable[[], ScenarioSettings] | None = None,
) -> RunReport:
    """Check the outputs, run the scenario (scenarios/run.py: server, play, observation, checks),
    then render and write the result while the deployment is still up; the exit code from its
    verdict (or the stop signal). See the module docstring."""
    stopping.reset()  # one command, one stop request
    check_outputs(output, html, force, RUN_FILES)

    def view(heading: str) -> LiveView:
        shown = LiveView(console, _span_ns(settings), heading, enabled=live)
        if not shown.enabled:
            say(heading)
        return shown

    with run_scenario(
        settings, flags, play, title, view=view, say=say, batch_size=batch_size, loop=loop,
        settings_used=settings_used,
    ) as run:  # fmt: skip
        report = RunReport.from_run(run)
        render_report(console, report)
        if report.server_side is not None:
            console.print(split_table([(report.target.model, report.server_side)]))
        saved = write_run(report, output, html, force)
    if run.interrupted:
        reason = run.measurement.outcome.stop_reason
        console.print(f"[yellow]partial result[/] ({reason}): written above", highlight=False)
    if stopping.requested():
        finish_saving(saved, "result")
        raise typer.Exit(stopping.exit_code())
    finish_saving(saved, "result")
    if run.deployment.embedded is not None:
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
        from loadtest.report.html import render_html  # plotly: only when HTML is asked for

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
