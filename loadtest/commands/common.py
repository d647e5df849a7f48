"""What every scenario command shares: the target/deployment flags and the run-report-write flow.

A scenario command builds its own validated settings, then hands `execute` a `play` coroutine;
`execute` checks where the result will go (before any load), finds or starts the server, builds
the sample library, shows the live view, interprets, renders, writes result.json +
mlperf_log_summary.txt (atomically; rescued elsewhere, exit 4, if that fails), and turns Ctrl-C
or SIGTERM into a partial result, written before the embedded server stops, and exit code 130 or
143.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from loadtest.core.records import Records
from loadtest.core.settings import (
    NS_PER_MS,
    NS_PER_S,
    LoopKind,
    Protocol,
    ScenarioSettings,
    SharedMemoryKind,
    TargetSettings,
)
from loadtest.core.target import ModelSpec, Target
from loadtest.engine import stopping, timing
from loadtest.engine.measurement import Measurement
from loadtest.engine.samples import open_with_samples
from loadtest.engine.selfmeasure import Progress
from loadtest.errors import ResultRescued, SettingsError
from loadtest.models import SUITE
from loadtest.observe.probe import RunObserver
from loadtest.report import outputs
from loadtest.report.compare_report import split_table
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
from loadtest.server import deployment as deployment_module
from loadtest.server.deployment import Deployment, EmbeddedMode
from loadtest.targets import triton_target
from loadtest.targets.shared_memory import with_shared_memory

console = Console()
notes = Console(stderr=True)

# --- flags every scenario command takes -------------------------------------------------------
ModelOption = Annotated[str, typer.Option("--model", "-m", help="Model to load test.")]
UrlOption = Annotated[
    str | None,
    typer.Option(help="Triton address (default 127.0.0.1:8001 for gRPC, :8000 for HTTP)."),
]
ProtocolOption = Annotated[Protocol, typer.Option(help="Wire protocol.")]
VersionOption = Annotated[str, typer.Option(help="Model version ('' = latest).")]
TimeoutOption = Annotated[
    float,
    typer.Option(
        help="Per-request deadline in seconds, from the request's send: a query not answered by "
        "then counts as error kind 'timeout'. Connecting, metadata and warm-up get max(30 s, this)."
    ),
]
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

# --- stopping, outputs and deadlines (issue #12): one block, for the move to options.py -------
ForceOption = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Overwrite result files already in --output (and an existing --html file); without "
        "it such a run is refused before any load.",
    ),
]
ServerTimeoutOption = Annotated[
    float | None,
    typer.Option(
        help="Also send Triton the request's 'timeout' parameter (these seconds, in µs), so the "
        "server drops what the client no longer waits for; Triton applies it in the dynamic "
        "batcher's queue where the model's queue policy allows a timeout override. Its "
        "rejections count as error kind 'server-timeout'.",
        show_default=False,
    ),
]
EXIT_CODES = (
    "Exit codes: 0 done; 1 error (one line, before any load where it can be known); 2 bad flags; "
    "3 no answer (find-peak: no valid rate); 4 the result could not be written where asked and "
    "was saved in the rescue directory printed (under ~/.cache/loadtest/rescued or $TMPDIR); "
    "130 stopped by Ctrl-C (SIGINT), 143 stopped by SIGTERM, each after writing the partial "
    "result (marked partial) and stopping any embedded server."
)
# ------------------------------------------------------------------------------------------------
DEFAULT_REPOSITORY = Path("model_repository")


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
    server_timeout_s: float | None = None

    def target_settings(self) -> TargetSettings:
        default_url = f"127.0.0.1:{deployment_module.default_port(self.protocol)}"
        if self.server_timeout_s is not None and self.server_timeout_s <= 0:
            raise SettingsError(f"--server-timeout must be > 0 s, got {self.server_timeout_s:g}")
        return TargetSettings(
            url=self.url or default_url,
            protocol=self.protocol,
            model=self.model,
            model_version=self.model_version,
            request_timeout_s=self.timeout_s,
            server_timeout_s=self.server_timeout_s or 0.0,
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
        resolved = deployment.target
        target = triton_target(
            resolved.url,
            resolved.protocol.value,
            resolved.model,
            resolved.model_version,
            flags.timeout_s,
            resolved.server_timeout_s,
        )
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
) -> RunReport:
    """Check the outputs, find or start the server, run `play`, then report and write; see the
    module docstring.

    The server side (Triton's statistics split, server CPU, :8002 metrics) is observed around the
    run when the target is a Triton, so the one RunReport built afterwards holds all of it. The
    files are written before any embedded server is stopped.
    """
    stopping.reset()  # one command, one stop request
    requested = flags.target_settings()
    check_outputs(output, html, force, RUN_FILES)
    observer = RunObserver()
    try:
        with connected(flags) as (deployment, target):
            resolved = deployment.target
            heading = f"{title} against {target.description}"

            async def measure() -> Measurement:
                closed = False
                try:
                    spec, library = await open_with_samples(
                        target, sample_count, sample_seed, flags.input_data, flags.shapes,
                        batch_size,
                    )  # fmt: skip
                    view = LiveView(console, span_ns, heading, enabled=live)
                    # From here a stop signal ends the run with a result instead of unwinding it.
                    with view, stopping.catching(asyncio.get_running_loop()):
                        try:
                            run = play(target, spec, len(library), view.tick, resolved)
                            measurement = await observer.around(target, run)
                        finally:
                            closed = True
                            await target.close()
                    stopping.defer_signals()  # a signal now waits until the result is written
                    return measurement
                finally:
                    if not closed:
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
    if saved.directory is not None:
        where = "rescued: " if saved.rescued else "results: "
        console.print(where + "  ".join(str(p) for p in saved.files), highlight=False)
    return saved
