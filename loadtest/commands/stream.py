"""`loadtest single-stream` and `loadtest multi-stream`: MLPerf's closed-loop latency scenarios."""

from __future__ import annotations

from typing import Annotated

import typer

from loadtest.commands import common
from loadtest.core.settings import (
    DEFAULT_MIN_DURATION_NS,
    NS_PER_MS,
    NS_PER_S,
    Protocol,
    Scenario,
    StreamSettings,
)
from loadtest.errors import SettingsError
from loadtest.models import DEFAULT_SERVER_MODEL
from loadtest.scenarios.play import run_stream

BoundOption = Annotated[
    float | None,
    typer.Option(
        help="Optional bound in ms on the early-stopping estimate (report only if unset)."
    ),
]


def _run(
    scenario: Scenario,
    percentile: float,
    samples_per_query: int,
    target_latency: float | None,
    duration: float | None,
    min_queries: int,
    max_duration: float,
    mlperf: bool,
    flags: common.TargetFlags,
    sample_seed: int,
    samples: int,
    output: common.OutputOption,
    records: bool,
    live: bool,
    force: bool,
) -> None:
    if target_latency is not None and target_latency <= 0:
        raise SettingsError(f"--target-latency must be > 0 ms, got {target_latency:g}")
    settings = StreamSettings(
        scenario=scenario,
        percentile=percentile / 100,
        samples_per_query=samples_per_query,
        min_duration_ns=common.min_duration_ns(duration, mlperf, DEFAULT_MIN_DURATION_NS),
        min_query_count=min_queries,
        max_duration_ns=common.max_duration_ns(max_duration),
        target_latency_ns=int((target_latency or 0) * NS_PER_MS),
        sample_seed=sample_seed,
        sample_count=samples,
        keep_records=records,
    )
    common.execute(
        settings,
        flags,
        title=(
            f"{scenario.value} scenario: closed loop, {samples_per_query} sample(s) per query, "
            f"≥ {settings.min_duration_ns / NS_PER_S:g} s"
        ),
        span_ns=settings.min_duration_ns,
        play=lambda target, spec, count, tick, _resolved: run_stream(
            target, spec, count, settings, on_tick=tick
        ),
        output=output,
        live=live,
        sample_count=settings.sample_count,
        sample_seed=settings.sample_seed,
        batch_size=samples_per_query,
        force=force,
    )


def single_stream(
    model: common.ModelOption = DEFAULT_SERVER_MODEL,
    percentile: Annotated[float, typer.Option(help="Reported percentile (MLPerf: 90).")] = 90.0,
    target_latency: BoundOption = None,
    duration: common.DurationOption = None,
    min_queries: common.MinQueriesOption = 1,
    max_duration: common.MaxDurationOption = 0.0,
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
    """MLPerf SingleStream: one sample per query, one in flight; reports p90 (early stopping)."""
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
    _run(
        Scenario.SINGLE_STREAM,
        percentile,
        1,
        target_latency,
        duration,
        min_queries,
        max_duration,
        mlperf,
        flags,
        sample_seed,
        samples,
        output,
        records,
        live,
        force,
    )


def multi_stream(
    model: common.ModelOption = DEFAULT_SERVER_MODEL,
    samples_per_query: Annotated[
        int, typer.Option(help="Samples per query, sent as one batched request (MLPerf: 8).")
    ] = 8,
    percentile: Annotated[float, typer.Option(help="Reported percentile (MLPerf: 99).")] = 99.0,
    target_latency: BoundOption = None,
    duration: common.DurationOption = None,
    min_queries: common.MinQueriesOption = 1,
    max_duration: common.MaxDurationOption = 0.0,
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
    """MLPerf MultiStream: N samples per query as one batch, one in flight; reports p99."""
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
    _run(
        Scenario.MULTI_STREAM,
        percentile,
        samples_per_query,
        target_latency,
        duration,
        min_queries,
        max_duration,
        mlperf,
        flags,
        sample_seed,
        samples,
        output,
        records,
        live,
        force,
    )
