"""`loadtest compare`: the Server scenario against Triton and native onnxruntime, same schedule.

Every target gets the same model, seed, sample library and QPS list; the native side mirrors the
model's config.pbtxt (instances, dynamic batching, threads) unless told otherwise, so a batched
server is never set against an unbatched native run by accident. Runs go QPS by QPS, each target in
turn, so slow drift on a shared machine spreads over all targets alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from loadtest.analysis.compare import NATIVE, max_abs_difference, relative
from loadtest.commands.common import (
    ForceOption,
    ServerTimeoutOption,
    check_outputs,
    finish_saving,
    parse_shapes,
    target_latency_ns,
)
from loadtest.core.settings import (
    LATE_THRESHOLD_NS,
    NS_PER_MS,
    NS_PER_S,
    Protocol,
    ServerSettings,
    TargetSettings,
)
from loadtest.core.target import ModelSpec, Target
from loadtest.engine import stopping, timing
from loadtest.engine.samples import random_samples
from loadtest.errors import SettingsError, TargetError
from loadtest.models import DEFAULT_SERVER_MODEL, DEFAULT_SERVER_QPS
from loadtest.observe.probe import ServerProbe
from loadtest.observe.triton_statistics import TritonStatistics
from loadtest.report.compare_report import (
    COMPARE_FILES,
    CompareRun,
    compare_json,
    relative_table,
    runs_table,
    split_table,
    write_compare,
)
from loadtest.report.results import build_environment
from loadtest.scenarios.interpret import interpret_server
from loadtest.scenarios.play import run_server
from loadtest.server import deployment as deployment_module
from loadtest.server.deployment import Deployment
from loadtest.targets import triton_target
from loadtest.targets.native import NativeOptions, NativeTarget
from loadtest.targets.triton_common import DEFAULT_HTTP_PORT, host_port

console = Console()
notes = Console(stderr=True)


class TargetKind(str, enum.Enum):
    TRITON_GRPC = "triton-grpc"
    TRITON_HTTP = "triton-http"
    NATIVE = "native"


PROTOCOL = {TargetKind.TRITON_GRPC: "grpc", TargetKind.TRITON_HTTP: "http"}


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


def _restore_signals_on_error(exc_type: type[BaseException] | None, *_: object) -> bool:
    """After a failure, SIGINT/SIGTERM interrupt again (a result being written defers them)."""
    if exc_type is not None:
        stopping.install_process_handlers()
    return False


def _native_target(
    model: str,
    repository: Path,
    onnx: Path | None,
    overrides: dict[str, Any],
    say: Any,
) -> NativeTarget:
    if onnx is not None:
        return NativeTarget.from_onnx(onnx, NativeOptions(**overrides))
    deployment_module.ensure_model_built(repository, model, say)
    return NativeTarget.from_repository(repository, model, overrides)


def compare(
    model: Annotated[str, typer.Option("--model", "-m", help="Model to compare.")] = (
        DEFAULT_SERVER_MODEL
    ),
    target: Annotated[
        list[TargetKind] | None,
        typer.Option("--target", "-t", help="Repeatable [default: triton-grpc and native]."),
    ] = None,
    qps: Annotated[
        list[float] | None,
        typer.Option(help=f"Scheduled Poisson rate; repeatable [default: {DEFAULT_SERVER_QPS:g}]."),
    ] = None,
    duration: Annotated[float, typer.Option(help="Minimum duration of each run (s).")] = 10.0,
    min_queries: Annotated[int, typer.Option(help="Minimum queries per run.")] = 100,
    target_latency: Annotated[
        float | None,
        typer.Option(help="Latency bound in ms (default: the model's MLPerf Server bound)."),
    ] = None,
    percentile: Annotated[float, typer.Option(help="Percentile the bound applies to.")] = 99.0,
    late_threshold: Annotated[
        float, typer.Option(help="A send later than this (ms) counts as late.")
    ] = LATE_THRESHOLD_NS / NS_PER_MS,
    url: Annotated[
        str | None, typer.Option(help="Remote Triton gRPC address [default: 127.0.0.1:8001].")
    ] = None,
    http_url: Annotated[
        str | None, typer.Option(help="Remote Triton HTTP address [default: --url's host:8000].")
    ] = None,
    metrics_url: Annotated[
        str | None,
        typer.Option(help="Triton metrics URL for a remote server (embedded: automatic)."),
    ] = None,
    embedded: Annotated[
        deployment_module.EmbeddedMode,
        typer.Option(help="Start the embedded Triton: auto = when nothing answers on loopback."),
    ] = deployment_module.EmbeddedMode.AUTO,
    repository: Annotated[
        Path, typer.Option(help="Model repository (embedded Triton and the native side).")
    ] = Path("model_repository"),
    onnx: Annotated[
        Path | None, typer.Option(help="Native side: this .onnx instead of the repository's.")
    ] = None,
    native_instances: Annotated[
        int | None, typer.Option(help="Native workers [default: config's instance count].")
    ] = None,
    native_intra_threads: Annotated[
        int | None, typer.Option(help="Native ORT intra-op threads [default: config].")
    ] = None,
    native_inter_threads: Annotated[
        int | None, typer.Option(help="Native ORT inter-op threads [default: config].")
    ] = None,
    native_batching: Annotated[
        bool | None,
        typer.Option(help="Native dynamic batching on/off [default: as config.pbtxt]."),
    ] = None,
    native_max_batch: Annotated[
        int | None, typer.Option(help="Native max batch size [default: config].")
    ] = None,
    native_queue_delay_us: Annotated[
        int | None, typer.Option(help="Native batcher max queue delay µs [default: config].")
    ] = None,
    provider: Annotated[
        list[str] | None,
        typer.Option(help="Native execution provider: cpu, cuda, tensorrt (repeatable)."),
    ] = None,
    agreement_samples: Annotated[
        int, typer.Option(help="Samples whose outputs are compared against native.")
    ] = 4,
    seed: Annotated[int, typer.Option(help="Schedule (arrival times) seed.")] = 0,
    sample_seed: Annotated[int, typer.Option(help="Sample order and random-input seed.")] = 1,
    samples: Annotated[int, typer.Option(help="Size of the in-memory sample library.")] = 64,
    shape: Annotated[
        list[str] | None, typer.Option(help="Concrete shape for a dynamic input: NAME:D1,D2,...")
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Per-request deadline in seconds (error kind 'timeout').")
    ] = 30.0,
    server_timeout: ServerTimeoutOption = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Directory for compare.json [default: results/<time>-compare-<model>]."),
    ] = None,
    force: ForceOption = False,
) -> None:
    """Compare Triton with the same model in-process (onnxruntime) on the same Poisson schedule."""
    kinds = list(dict.fromkeys(target or [TargetKind.TRITON_GRPC, TargetKind.NATIVE]))
    rates = sorted(set(qps or [DEFAULT_SERVER_QPS]))
    if any(r <= 0 for r in rates):
        raise SettingsError(f"--qps must be > 0, got {min(rates):g}")
    if agreement_samples < 0:
        raise SettingsError("--agreement-samples must be ≥ 0")
    if server_timeout is not None and server_timeout <= 0:
        raise SettingsError(f"--server-timeout must be > 0 s, got {server_timeout:g}")
    stopping.reset()  # one command, one stop request
    check_outputs(output, None, force, COMPARE_FILES)
    bound_ns = target_latency_ns(model, target_latency)
    settings_for = {
        rate: ServerSettings(
            qps=rate,
            target_latency_ns=bound_ns,
            percentile=percentile / 100,
            min_duration_ns=int(duration * NS_PER_S),
            min_query_count=min_queries,
            schedule_seed=seed,
            sample_seed=sample_seed,
            sample_count=samples,
            late_threshold_ns=int(late_threshold * NS_PER_MS),
        )
        for rate in rates
    }
    shapes = parse_shapes(shape)
    overrides: dict[str, Any] = {
        key: value
        for key, value in {
            "instances": native_instances,
            "intra_op_threads": native_intra_threads,
            "inter_op_threads": native_inter_threads,
            "dynamic_batching": native_batching,
            "max_batch_size": native_max_batch,
            "max_queue_delay_us": native_queue_delay_us,
            "providers": tuple(provider) if provider else None,
        }.items()
        if value is not None
    }

    def say(text: str) -> None:
        notes.print(f"[dim]{text}[/]", highlight=False)

    native = (
        _native_target(model, repository, onnx, overrides, say)
        if TargetKind.NATIVE in kinds
        else None
    )
    tritons = [k for k in kinds if k in PROTOCOL]
    with contextlib.ExitStack() as stack:
        stack.push(_restore_signals_on_error)
        deployment: Deployment | None = None
        urls: dict[TargetKind, str] = {}
        if tritons:
            first = Protocol(PROTOCOL[tritons[0]])
            grpc_url = url or "127.0.0.1:8001"
            host = host_port(grpc_url, 8001).rsplit(":", 1)[0]
            http = http_url or f"{host}:{DEFAULT_HTTP_PORT}"
            wanted = TargetSettings(
                url=grpc_url if first is Protocol.GRPC else http,
                protocol=first,
                model=model,
                request_timeout_s=timeout,
            )
            deployment = stack.enter_context(
                deployment_module.resolve(wanted, embedded, repository, say)
            )
            if deployment.embedded is not None:
                urls = {
                    TargetKind.TRITON_GRPC: deployment.embedded.grpc_url,
                    TargetKind.TRITON_HTTP: deployment.embedded.http_url,
                }
            else:
                urls = {TargetKind.TRITON_GRPC: grpc_url, TargetKind.TRITON_HTTP: http}
        metrics = deployment.metrics_url if deployment and deployment.embedded else metrics_url
        server_pid = deployment.embedded.pid if deployment and deployment.embedded else None

        targets: dict[str, Target] = {}
        for kind in kinds:
            if kind is TargetKind.NATIVE:
                assert native is not None
                targets[kind.value] = native
            else:
                targets[kind.value] = triton_target(
                    urls[kind], PROTOCOL[kind], model, "", timeout, server_timeout or 0.0
                )

        async def measure() -> dict[str, Any]:
            opened: list[Target] = []
            try:
                specs: dict[str, ModelSpec] = {}
                for name, tgt in targets.items():
                    specs[name] = await tgt.open()
                    opened.append(tgt)
                spec = check_specs_agree(specs)
                library = random_samples(spec, samples, sample_seed, shapes)
                for tgt in targets.values():
                    await tgt.prepare(library)
                agreement: dict[str, float | None] = {}
                if native is not None:
                    for name, tgt in targets.items():
                        if name == NATIVE:
                            continue
                        worst = 0.0
                        for i in range(min(agreement_samples, len(library))):
                            reference = await native.infer_outputs(i)
                            try:
                                got = await tgt.infer_outputs(i)
                                worst = max(worst, max_abs_difference(got, reference))
                            except ValueError as exc:
                                raise TargetError(f"{name} against native: {exc}") from None
                        agreement[name] = worst if agreement_samples else None
                triton_config: dict[str, Any] | None = None
                probes: dict[str, ServerProbe] = {}
                for kind in tritons:
                    statistics = TritonStatistics(urls[kind], PROTOCOL[kind], model)
                    if triton_config is None:
                        with contextlib.suppress(TargetError):
                            triton_config = triton_config_summary(await statistics.model_config())
                    probes[kind.value] = ServerProbe(statistics, model, server_pid, metrics)
                runs: list[CompareRun] = []
                stop_reason = ""
                # A stop signal from here on ends the comparison with what was measured.
                catch = contextlib.ExitStack()
                try:
                    catch.enter_context(stopping.catching(asyncio.get_running_loop()))
                    for rate in rates:
                        if stop_reason:
                            break
                        settings = settings_for[rate]
                        for name, tgt in targets.items():
                            if stopping.requested():
                                stop_reason = stopping.requested()
                                break
                            say(f"{name}: {rate:g} QPS for ≥ {duration:g} s")
                            probe = probes.get(name)
                            if probe:
                                await probe.start()
                            before = native.batcher_stats if name == NATIVE and native else None
                            measurement = await run_server(
                                tgt,
                                spec,
                                len(library),
                                settings,
                                drain_timeout_ns=int((timeout + 5) * NS_PER_S),
                            )
                            side = await probe.finish(measurement) if probe else None
                            summary, verdict = interpret_server(settings, measurement.outcome)
                            batcher = None
                            if name == NATIVE and native and native.batcher_stats and before:
                                sizes = native.batcher_stats.batch_sizes[len(before.batch_sizes) :]
                                waits = native.batcher_stats.queue_wait_ns[
                                    len(before.queue_wait_ns) :
                                ]
                                batcher = {
                                    "batches": len(sizes),
                                    "mean_batch_size": sum(sizes) / len(sizes) if sizes else 0.0,
                                    "max_batch_size_formed": max(sizes, default=0),
                                    "max_queue_wait_ns": max(waits, default=0),
                                }
                            runs.append(
                                CompareRun(
                                    name,
                                    tgt.description,
                                    settings,
                                    measurement,
                                    summary,
                                    verdict,
                                    side,
                                    batcher,
                                )
                            )
                            if measurement.outcome.interrupted:
                                stop_reason = measurement.outcome.stop_reason
                                break
                finally:
                    for probe in probes.values():
                        await probe.close()
                    catch.close()
                stopping.defer_signals()  # a signal now waits until compare.json is written
                return {
                    "spec": spec,
                    "runs": runs,
                    "agreement": agreement,
                    "triton_config": triton_config,
                    "stop_reason": stop_reason,
                }
            finally:
                for tgt in opened:
                    await tgt.close()

        try:
            result = timing.run(measure())
        except KeyboardInterrupt:
            console.print(
                f"[yellow]{stopping.requested() or 'interrupted'}[/] before any run: no "
                "compare.json written"
            )
            raise typer.Exit(stopping.exit_code()) from None
        env_target = next(iter(targets.values()))
        environment = build_environment(
            env_target,
            deployment or Deployment(TargetSettings(url="in-process", model=model), None),
        )
    runs: list[CompareRun] = result["runs"]
    points = [run.point for run in runs]
    relatives = [relative(points, name) for name in targets if name != NATIVE]
    if native is None:
        relatives = []
    console.print(runs_table(runs, percentile / 100))
    if relatives:
        console.print(relative_table(relatives, result["agreement"]))
    split_rows = [
        (f"{run.target} {run.settings.qps:g}", run.server_side)
        for run in runs
        if run.server_side is not None
    ]
    if split_rows:
        console.print(split_table(split_rows))
    configurations: dict[str, Any] = {
        "triton": result["triton_config"],
        "native": None,
    }
    if native is not None:
        from loadtest.report.results import plain

        configurations["native"] = {**plain(native.options), "summary": native.options.describe()}
        console.print(f"native: {native.options.describe()}", highlight=False)
    if result["triton_config"] is not None:
        tc = result["triton_config"]
        batching = (
            f"dynamic batching ≤ {tc['max_batch_size']}, delay {tc['max_queue_delay_us']} µs"
            if tc["dynamic_batching"]
            else "no dynamic batching"
        )
        console.print(
            f"triton: {tc['instances']} instance(s), {batching}, intra "
            f"{tc['intra_op_thread_count']} / inter {tc['inter_op_thread_count']} threads "
            f"({tc['backend']})",
            highlight=False,
        )
    run_notes = []
    if deployment is not None and deployment.embedded is not None:
        run_notes.append("Triton was the embedded server started by loadtest on this machine")
    if any(p.client_bound for p in points):
        run_notes.append("client-bound runs are excluded from the comparison")
    settings_json = {
        "model": model,
        "targets": [k.value for k in kinds],
        "qps": rates,
        "duration_s": duration,
        "min_query_count": min_queries,
        "target_latency_ns": bound_ns,
        "percentile": percentile / 100,
        "late_threshold_ns": int(late_threshold * NS_PER_MS),
        "schedule_seed": seed,
        "sample_seed": sample_seed,
        "sample_count": samples,
        "agreement_samples": agreement_samples,
        "urls": {k.value: v for k, v in urls.items()},
        "metrics_url": metrics,
        "repository": str(repository),
        "onnx": str(onnx) if onnx else None,
    }
    data = compare_json(
        settings=settings_json,
        model=result["spec"],
        configurations=configurations,
        environment=environment,
        runs=runs,
        relatives=relatives,
        agreement=result["agreement"],
        notes=run_notes,
        created_unix_s=time.time(),
        stop_reason=result["stop_reason"],
    )
    saved = write_compare(data, output, model, force)
    stopping.install_process_handlers()
    if saved.directory is not None:
        where = "rescued: " if saved.rescued else "results: "
        console.print(where + "  ".join(str(p) for p in saved.files), highlight=False)
    if result["stop_reason"] or stopping.requested():
        reason = result["stop_reason"] or stopping.requested()
        console.print(f"[yellow]partial result[/] ({reason}): written above", highlight=False)
        finish_saving(saved, "comparison")
        raise typer.Exit(stopping.exit_code())
    finish_saving(saved, "comparison")
