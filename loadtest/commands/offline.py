"""`loadtest offline`: MLPerf Offline — one query of every sample, throughput to last completion."""

from __future__ import annotations

from typing import Annotated

import typer

from loadtest.commands import common
from loadtest.core.settings import DEFAULT_MIN_DURATION_NS, NS_PER_S, OfflineSettings, Protocol
from loadtest.models import DEFAULT_SERVER_MODEL
from loadtest.scenarios.play import run_offline


def offline(
    model: common.ModelOption = DEFAULT_SERVER_MODEL,
    expected_qps: Annotated[
        float,
        typer.Option(help="Expected samples/s; sizes the query to 1.1 × duration × this."),
    ] = 500.0,
    duration: common.DurationOption = None,
    min_queries: common.MinQueriesOption = 1,
    max_duration: common.MaxDurationOption = 0.0,
    max_in_flight: Annotated[
        int, typer.Option(help="Requests outstanding at once: the only brake on issuing.")
    ] = 64,
    batch_size: Annotated[int, typer.Option(help="Samples per request.")] = 1,
    mlperf: common.MlperfOption = False,
    url: common.UrlOption = None,
    protocol: common.ProtocolOption = Protocol.GRPC,
    model_version: common.VersionOption = "",
    timeout: common.TimeoutOption = 30.0,
    server_timeout: common.ServerTimeoutOption = None,
    embedded: common.EmbeddedOption = common.EmbeddedMode.AUTO,
    repository: common.RepositoryOption = common.DEFAULT_REPOSITORY,
    sample_seed: common.SampleSeedOption = 1,
    samples: common.SamplesOption = 64,
    input_data: common.InputDataOption = None,
    shape: common.ShapeOption = None,
    output: common.OutputOption = None,
    records: common.RecordsOption = False,
    live: common.LiveOption = True,
    force: common.ForceOption = False,
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
        play=lambda target, spec, count, tick, _resolved: run_offline(
            target, spec, count, settings, on_tick=tick
        ),
        output=output,
        live=live,
        sample_count=settings.sample_count,
        sample_seed=settings.sample_seed,
        batch_size=settings.batch_size,
        force=force,
    )
