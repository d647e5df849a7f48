"""`loadtest server`: the MLPerf Server scenario (seeded Poisson arrivals, open loop) end to end."""

from __future__ import annotations

from typing import Annotated

import typer

from loadtest.commands import common
from loadtest.commands.report import HtmlOption
from loadtest.core.settings import (
    AUTO_WORKERS,
    DEFAULT_MIN_DURATION_NS,
    LATE_THRESHOLD_NS,
    NS_PER_MS,
    NS_PER_S,
    ClientSettings,
    LoopKind,
    Protocol,
    ServerSettings,
    SharedMemoryKind,
    resolve_loop,
)
from loadtest.models import DEFAULT_SERVER_MODEL, DEFAULT_SERVER_QPS
from loadtest.scenarios.play import Generator, run_server


def server(
    model: common.ModelOption = DEFAULT_SERVER_MODEL,
    qps: Annotated[float, typer.Option(help="Scheduled Poisson arrival rate (queries/s).")] = (
        DEFAULT_SERVER_QPS
    ),
    duration: common.DurationOption = None,
    min_queries: common.MinQueriesOption = 100,
    max_duration: common.MaxDurationOption = 0.0,
    target_latency: Annotated[
        float | None,
        typer.Option(help="Latency bound in ms (default: the model's MLPerf Server bound)."),
    ] = None,
    percentile: Annotated[
        float, typer.Option(help="Latency percentile the bound applies to, in (0, 100).")
    ] = 99.0,
    late_threshold: Annotated[
        float,
        typer.Option(help="A send later than this (ms) counts as late; see 'client kept up'."),
    ] = LATE_THRESHOLD_NS / NS_PER_MS,
    mlperf: common.MlperfOption = False,
    url: common.UrlOption = None,
    protocol: common.ProtocolOption = Protocol.GRPC,
    model_version: common.VersionOption = "",
    timeout: common.TimeoutOption = 30.0,
    server_timeout: common.ServerTimeoutOption = None,
    embedded: common.EmbeddedOption = common.EmbeddedMode.AUTO,
    repository: common.RepositoryOption = common.DEFAULT_REPOSITORY,
    seed: Annotated[int, typer.Option(help="Schedule (arrival times) seed.")] = 0,
    sample_seed: common.SampleSeedOption = 1,
    samples: common.SamplesOption = 64,
    input_data: common.InputDataOption = None,
    shape: common.ShapeOption = None,
    output: common.OutputOption = None,
    records: common.RecordsOption = False,
    live: common.LiveOption = True,
    html: HtmlOption = None,
    force: common.ForceOption = False,
    workers: common.WorkersOption = AUTO_WORKERS,
    loop: common.LoopOption = LoopKind.AUTO,
    ray: common.RayOption = "",
    shared_memory: common.SharedMemoryOption = SharedMemoryKind.NONE,
) -> None:
    """Run the MLPerf Server scenario: Poisson arrivals at --qps, latency from scheduled time."""
    settings = ServerSettings(
        qps=qps,
        target_latency_ns=common.target_latency_ns(model, target_latency),
        percentile=percentile / 100,
        min_duration_ns=common.min_duration_ns(duration, mlperf, DEFAULT_MIN_DURATION_NS),
        min_query_count=min_queries,
        max_duration_ns=common.max_duration_ns(max_duration),
        schedule_seed=seed,
        sample_seed=sample_seed,
        sample_count=samples,
        keep_records=records,
        late_threshold_ns=int(late_threshold * NS_PER_MS),
    )
    client = ClientSettings(
        workers=workers, loop=loop, ray_address=ray, shared_memory=shared_memory
    )
    flags = common.TargetFlags(
        model,
        url,
        protocol,
        model_version,
        timeout,
        embedded,
        repository,
        input_data,
        common.parse_shapes(shape),
        shared_memory,
        server_timeout,
    )
    drain_timeout_ns = int((timeout + 5) * NS_PER_S)
    common.execute(
        settings,
        flags,
        title=(
            f"Server scenario: {settings.qps:g} QPS Poisson for ≥ "
            f"{settings.min_duration_ns / NS_PER_S:g} s"
        ),
        span_ns=settings.min_duration_ns,
        play=lambda target, spec, count, tick, resolved: run_server(
            target,
            spec,
            count,
            settings,
            drain_timeout_ns,
            on_tick=tick,
            generator=Generator(client, resolved, flags.input_data, flags.shapes),
        ),
        loop=client_loop(client, qps, flags),
        output=output,
        live=live,
        sample_count=settings.sample_count,
        sample_seed=settings.sample_seed,
        html=html,
        force=force,
    )


def client_loop(client: ClientSettings, qps: float, flags: common.TargetFlags) -> LoopKind:
    """The loop this process plays on when it plays alone (workers resolve their own)."""
    generator = Generator(client, flags.target_settings())
    return resolve_loop(client.loop, qps / generator.worker_count(qps))
