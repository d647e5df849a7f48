"""`loadtest compare` played: Triton and native onnxruntime on the same schedule.

Every target gets the same model, seed, sample library and QPS list; the native side mirrors the
model's config.pbtxt (instances, dynamic batching, threads) unless told otherwise, so a batched
server is never set against an unbatched native run by accident. Before the runs, each Triton
target's outputs are checked against native's on the first samples. Runs go QPS by QPS, each target
in turn, so slow drift on a shared machine spreads over all targets alike. The schedule is
Poisson unless the arrival law says otherwise; over a shape (load stages, a trace) each rate is
the shape's mean, the shape played whole, scaled as a find-peak probe scales it, and a staged run
is VALID only if every stage is (rules/stage_results.py).

Targets: `triton` is Triton over --protocol; `triton-grpc`, `triton-http`, `triton-grpc-stream`
and `triton-http-stream` name the protocol outright. --url is the address of the --protocol side;
the other protocol is reached on the same host at its default port (or at --http-url). The Triton
targets may pass tensors through shared memory; the native target runs in this process and cannot.

A streamed (LLM) model, the suite decoder: the Triton targets speak a stream protocol and the
native side is `NativeDecoderTarget`, the same generation loop (models/decoding.py) and step
scheduling as its Triton model.py, in this process, with model.py's thread settings (intra-op
from the config, inter-op 1, spinning off). Its outputs are compared by token count (greedy
decoding: the same prompt gives the same answer); the token figures are analysis/token_overhead's.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.core.arrivals import Timestamps
from loadtest.core.settings import (
    NS_PER_S,
    Protocol,
    ServerSettings,
    SharedMemoryKind,
    TargetSettings,
)
from loadtest.core.stages import Staged, StagedArrivals
from loadtest.core.target import ModelSpec, Sample, Target
from loadtest.engine import stopping
from loadtest.engine.measurement import Measurement
from loadtest.engine.samples import sample_library
from loadtest.errors import SettingsError, TargetError
from loadtest.observe.metrics import fetch, fetcher_for
from loadtest.observe.observer import ServerObserver, ServerSide, triton_protocol
from loadtest.observe.triton_statistics import TritonStatistics
from loadtest.rules.stage_results import StageResult, stage_results, stages_check
from loadtest.rules.stats import Summary
from loadtest.rules.validity import Verdict, with_check
from loadtest.scenarios.mlperf.interpret import interpret_server, interpret_server_tokens
from loadtest.scenarios.mlperf.play import run_server
from loadtest.scenarios.target_flags import TargetFlags
from loadtest.server import deployment as deployment_module
from loadtest.server.deployment import Deployment
from loadtest.targets import target_for
from loadtest.targets.batcher import BatcherStats
from loadtest.targets.native import NativeOptions, NativeTarget
from loadtest.targets.native_decoder import NativeDecoderTarget
from loadtest.targets.shared_memory import with_shared_memory
from loadtest.targets.triton_common import DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT, host_port

Say = Callable[[str], None]

NATIVE = "native"
TRITON_GRPC = "triton-grpc"
TRITON_HTTP = "triton-http"
TRITON_GRPC_STREAM = "triton-grpc-stream"
TRITON_HTTP_STREAM = "triton-http-stream"
TOKEN_COUNT = "num_output_tokens"  # what a decoder's two sides are held to agree on


class CompareTarget(str, enum.Enum):
    """What `-t/--target` names."""

    TRITON = "triton"  # Triton over --protocol
    TRITON_GRPC = TRITON_GRPC
    TRITON_HTTP = TRITON_HTTP
    TRITON_GRPC_STREAM = TRITON_GRPC_STREAM
    TRITON_HTTP_STREAM = TRITON_HTTP_STREAM
    NATIVE = NATIVE


DEFAULT_TARGETS = (CompareTarget.TRITON, CompareTarget.NATIVE)


def target_names(kinds: Sequence[CompareTarget], protocol: Protocol) -> tuple[str, ...]:
    """The targets to play, in order, once each: `triton` becomes triton-<protocol>."""
    names = [f"triton-{protocol.value}" if k is CompareTarget.TRITON else k.value for k in kinds]
    return tuple(dict.fromkeys(names))


def _protocol(name: str) -> Protocol:
    return Protocol(name.removeprefix("triton-"))


def is_decoder(model: str) -> bool:
    """A suite model served as a decoupled Python-backend decoder (its answers stream)."""
    from loadtest.models import SUITE

    return model in SUITE and SUITE[model].backend == "python"


@dataclass(frozen=True, kw_only=True)
class CompareSetup:
    """What to compare, checked: the targets, one ServerSettings per QPS, and the native side."""

    flags: TargetFlags
    targets: tuple[str, ...]  # from target_names()
    runs: tuple[ServerSettings, ...]  # one per QPS, ascending; from at_rates(); () = none fixed
    http_url: str | None = None
    metrics_url: str | None = None
    onnx: Path | None = None
    native_overrides: Mapping[str, Any] = field(default_factory=dict)
    agreement_samples: int = 4
    # What every run shares (bound, samples, seeds) when no fixed rate is played (a peak search
    # only); default: the first fixed run.
    template: ServerSettings | None = None

    def __post_init__(self) -> None:
        if not self.runs and self.template is None:
            raise SettingsError("compare needs a rate (--qps) or a peak search")
        if self.agreement_samples < 0:
            raise SettingsError("--agreement-samples must be ≥ 0")
        memory = self.flags.shared_memory
        if NATIVE in self.targets and memory is not SharedMemoryKind.NONE:
            raise SettingsError(
                f"--shared-memory {memory.value} is for Triton targets: the native target runs "
                "in this process (drop -t native, or --shared-memory)"
            )
        if self.http_url and self.flags.protocol is Protocol.HTTP:
            raise SettingsError("--http-url goes with --protocol grpc; with http, give --url")
        if self.flags.protocol.is_openai:
            raise SettingsError(
                "compare measures Triton against the same model in-process; --protocol "
                f"{self.flags.protocol.value} (an OpenAI-compatible server) is not offered there"
            )
        self._check_streams()

    def _check_streams(self) -> None:
        """A decoder's Triton targets all stream, a tensor model's none; the native decoder
        takes model.py's own settings, so the tensor native side's overrides are refused."""
        model = self.flags.model
        streamed = [_protocol(name).streams for name in self.tritons]
        if any(streamed) and not all(streamed):
            raise SettingsError(
                "compare plays one kind of answer: stream targets (triton-grpc-stream, "
                "triton-http-stream) and unary ones (triton-grpc, triton-http) do not mix"
            )
        if is_decoder(model) and not all(streamed):
            raise SettingsError(
                f"{model} is a streamed decoder: compare it over --protocol grpc-stream or "
                "http-stream (or -t triton-grpc-stream / -t triton-http-stream)"
            )
        if self.streams and (self.onnx is not None or self.native_overrides):
            raise SettingsError(
                "--onnx and --native-*/--provider are the tensor native side's: the native "
                "decoder runs its model.py's settings (one step runner, intra-op threads from "
                "config.pbtxt, inter-op 1, spinning off)"
            )

    @property
    def base(self) -> ServerSettings:
        """The settings every run shares (its QPS is one run's, or a placeholder)."""
        return self.template if self.template is not None else self.runs[0]

    @property
    def tritons(self) -> tuple[str, ...]:
        return tuple(name for name in self.targets if name != NATIVE)

    @property
    def streams(self) -> bool:
        """Answers come in parts (a decoder): the native side is the in-process decoder loop."""
        if self.tritons:
            return _protocol(self.tritons[0]).streams
        return is_decoder(self.flags.model)


def at_rates(template: ServerSettings, rates: Sequence[float]) -> tuple[ServerSettings, ...]:
    """`template` at each distinct rate, ascending (each one validated). A trace is sped up to
    each rate (load stages scale with `qps` themselves)."""
    law = template.arrival_law

    def at(rate: float) -> ServerSettings:
        if isinstance(law, Timestamps):
            return replace(template, qps=rate, arrival_law=law.at_rate(rate))
        return replace(template, qps=rate)

    return tuple(at(rate) for rate in sorted(set(rates)))


@dataclass(frozen=True)
class CompareRun:
    """One target at one QPS: everything measured, interpreted."""

    target: str  # triton-grpc / triton-http / native
    description: str
    settings: ServerSettings
    measurement: Measurement
    summary: Summary
    verdict: Verdict
    server_side: ServerSide | None
    batcher: Mapping[str, Any] | None = None  # native dynamic batcher: batches formed
    stages: tuple[StageResult, ...] = ()  # over load stages: each judged alone (in the verdict)


@dataclass(frozen=True)
class CompareResult:
    spec: ModelSpec
    runs: tuple[CompareRun, ...]
    agreement: dict[str, float | None]  # largest |Triton − native| per Triton target
    triton_config: dict[str, Any] | None  # triton_config_summary() of the served model
    stop_reason: str = ""  # why the comparison stopped early (SIGINT, SIGTERM); "" = it did not


@dataclass(frozen=True)
class CompareSession:
    """The targets, open for the comparison, and where Triton was found."""

    targets: dict[str, Target]
    native: NativeTarget | NativeDecoderTarget | None
    deployment: Deployment  # an in-process placeholder when only native is compared
    urls: dict[str, str]  # triton-grpc / triton-http -> address ({} without Triton)
    metrics_url: str | None  # the embedded server's, else --metrics-url
    server_pid: int | None  # the embedded server's: its CPU is measured


# --- checks ------------------------------------------------------------------------------------
def _inputs_line(spec: ModelSpec) -> str:
    batching = f"batching ≤ {spec.max_batch_size}" if spec.max_batch_size else "no batch dim"
    tensors = ", ".join(f"{t.name} {t.datatype} {list(t.shape)}" for t in spec.inputs)
    return f"{tensors} ({batching})"


def check_specs_agree(specs: dict[str, ModelSpec]) -> ModelSpec:
    """The first spec, after checking every target takes the same inputs; TargetError if not."""
    items = list(specs.items())
    first_name, first = items[0]

    def key(spec: ModelSpec) -> tuple[Any, ...]:
        return (
            tuple(sorted((t.name, t.datatype, t.shape) for t in spec.inputs)),
            spec.max_batch_size > 0,
        )

    for name, spec in items[1:]:
        if key(spec) != key(first):
            raise TargetError(
                f"targets disagree on the model's inputs: {first_name} takes "
                f"{_inputs_line(first)}, {name} takes {_inputs_line(spec)}"
            )
    return first


def max_abs_difference(
    outputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]
) -> float:
    """Largest |a − b| over every output tensor; ValueError when names or shapes differ."""
    if set(outputs) != set(reference):
        raise ValueError(
            f"outputs differ: {sorted(outputs)} against {sorted(reference)} on the native side"
        )
    worst = 0.0
    for name, value in outputs.items():
        a = np.asarray(value, dtype=np.float64)
        b = np.asarray(reference[name], dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError(f"output {name!r} has shape {a.shape}, native {b.shape}")
        if a.size:
            worst = max(worst, float(np.max(np.abs(a - b))))
    return worst


def triton_config_summary(config: dict[str, Any]) -> dict[str, Any]:
    """The serving settings that matter for the comparison, from Triton's JSON model config."""
    dynamic = config.get("dynamic_batching")
    parameters = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
    groups = config.get("instance_group") or []
    return {
        "max_batch_size": int(config.get("max_batch_size", 0)),
        "dynamic_batching": dynamic is not None,
        "max_queue_delay_us": int((dynamic or {}).get("max_queue_delay_microseconds", 0) or 0),
        "instances": sum(int(g.get("count", 1) or 1) for g in groups) or 1,
        "instance_kinds": sorted({str(g.get("kind", "")) for g in groups}),
        "intra_op_thread_count": parameters.get("intra_op_thread_count"),
        "inter_op_thread_count": parameters.get("inter_op_thread_count"),
        "backend": config.get("backend") or config.get("platform") or "",
    }


# --- opening the targets -----------------------------------------------------------------------
def _native_target(setup: CompareSetup, say: Say) -> NativeTarget | NativeDecoderTarget:
    overrides = dict(setup.native_overrides)
    if setup.onnx is not None:
        return NativeTarget.from_onnx(setup.onnx, NativeOptions(**overrides))
    flags = setup.flags
    deployment_module.ensure_model_built(flags.repository, flags.model, say)
    if setup.streams:
        return NativeDecoderTarget.from_repository(flags.repository, flags.model, flags.timeout_s)
    return NativeTarget.from_repository(flags.repository, flags.model, overrides)


def _by_name(grpc: str, http: str) -> dict[str, str]:
    """Each Triton target name's address: the gRPC port's or the HTTP port's."""
    return {
        TRITON_GRPC: grpc,
        TRITON_HTTP: http,
        TRITON_GRPC_STREAM: grpc,
        TRITON_HTTP_STREAM: http,
    }


def _addresses(setup: CompareSetup) -> dict[str, str]:
    """Both protocols' addresses as asked: --url for --protocol, the other at the same host."""
    flags = setup.flags
    given = flags.target_settings().url
    if given.startswith("fake://"):  # the in-process fake answers any protocol
        return _by_name(given, given)
    host = host_port(given, deployment_module.default_port(flags.protocol)).rsplit(":", 1)[0]
    # The other protocol keeps the given one's security: TLS asked for, or implied by the scheme.
    secure = flags.access.tls is not None or given.startswith(("https://", "grpcs://"))
    grpc_scheme, http_scheme = ("grpcs://", "https://") if secure else ("", "")
    if not flags.protocol.over_grpc:
        return _by_name(f"{grpc_scheme}{host}:{DEFAULT_GRPC_PORT}", given)
    other = setup.http_url or f"{http_scheme}{host}:{DEFAULT_HTTP_PORT}"
    return _by_name(given, other)


def _settings_for(setup: CompareSetup, name: str, url: str) -> TargetSettings:
    """One Triton target's settings: its protocol and address, the shared TLS and headers.

    The headers are those of --url's own settings: a password in --url is there as its Basic
    Authorization header, while `url` (from _addresses) shows `***` in its place (#26)."""
    flags = setup.flags
    return TargetSettings(
        url=url,
        protocol=_protocol(name),
        model=flags.model,
        request_timeout_s=flags.timeout_s,
        tls=flags.access.tls,
        headers=flags.target_settings().headers,
    )


def _deployment(
    setup: CompareSetup, addresses: dict[str, str], say: Say
) -> contextlib.AbstractContextManager[Deployment | None]:
    """The Triton to measure (the first Triton target's), started if need be; None without one."""
    flags = setup.flags
    if not setup.tritons:
        return contextlib.nullcontext(None)
    first = setup.tritons[0]
    wanted = _settings_for(setup, first, addresses[first])
    return deployment_module.resolve(wanted, flags.embedded, flags.repository, say)


def _triton(setup: CompareSetup, name: str, url: str) -> Target:
    target = target_for(_settings_for(setup, name, url))
    return with_shared_memory(target, setup.flags.shared_memory, tag=_protocol(name).value)


@contextlib.contextmanager
def opened(setup: CompareSetup, say: Say) -> Iterator[CompareSession]:
    """Build the native side, find or start Triton, and make one target per name."""
    native = _native_target(setup, say) if NATIVE in setup.targets else None
    addresses = _addresses(setup) if setup.tritons else {}
    with _deployment(setup, addresses, say) as found:
        deployment: Deployment = found or Deployment(
            TargetSettings(url="in-process", model=setup.flags.model), None
        )
        urls, metrics, pid = addresses, setup.metrics_url, None
        if deployment.embedded is not None:
            embedded = deployment.embedded
            urls = _by_name(embedded.grpc_url, embedded.http_url)
            metrics, pid = embedded.metrics_url, embedded.pid
        # a tensor model's files name its unary addresses, a decoder's its stream ones
        urls = {k: v for k, v in urls.items() if _protocol(k).streams == setup.streams}
        targets: dict[str, Target] = {}
        for name in setup.targets:
            if name == NATIVE:
                assert native is not None
                targets[name] = native
            else:
                targets[name] = _triton(setup, name, urls[name])
        yield CompareSession(targets, native, deployment, urls, metrics, pid)


# --- measuring -----------------------------------------------------------------------------------
async def measure(
    session: CompareSession,
    setup: CompareSetup,
    say: Say,
    then: Callable[[ModelSpec, int], Awaitable[None]] | None = None,
) -> CompareResult:
    """Open every target, check outputs against native, then play every QPS on each in turn;
    then `then(spec, sample_count)` while the targets are still open (the peak search, which
    lives in a higher layer: scenarios/searches/compare_peak_run.py).

    A stop signal (SIGINT, SIGTERM) during the runs ends the comparison with the runs measured
    so far (`stop_reason` says why); before the first run it raises KeyboardInterrupt."""
    opened_targets: list[Target] = []
    try:
        spec, library = await _open_all(session, setup, opened_targets)
        agreement = await _agreement(session, len(library), setup.agreement_samples, setup.streams)
        config, probes = await _triton_side(session, setup)
        try:
            # A stop signal from here on ends the comparison with what was measured.
            with stopping.catching(asyncio.get_running_loop()):
                runs, stop_reason = await _play_all(session, setup, spec, len(library), probes, say)
                if then is not None and not stop_reason:
                    await then(spec, len(library))
            stopping.defer_signals()  # a signal now waits until compare.json is written
        finally:
            for probe in probes.values():
                await probe.close()
        return CompareResult(spec, tuple(runs), agreement, config, stop_reason)
    finally:
        for target in opened_targets:
            await target.close()


async def _open_all(
    session: CompareSession, setup: CompareSetup, opened_targets: list[Target]
) -> tuple[ModelSpec, list[Sample]]:
    specs: dict[str, ModelSpec] = {}
    for name, target in session.targets.items():
        specs[name] = await target.open()
        opened_targets.append(target)
    spec = check_specs_agree(specs)
    flags, first = setup.flags, setup.base
    library = sample_library(
        spec,
        first.sample_count,
        first.sample_seed,
        flags.input_data,
        flags.shapes,
        prompts=flags.prompts,
    )
    for target in session.targets.values():
        await target.prepare(library)
    return spec, library


async def _agreement(
    session: CompareSession, count: int, wanted: int, streams: bool = False
) -> dict[str, float | None]:
    """Largest |output − native output| over the first `wanted` samples, per Triton target; for
    a decoder, of the token count alone (the stream targets keep no text)."""
    native = session.native
    if native is None:
        return {}
    agreement: dict[str, float | None] = {}
    for name, target in session.targets.items():
        if name == NATIVE:
            continue
        worst = 0.0
        for i in range(min(wanted, count)):
            reference = await native.infer_outputs(i)
            try:
                outputs = await target.infer_outputs(i)
                if streams:
                    outputs, reference = _token_counts(outputs), _token_counts(reference)
                worst = max(worst, max_abs_difference(outputs, reference))
            except ValueError as exc:
                raise TargetError(f"{name} against native: {exc}") from None
        agreement[name] = worst if wanted else None
    return agreement


def _token_counts(outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if TOKEN_COUNT not in outputs:
        raise ValueError(f"no {TOKEN_COUNT} among the outputs {sorted(outputs)}")
    return {TOKEN_COUNT: outputs[TOKEN_COUNT]}


async def _triton_side(
    session: CompareSession, setup: CompareSetup
) -> tuple[dict[str, Any] | None, dict[str, ServerObserver]]:
    """The served model's config and one server-side probe per (real) Triton target."""
    model = setup.flags.model
    config: dict[str, Any] | None = None
    probes: dict[str, ServerObserver] = {}
    for name in setup.tritons:
        protocol = triton_protocol(session.targets[name])
        if protocol is None:  # the in-process fake: no server side to read
            continue
        access = setup.flags.access
        statistics = TritonStatistics(
            session.urls[name], protocol, model, tls=access.tls, headers=access.headers
        )
        if config is None:
            with contextlib.suppress(TargetError):
                config = triton_config_summary(await statistics.model_config())
        metrics = session.metrics_url
        fetcher: Callable[[str], str] = fetch
        if metrics:
            host = statistics.url.rsplit(":", 1)[0]
            fetcher = fetcher_for(metrics, host, access.tls, access.headers)
        probes[name] = ServerObserver(statistics, model, session.server_pid, metrics, fetcher)
    return config, probes


async def _play_all(
    session: CompareSession,
    setup: CompareSetup,
    spec: ModelSpec,
    count: int,
    probes: dict[str, ServerObserver],
    say: Say,
) -> tuple[list[CompareRun], str]:
    """Every run, QPS by QPS; and why they stopped early ("" when all ran)."""
    runs: list[CompareRun] = []
    drain_timeout_ns = int((setup.flags.timeout_s + 5) * NS_PER_S)
    for settings in setup.runs:
        for name in session.targets:
            if stopping.requested():
                return runs, stopping.requested()
            say(f"{name}: {settings.qps:g} QPS {_length(settings)}")
            run = await _play_one(
                session, name, settings, (spec, count), probes.get(name), drain_timeout_ns
            )
            runs.append(run)
            if run.measurement.outcome.interrupted:
                return runs, run.measurement.outcome.stop_reason
    return runs, ""


def _length(settings: ServerSettings) -> str:
    """How long a run plays: its minimum duration, or a shape played whole."""
    law = settings.arrival_law
    if isinstance(law, (Staged, Timestamps)):
        return f"({getattr(law, 'label', law.name)}, played whole)"
    return f"for ≥ {settings.min_duration_ns / NS_PER_S:g} s"


async def _play_one(
    session: CompareSession,
    name: str,
    settings: ServerSettings,
    library: tuple[ModelSpec, int],
    probe: ServerObserver | None,
    drain_timeout_ns: int,
) -> CompareRun:
    """One Server-scenario run of one target, with its server side or its native batcher."""
    target = session.targets[name]
    native = session.native if name == NATIVE else None
    spec, count = library
    if probe:
        await probe.start()
    before = native.batcher_stats if native else None
    measurement = await run_server(target, spec, count, settings, drain_timeout_ns)
    side = await probe.finish(measurement) if probe else None
    if settings.ttft_bound_ns or settings.tpot_bound_ns:  # a decoder under LoadGen's LLM rule
        summary, verdict = interpret_server_tokens(settings, measurement.outcome)
    else:
        summary, verdict = interpret_server(settings, measurement.outcome)
    stages: tuple[StageResult, ...] = ()
    arrivals = settings.arrivals
    if isinstance(arrivals, StagedArrivals):  # VALID only if every stage is, as `server` judges
        records = measurement.outcome.records
        stages = stage_results(records, arrivals, settings.target_latency_ns, settings.percentile)
        verdict = with_check(verdict, stages_check(stages))
    batcher = _batches_since(native, before) if native else None
    return CompareRun(
        name, target.description, settings, measurement, summary, verdict, side, batcher, stages
    )


def _batches_since(
    native: NativeTarget | NativeDecoderTarget, before: BatcherStats | None
) -> dict[str, Any] | None:
    """The batches the native dynamic batcher formed since `before` (None: no batcher)."""
    after = native.batcher_stats
    if after is None or before is None:
        return None
    sizes = after.batch_sizes[len(before.batch_sizes) :]
    waits = after.queue_wait_ns[len(before.queue_wait_ns) :]
    return {
        "batches": len(sizes),
        "mean_batch_size": sum(sizes) / len(sizes) if sizes else 0.0,
        "max_batch_size_formed": max(sizes, default=0),
        "max_queue_wait_ns": max(waits, default=0),
    }
