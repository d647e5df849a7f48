"""`loadtest server`: the MLPerf Server scenario (seeded Poisson arrivals, open loop) end to end."""

from __future__ import annotations

from typing import Annotated

import typer

from loadtest.commands import common, options
from loadtest.commands.options import finite_float
from loadtest.core.settings import (
    AUTO_WORKERS,
    DEFAULT_MIN_DURATION_NS,
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
from loadtest.scenarios.mlperf.play import Generator
from loadtest.scenarios.run import server_play
from loadtest.server.deployment import EmbeddedMode


def server(
    model: options.ModelOption = DEFAULT_SERVER_MODEL,
    qps: Annotated[
        float, typer.Option(parser=finite_float, help="Scheduled Poisson arrival rate (queries/s).")
    ] = (DEFAULT_SERVER_QPS),
    duration: options.DurationOption = None,
    min_queries: options.MinQueriesOption = 100,
    max_duration: options.MaxDurationOption = 0.0,
    target_latency: options.TargetLatencyOption = None,
    percentile: options.PercentileOption = options.PERCENTILE,
    late_threshold: options.LateThresholdOption = options.LATE_THRESHOLD_MS,
    mlperf: options.MlperfOption = False,
    url: options.UrlOption = None,
    protocol: options.ProtocolOption = Protocol.GRPC,
    model_version: options.VersionOption = "",
    timeout: options.TimeoutOption = options.TIMEOUT_S,
    server_timeout: options.ServerTimeoutOption = None,
    embedded: options.EmbeddedOption = EmbeddedMode.AUTO,
    repository: options.RepositoryOption = options.REPOSITORY,
    seed: options.SeedOption = 0,
    sample_seed: options.SampleSeedOption = options.SAMPLE_SEED,
    samples: options.SamplesOption = options.SAMPLES,
    input_data: options.InputDataOption = None,
    shape: options.ShapeOption = None,
    output: options.OutputOption = None,
    records: options.RecordsOption = False,
    live: options.LiveOption = True,
    force: options.ForceOption = False,
    html: options.HtmlOption = None,
    workers: options.WorkersOption = AUTO_WORKERS,
    loop: options.LoopOption = LoopKind.AUTO,
    ray: options.RayOption = "",
    shared_memory: options.SharedMemoryOption = SharedMemoryKind.NONE,
    error_budget: options.ErrorBudgetOption = None,
    check_outputs: options.CheckOutputsOption = 0.0,
    same_sample: options.SameSampleOption = False,
    abort_on_error_rate: options.AbortOnErrorRateOption = None,
    window: options.WindowOption = options.ABORT_WINDOW_S,
    tls: options.TlsOption = False,
    ca_cert: options.CaCertOption = None,
    client_cert: options.ClientCertOption = None,
    client_key: options.ClientKeyOption = None,
    header: options.HeaderOption = None,
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
        **common.error_rules(error_budget, abort_on_error_rate, window, mlperf),
        check_outputs=check_outputs,
        same_sample=same_sample,
    )
    client = ClientSettings(
        workers=workers, loop=loop, ray_address=ray, shared_memory=shared_memory
    )
    flags = common.TargetFlags(
        model=model,
        url=url,
        protocol=protocol,
        model_version=model_version,
        timeout_s=timeout,
        embedded=embedded,
        repository=repository,
        input_data=input_data,
        shapes=common.parse_shapes(shape),
        access=common.access_flags(tls, ca_cert, client_cert, client_key, header),
        server_timeout_s=server_timeout,
        shared_memory=shared_memory,
    )
    common.execute(
        settings,
        flags,
        title=(
            f"Server scenario: {settings.qps:g} QPS Poisson for ≥ "
            f"{settings.min_duration_ns / NS_PER_S:g} s"
        ),
        play=server_play(settings, client, flags),
        loop=client_loop(client, qps, flags),
        output=output,
        live=live,
        html=html,
        force=force,
    )


def client_loop(client: ClientSettings, qps: float, flags: common.TargetFlags) -> LoopKind:
    """The loop this process plays on when it plays alone (workers resolve their own)."""
    generator = Generator(client, flags.target_settings())
    return resolve_loop(client.loop, qps / generator.worker_count(qps))
