"""`loadtest offline`: MLPerf Offline — one query of every sample, throughput to last completion."""

from __future__ import annotations

from typing import Annotated

import typer

from loadtest.commands import common, options
from loadtest.commands.options import finite_float
from loadtest.core.settings import DEFAULT_MIN_DURATION_NS, NS_PER_S, OfflineSettings, Protocol
from loadtest.models import DEFAULT_SERVER_MODEL
from loadtest.scenarios.play import run_offline
from loadtest.server.deployment import EmbeddedMode


def offline(
    model: options.ModelOption = DEFAULT_SERVER_MODEL,
    expected_qps: Annotated[
        float,
        typer.Option(
            parser=finite_float,
            help="Expected samples/s; sizes the query to 1.1 × duration × this.",
        ),
    ] = 500.0,
    duration: options.DurationOption = None,
    min_queries: options.MinQueriesOption = 1,
    max_duration: options.MaxDurationOption = 0.0,
    max_in_flight: Annotated[
        int, typer.Option(help="Requests outstanding at once: the only brake on issuing.")
    ] = 64,
    batch_size: Annotated[int, typer.Option(help="Samples per request.")] = 1,
    mlperf: options.MlperfOption = False,
    url: options.UrlOption = None,
    protocol: options.ProtocolOption = Protocol.GRPC,
    model_version: options.VersionOption = "",
    timeout: options.TimeoutOption = options.TIMEOUT_S,
    server_timeout: options.ServerTimeoutOption = None,
    embedded: options.EmbeddedOption = EmbeddedMode.AUTO,
    repository: options.RepositoryOption = options.REPOSITORY,
    sample_seed: options.SampleSeedOption = options.SAMPLE_SEED,
    samples: options.SamplesOption = options.SAMPLES,
    input_data: options.InputDataOption = None,
    shape: options.ShapeOption = None,
    output: options.OutputOption = None,
    records: options.RecordsOption = False,
    live: options.LiveOption = True,
    force: options.ForceOption = False,
    error_budget: options.ErrorBudgetOption = None,
    abort_on_error_rate: options.AbortOnErrorRateOption = None,
    window: options.WindowOption = options.ABORT_WINDOW_S,
    tls: options.TlsOption = False,
    ca_cert: options.CaCertOption = None,
    client_cert: options.ClientCertOption = None,
    client_key: options.ClientKeyOption = None,
    header: options.HeaderOption = None,
) -> None:
    """Run the MLPerf Offline scenario: all samples due at once, throughput = samples / time."""
    settings = OfflineSettings(
        expected_qps=expected_qps,
        min_duration_ns=common.min_duration_ns(duration, mlperf, DEFAULT_MIN_DURATION_NS),
        min_query_count=min_queries,
        max_in_flight=max_in_flight,
        batch_size=batch_size,
        sample_seed=sample_seed,
        sample_count=samples,
        max_duration_ns=common.max_duration_ns(max_duration),
        keep_records=records,
        **common.error_rules(error_budget, abort_on_error_rate, window, mlperf),
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
    )
    common.execute(
        settings,
        flags,
        title=(
            f"Offline scenario: {settings.query_samples} samples, ≤ {max_in_flight} requests "
            f"in flight (sized for {expected_qps:g}/s over "
            f"{settings.min_duration_ns / NS_PER_S:g} s)"
        ),
        span_ns=settings.min_duration_ns,
        play=lambda target, spec, count, tick, _resolved, on_start: run_offline(
            target, spec, count, settings, on_tick=tick, on_start=on_start
        ),
        output=output,
        live=live,
        sample_count=settings.sample_count,
        sample_seed=settings.sample_seed,
        batch_size=settings.batch_size,
        force=force,
    )
