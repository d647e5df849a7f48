"""`loadtest compare`: the Server scenario against Triton and native onnxruntime, same schedule;
for the suite decoder, Triton's stream against the same generation loop in-process.

The flags become a CompareSetup; scenarios/experiments/compare_run.py plays it (see there for
what is compared and how) and report/compare_report.py renders and writes compare.json.
"""

from __future__ import annotations

import time
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
    PeakSettings,
    Protocol,
    ServerSettings,
    SharedMemoryKind,
)
from loadtest.engine import stopping, timing
from loadtest.errors import ExitCode, SettingsError
from loadtest.models import DEFAULT_SERVER_MODEL, DEFAULT_SERVER_QPS
from loadtest.report.compare_report import (
    COMPARE_FILES,
    compare_json,
    render_compare,
    write_compare,
)
from loadtest.report.progress import PlaysProgress
from loadtest.report.results import build_environment
from loadtest.rules.validity import Verdict
from loadtest.scenarios.experiments import compare_run
from loadtest.scenarios.experiments.compare_run import (
    DEFAULT_TARGETS,
    CompareSetup,
    CompareTarget,
    at_rates,
    is_decoder,
    target_names,
)
from loadtest.scenarios.searches import compare_peak_run
from loadtest.server.deployment import EmbeddedMode

DURATION_NS = 10 * NS_PER_S  # each run's minimum duration unless --duration says otherwise
MIN_QUERIES = 100  # each run's minimum query count unless --min-queries says otherwise

TargetOption = Annotated[
    list[CompareTarget] | None,
    typer.Option(
        "--target",
        "-t",
        help="triton = Triton over --protocol (at --url); triton-grpc, triton-http, "
        "triton-grpc-stream, triton-http-stream and native name theirs (a decoder: a stream "
        "protocol, native = its loop in-process). Repeatable (default: triton and native).",
    ),
]
RatesOption = Annotated[
    list[float] | None,
    typer.Option(
        parser=finite_float,
        help=f"Scheduled rate; repeatable (default: {DEFAULT_SERVER_QPS:g}). Over --stages or a "
        "--trace: the shape's mean rate, the shape scaled to it.",
    ),
]
HttpUrlOption = Annotated[
    str | None,
    typer.Option(help="Triton HTTP address when --url is gRPC's (default: --url's host:8000)."),
]
MetricsUrlOption = Annotated[
    str | None, typer.Option(help="Triton metrics URL for a remote server (embedded: automatic).")
]
OnnxOption = Annotated[
    Path | None, typer.Option(help="Native side: this .onnx instead of the repository's.")
]
NativeInstancesOption = Annotated[
    int | None, typer.Option(help="Native workers (default: config's instance count).")
]
NativeIntraOption = Annotated[
    int | None, typer.Option(help="Native ORT intra-op threads (default: config).")
]
NativeInterOption = Annotated[
    int | None, typer.Option(help="Native ORT inter-op threads (default: config).")
]
NativeBatchingOption = Annotated[
    bool | None, typer.Option(help="Native dynamic batching on/off (default: as config.pbtxt).")
]
NativeMaxBatchOption = Annotated[
    int | None, typer.Option(help="Native max batch size (default: config).")
]
NativeDelayOption = Annotated[
    int | None, typer.Option(help="Native batcher max queue delay µs (default: config).")
]
ProviderOption = Annotated[
    list[str] | None,
    typer.Option(help="Native execution provider: cpu, cuda, tensorrt (repeatable)."),
]
AgreementOption = Annotated[
    int, typer.Option(help="Samples whose outputs are compared against native.")
]
PeakOption = Annotated[
    bool | None,
    typer.Option(
        help="Search each target's peak under the bound (find-peak's search, probes interleaved "
        "across targets, boundary repeated on another seed) and report the ratio with its "
        "interval (default: on, unless --qps is given).",
    ),
]
BudgetOption = Annotated[
    float, typer.Option(parser=finite_float, help="Peak search: total time budget in seconds.")
]
ProbeDurationOption = Annotated[
    float, typer.Option(parser=finite_float, help="Peak search: minimum seconds per probe.")
]
ResolutionOption = Annotated[
    float,
    typer.Option(
        parser=finite_float,
        help="Peak search: stop when a bracket is this narrow (fraction of its top).",
    ),
]


@dataclass(frozen=True)
class NativeSide:
    """How the native onnxruntime side is built, where it differs from the model's config."""

    onnx: OnnxOption = None
    native_instances: NativeInstancesOption = None
    native_intra_threads: NativeIntraOption = None
    native_inter_threads: NativeInterOption = None
    native_batching: NativeBatchingOption = None
    native_max_batch: NativeMaxBatchOption = None
    native_queue_delay_us: NativeDelayOption = None
    provider: ProviderOption = None

    def overrides(self) -> dict[str, Any]:
        """The config values the flags override (those given)."""
        native = {
            "instances": self.native_instances,
            "intra_op_threads": self.native_intra_threads,
            "inter_op_threads": self.native_inter_threads,
            "dynamic_batching": self.native_batching,
            "max_batch_size": self.native_max_batch,
            "max_queue_delay_us": self.native_queue_delay_us,
            "providers": tuple(self.provider) if self.provider else None,
        }
        return {key: value for key, value in native.items() if value is not None}


@groups.takes_groups
def compare(
    *,
    model: options.ModelOption = DEFAULT_SERVER_MODEL,
    target: TargetOption = None,
    qps: RatesOption = None,
    run: Annotated[groups.RunLength, groups.take("max_duration", min_queries=MIN_QUERIES)],
    target_latency: options.TargetLatencyOption = None,
    percentile: options.PercentileOption = options.PERCENTILE,
    late_threshold: options.LateThresholdOption = options.LATE_THRESHOLD_MS,
    url: options.UrlOption = None,
    protocol: options.ProtocolOption = None,  # grpc unless told: compare is never auto-streamed
    http_url: HttpUrlOption = None,
    metrics_url: MetricsUrlOption = None,
    embedded: options.EmbeddedOption = EmbeddedMode.AUTO,
    repository: options.RepositoryOption = options.REPOSITORY,
    native: NativeSide,
    agreement_samples: AgreementOption = 4,
    peak: PeakOption = None,
    budget: BudgetOption = 600.0,
    probe_duration: ProbeDurationOption = 10.0,
    resolution: ResolutionOption = 0.05,
    seed: options.SeedOption = 0,
    samples: groups.SampleLibrary,
    shared_memory: options.SharedMemoryOption = SharedMemoryKind.NONE,
    timeout: options.TimeoutOption = options.TIMEOUT_S,
    server_timeout: options.ServerTimeoutOption = None,
    output: Annotated[groups.Output, groups.take("records", "html")],
    access: groups.Access,
    arrival: groups.Arrival,
    ttft_bound: options.TtftBoundOption = None,
    tpot_bound: options.TpotBoundOption = None,
    mlperf_model: options.MlperfModelOption = None,
) -> None:
    """Compare Triton with the same model in-process (onnxruntime) on the same schedule (Poisson
    unless --arrival, --stages or --trace says otherwise; a shape at each --qps as its mean).
    A decoder is judged by LoadGen's token bounds (--ttft-bound, --tpot-bound, --mlperf-model),
    its peak searched under them, or at fixed --qps by an end-to-end --target-latency."""
    # the native side reads the repository's one version: no --model-version here
    endpoint = groups.Endpoint(
        url=url,
        protocol=protocol or Protocol.GRPC,  # compare names its wire: no automatic stream
        timeout=timeout,
        server_timeout=server_timeout,
        embedded=embedded,
        repository=repository,
    )
    tokens = common.token_bound_fields(ttft_bound, tpot_bound, mlperf_model)
    if is_decoder(model):
        _decoder_flags(model, qps, peak, target_latency, tokens)
    elif tokens:
        raise SettingsError(
            f"--ttft-bound, --tpot-bound and --mlperf-model judge a streamed decoder's tokens: "
            f"{model} answers whole (judge it by --target-latency)"
        )
    bound_ns = (
        min(b for b in (tokens["ttft_bound_ns"], tokens["tpot_bound_ns"]) if b)
        if tokens  # the token rule's stand-in, for the send lag a client may show (find-peak's)
        else common.target_latency_ns(model, target_latency)
    )
    search = qps is None if peak is None else peak
    rates = qps or ([] if search else [DEFAULT_SERVER_QPS])
    # --qps stays: over a shape it is the shape's mean rate at each point, as a find-peak probe's
    arrival.check(False, run.duration is not None, False)
    law, prompts = groups.prompted_law(samples, arrival, arrival.law(), endpoint.wire)
    min_duration_ns = common.min_duration_ns(run.duration, False, DURATION_NS)
    min_query_count = run.min_queries
    if arrival.shaped:  # played whole at each rate (compare_run.at_rates)
        if run.min_queries != MIN_QUERIES:
            raise typer.BadParameter(
                "not with --stages or --trace, which are played whole", param_hint="'--min-queries'"
            )
        min_duration_ns = min_query_count = 1
    template = ServerSettings(
        qps=min(rates, default=DEFAULT_SERVER_QPS),
        target_latency_ns=bound_ns,
        percentile=percentile / 100,
        min_duration_ns=min_duration_ns,
        min_query_count=min_query_count,
        schedule_seed=seed,
        sample_seed=samples.sample_seed,
        sample_count=samples.samples,
        late_threshold_ns=int(late_threshold * NS_PER_MS),
        arrival_law=law,
        **tokens,
    )
    peak_settings = None
    if search:
        peak_settings = PeakSettings(
            target_latency_ns=template.target_latency_ns,
            percentile=template.percentile,
            probe_duration_ns=int(probe_duration * NS_PER_S),
            budget_ns=int(budget * NS_PER_S),
            resolution=resolution,
            schedule_seed=seed,
            sample_seed=samples.sample_seed,
            sample_count=samples.samples,
            late_threshold_ns=template.late_threshold_ns,
            arrival_law=law,
            **tokens,
        )
    setup = CompareSetup(
        flags=groups.target_flags(model, endpoint, samples, access, shared_memory, prompts),
        targets=target_names(target or DEFAULT_TARGETS, protocol or Protocol.GRPC),
        runs=at_rates(template, rates),
        http_url=http_url,
        metrics_url=metrics_url,
        onnx=native.onnx,
        native_overrides=native.overrides(),
        agreement_samples=agreement_samples,
        template=template,
    )
    _play_and_write(setup, peak_settings, output.output, output.force, output.live)


def _decoder_flags(
    model: str,
    qps: list[float] | None,
    peak: bool | None,
    target_latency: float | None,
    tokens: dict[str, Any],
) -> None:
    """A decoder is judged by LoadGen's token bounds (every run, and the peak search under
    them), or at fixed rates only by an end-to-end bound (STREAMING.md)."""
    if tokens:
        if target_latency is not None:
            raise SettingsError(
                "--target-latency is an end-to-end bound; with --ttft-bound, --tpot-bound or "
                "--mlperf-model every run is judged by LoadGen's token bounds only (its LLM keys "
                "set target_latency = 0)"
            )
        return
    if peak or not qps:
        raise SettingsError(
            f"{model}: a decoder's peak is searched under LoadGen's token bounds: pass "
            "--mlperf-model KEY or --ttft-bound MS / --tpot-bound MS (or play fixed rates with "
            "--qps and --target-latency)"
        )
    if target_latency is None:
        raise SettingsError(
            f"{model} has no end-to-end Server bound (MLPerf judges LLMs by p99 TTFT and TPOT): "
            "pass --mlperf-model KEY or --ttft-bound/--tpot-bound, or --target-latency MS to "
            "judge each run end to end"
        )


def _play_and_write(
    setup: CompareSetup,
    peak: PeakSettings | None,
    output: Path | None,
    force: bool,
    live: bool,
) -> None:
    """Play the comparison, show it, write compare.json. A stop signal during the runs writes
    what was measured (marked partial, exit 130/143); one before the first run writes nothing."""
    console = common.console
    stopping.reset()  # one command, one stop request
    common.check_outputs(output, None, force, COMPARE_FILES)
    try:
        with compare_run.opened(setup, common.say) as session:
            searching = " and a peak search" if peak is not None else ""
            view = PlaysProgress(
                console,
                setup.base.min_duration_ns / NS_PER_S,
                f"compare: {', '.join(setup.targets)} at {len(setup.runs)} rate(s){searching}",
                enabled=live,
            )

            def say(text: str) -> None:
                common.say(text)
                view.stage(text)

            try:
                with view:
                    result, peaks = timing.run(compare_peak_run.measure(session, setup, peak, say))
            except KeyboardInterrupt:
                console.print(
                    f"[yellow]{stopping.requested() or 'interrupted'}[/] before any run: no "
                    "compare.json written"
                )
                raise typer.Exit(stopping.exit_code()) from None
            targets = session.targets.values()
            environment = build_environment(next(iter(targets)), session.deployment)
        render_compare(console, setup, session, result, peaks)
        data = compare_json(
            setup,
            session,
            result,
            environment,
            time.time(),
            stop_reason=result.stop_reason,
            peaks=peaks,
        )
        saved = write_compare(data, output, setup.flags.model, force)
    finally:
        stopping.install_process_handlers()
    common.say_saved(saved)
    common.finish_or_stop(saved, "comparison", bool(result.stop_reason), result.stop_reason)
    exit_code = verdicts_exit_code([run.verdict for run in result.runs])
    if exit_code != ExitCode.OK:
        raise typer.Exit(exit_code)


def verdicts_exit_code(verdicts: list[Verdict]) -> ExitCode:
    """The README's table for a comparison: 0 while any row is VALID; with none VALID, 5 when
    every row was only client-bound, else 3 (#26: it exited 0 with every row INVALID)."""
    if not verdicts or any(v.valid for v in verdicts):
        return ExitCode.OK
    if all(v.client_bound for v in verdicts):
        return ExitCode.CLIENT_BOUND
    return ExitCode.INVALID
