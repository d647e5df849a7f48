"""One run end to end: find or start the server, open the target, build the samples (and the
references for --check-outputs), play the scenario while its server side is observed, verify, and
hand back the finished run.

Everything between parsing the flags and rendering the result is here, so a library caller, a
benchmark or a test runs a scenario exactly as a command does:

    with run_scenario(settings, flags, server_play(settings, client, flags)) as run:
        report = RunReport.from_run(run)

It is a context manager, not a plain function, because a command writes its result before an
embedded server stops (a stop signal by then waits: stopping.defer_signals), so the caller's
writing happens in its body. Rendering stays above this layer: the live view comes in as a factory
(`view`, given the run's heading), and report/results.RunReport.from_run builds the report.
A stop signal during the play ends it with a partial result instead of unwinding it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from loadtest.core.records import Records
from loadtest.core.settings import (
    NS_PER_S,
    ClientSettings,
    LoopKind,
    ScenarioSettings,
    ServerSettings,
    TargetSettings,
)
from loadtest.core.settings import Protocol as WireProtocol
from loadtest.core.slos import check_measurable
from loadtest.core.target import ModelSpec, Sample, Target
from loadtest.engine import stopping, timing
from loadtest.engine.measurement import Measurement
from loadtest.engine.prompts.library import PromptLibrary, sent_ignore_eos, sent_max_tokens
from loadtest.engine.runner import OnStart
from loadtest.engine.samples import prompt_library, random_samples, sample_library
from loadtest.engine.selfmeasure import Progress
from loadtest.errors import SettingsError, TargetError
from loadtest.observe.observer import RunObserver, ServerSide
from loadtest.observe.triton_statistics import TritonStatistics
from loadtest.rules.cache_check import CacheCheck
from loadtest.rules.output_check import OutputCheck
from loadtest.scenarios.mlperf import accuracy
from loadtest.scenarios.mlperf.cache_probe import PROBE_PAIRS, probe_cache
from loadtest.scenarios.mlperf.play import Generator, run_server
from loadtest.scenarios.target_flags import TargetFlags
from loadtest.server import deployment as deployment_module
from loadtest.server.deployment import Deployment
from loadtest.targets import target_for
from loadtest.targets.shared_memory import with_shared_memory
from loadtest.targets.triton_common import is_decoupled

Say = Callable[[str], None]
Tick = Callable[[Records | Progress, int], None]

# play(target, model, library size, live-view tick, the resolved target settings, on_start): the
# play awaits on_start at its t = 0 (see observe.observer.RunObserver).
Play = Callable[
    [Target, ModelSpec, int, Tick, TargetSettings, OnStart],
    Coroutine[Any, Any, Measurement],
]


class RunView(Protocol):
    """What the run shows while it plays (report/live.LiveView, or nothing): entered around the
    play, ticked by its runner."""

    def __enter__(self) -> object: ...

    def __exit__(self, *exc: object) -> None: ...

    def tick(self, data: Records | Progress, now_ns: int) -> None: ...


class NoView:
    """The view of a caller that shows nothing."""

    def __enter__(self) -> NoView:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def tick(self, data: Records | Progress, now_ns: int) -> None:
        return None


def no_view(heading: str) -> RunView:
    return NoView()


def _quiet(text: str) -> None:
    return None


@dataclass
class FinishedRun:
    """A run as measured, before interpretation: what RunReport.from_run is built from."""

    settings: ScenarioSettings  # as the run used them (Offline's `auto` resolved)
    requested: TargetSettings  # the target as asked
    resolved: TargetSettings  # the target as found or started
    measurement: Measurement
    target: Target  # closed by now; its description and server version stay readable
    deployment: Deployment  # still up inside run_scenario's `with`
    server_side: ServerSide | None = None  # Triton's split, server CPU, :8002 metrics
    output_check: OutputCheck | None = None  # --check-outputs
    cache_check: CacheCheck | None = None  # --same-sample
    prompts: PromptLibrary | None = None  # a text model's shaped prompts and their counts
    # each library sample's max_tokens as sent (-1: none), for requested vs achieved lengths
    max_tokens: np.ndarray | None = None
    ignore_eos: np.ndarray | None = None  # each library sample's ignore_eos input as sent

    @property
    def interrupted(self) -> bool:
        return self.measurement.outcome.interrupted


@contextlib.contextmanager
def connected(flags: TargetFlags, say: Say = _quiet) -> Iterator[tuple[Deployment, Target]]:
    """The deployment to measure (the embedded Triton started if needed) and a target for it."""
    requested = flags.target_settings()
    with deployment_module.resolve(requested, flags.embedded, flags.repository, say) as found:
        deployment = stream_if_decoupled(found, flags.protocol_given, say)
        target = target_for(deployment.target)
        yield deployment, with_shared_memory(target, flags.shared_memory, tag="main")


def stream_if_decoupled(deployment: Deployment, protocol_given: bool, say: Say) -> Deployment:
    """Without --protocol, a decoupled Triton model is streamed over grpc-stream rather than
    refused by the default unary gRPC (which Triton cannot serve it over): the model's config is
    read once, the switch said, and `protocol_choice` records it in result.json, so what was
    measured (TTFT/TPOT of a stream, not one latency per request) stays explicit. A config that
    cannot be read changes nothing: opening the target then says what is wrong."""
    target = deployment.target
    if (
        protocol_given
        or target.protocol is not WireProtocol.GRPC
        or target.url.startswith("fake://")
    ):
        return deployment
    statistics = TritonStatistics(
        target.url,
        target.protocol.value,
        target.model,
        target.model_version,
        tls=target.tls,
        headers=target.headers,
    )
    try:
        config = asyncio.run(statistics.model_config())
    except TargetError:
        return deployment
    if not is_decoupled(config):
        return deployment
    choice = (
        f"decoupled model {target.model!r}: streamed over grpc-stream (no --protocol given; "
        "Triton serves a decoupled model only on a stream)"
    )
    say(choice)
    streamed = replace(target, protocol=WireProtocol.GRPC_STREAM, protocol_choice=choice)
    return replace(deployment, target=streamed)


@contextlib.contextmanager
def run_scenario(
    settings: ScenarioSettings,
    flags: TargetFlags,
    play: Play,
    title: str = "run",
    *,
    view: Callable[[str], RunView] = no_view,
    say: Say = _quiet,
    batch_size: int = 1,
    loop: LoopKind = LoopKind.PRECISE,
    settings_used: Callable[[], ScenarioSettings] | None = None,
) -> Iterator[FinishedRun]:
    """Find or start the server, play `play` on it, and yield the FinishedRun with the deployment
    still up; see the module docstring. `settings_used`, when given, returns after the run the
    settings it actually ran under (Offline's `--expected-qps auto` is resolved inside `play`).
    `view` is called once with the heading ("TITLE against TARGET") before the target opens.

    The process's signal handlers are put back when the `with` ends, whatever ends it.
    """
    requested = flags.target_settings()
    observer = RunObserver()
    checks: dict[str, Any] = {}
    try:
        with connected(flags, say) as (deployment, target):
            resolved = deployment.target
            shown = view(f"{title} against {target.description}")

            async def measure() -> Measurement:
                closed = False
                try:
                    spec = await target.open()
                    ready = await _prepare(target, spec, settings, flags, resolved, batch_size, say)
                    checks["prompts"] = ready.prompts
                    checks["max_tokens"] = sent_max_tokens(spec, ready.library)
                    checks["ignore_eos"] = sent_ignore_eos(spec, ready.library)
                    # From here a stop signal ends the run with a result instead of unwinding it.
                    with shown, stopping.catching(asyncio.get_running_loop()):
                        try:
                            measurement = await observer.around(
                                target,
                                lambda on_start: play(
                                    target, spec, len(ready.library), shown.tick, resolved,
                                    on_start,
                                ),
                            )  # fmt: skip
                            if settings.same_sample and not measurement.outcome.interrupted:
                                checks["cache"] = await _cache_check(target, ready, settings)
                        finally:
                            closed = True
                            await target.close()
                    stopping.defer_signals()  # a signal now waits until the result is written
                    if settings.check_outputs:
                        checks["outputs"] = accuracy.verify(
                            measurement.outcome,
                            target,
                            ready.references,
                            settings.check_outputs,
                            settings.sample_seed,
                            ready.reference,
                        )
                    return measurement
                finally:
                    if not closed:
                        await target.close()

            measurement = timing.run(measure(), loop.value)
            yield FinishedRun(
                settings=settings_used() if settings_used is not None else settings,
                requested=requested,
                resolved=resolved,
                measurement=measurement,
                target=target,
                deployment=deployment,
                server_side=observer.result,
                output_check=checks.get("outputs"),
                cache_check=checks.get("cache"),
                prompts=checks.get("prompts"),
                max_tokens=checks.get("max_tokens"),
                ignore_eos=checks.get("ignore_eos"),
            )
    finally:
        stopping.install_process_handlers()


@dataclass
class _Prepared:
    """What the run needs ready before its clock starts."""

    library: list[Sample]  # the run's samples
    probe: list[Sample]  # --same-sample's unique samples, beyond the library
    probe_seed: int
    references: accuracy.References  # --check-outputs' expected answers
    reference: str  # where they came from
    prompts: PromptLibrary | None = None  # a text model's shaped prompts


async def _prepare(
    target: Target,
    spec: ModelSpec,
    settings: ScenarioSettings,
    flags: TargetFlags,
    resolved: TargetSettings,
    batch_size: int,
    say: Say,
) -> _Prepared:
    """The sample library (and the probe's samples), prepared on the target, and the reference
    outputs for --check-outputs: all before the clock starts, so the run pays nothing for them.
    A --slo the target cannot measure (ttft on an answer not in parts) stops here, before load."""
    if isinstance(settings, ServerSettings):
        check_measurable(settings.slos, target.capabilities.streams_parts, target.description)
    count, seed = settings.sample_count, settings.sample_seed
    prompts = prompt_library(
        spec, count, seed, flags.input_data, flags.shapes, batch_size, flags.prompts
    )
    library = (
        prompts.samples
        if prompts is not None
        else sample_library(spec, count, seed, flags.input_data, flags.shapes, batch_size)
    )
    # --same-sample's unique samples: beyond the run's library, never sent by it, and drawn
    # afresh each run (a seed from the OS, written to result.json): a fixed seed would send the
    # same "unique" samples as the last run, which a response cache already holds.
    probe_seed = secrets.randbits(63)
    probe = (
        random_samples(spec, PROBE_PAIRS, probe_seed, flags.shapes, batch_size)
        if settings.same_sample
        else []
    )
    await target.prepare([*library, *probe])
    ready = _Prepared(library, probe, probe_seed, [], "", prompts)
    if settings.check_outputs:
        if not target.capabilities.keeps_outputs:
            raise SettingsError(f"--check-outputs: {target.description} cannot keep its answers")
        say("--check-outputs: computing reference outputs with onnxruntime")
        ready.references, ready.reference = await accuracy.references_for(
            resolved.url, flags.repository, resolved.model, library
        )
    return ready


async def _cache_check(target: Target, ready: _Prepared, settings: ScenarioSettings) -> CacheCheck:
    """--same-sample's interleaved probe, after the run, on the samples it never sent."""
    unique = list(range(len(ready.library), len(ready.library) + len(ready.probe)))
    found = await probe_cache(target, 0, unique, settings.sample_seed)
    return replace(found, unique_seed=ready.probe_seed)


def server_play(settings: ServerSettings, client: ClientSettings, flags: TargetFlags) -> Play:
    """The Server scenario's play: Poisson arrivals at settings.qps, on the client's workers."""
    drain_timeout_ns = int((flags.timeout_s + 5) * NS_PER_S)
    return lambda target, spec, count, tick, resolved, on_start: run_server(
        target,
        spec,
        count,
        settings,
        drain_timeout_ns,
        on_tick=tick,
        generator=Generator(client, resolved, flags.input_data, flags.shapes, flags.prompts),
        on_start=on_start,
    )
