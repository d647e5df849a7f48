"""`loadtest single-stream` and `loadtest multi-stream`: MLPerf's closed-loop latency scenarios."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from loadtest.commands import common, options
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
from loadtest.scenarios.mlperf.play import run_stream
from loadtest.server.deployment import EmbeddedMode


def _run(
    settings: StreamSettings,
    flags: common.TargetFlags,
    output: Path | None,
    live: bool,
    force: bool = False,
) -> None:
    scenario, per_query = settings.scenario, settings.samples_per_query
    common.execute(
        settings,
        flags,
        title=(
            f"{scenario.value} scenario: closed loop, {per_query} sample(s) per query, "
            f"≥ {settings.min_duration_ns / NS_PER_S:g} s"
        ),
        play=lambda target, spec, count, tick, _resolved, on_start: run_stream(
            target, spec, count, settings, on_tick=tick, on_start=on_start
        ),
        output=output,
        live=live,
        batch_size=per_query,
        force=force,
    )


def _settings(
    scenario: Scenario,
    samples_per_query: int,
    percentile: float,
    target_latency: float | None,
    run_length: tuple[float | None, int, float, bool],
    samples: tuple[int, int, bool],
) -> StreamSettings:
    """run_length = (--duration, --min-queries, --max-duration, --mlperf);
    samples = (--sample-seed, --samples, --records)."""
    duration, min_queries, max_duration, mlperf = run_length
    sample_seed, sample_count, records = samples
    if target_latency is not None and target_latency <= 0:
        raise SettingsError(f"--target-latency must be > 0 ms, got {target_latency:g}")
    return StreamSettings(
        scenario=scenario,
        percentile=percentile / 100,
        samples_per_query=samples_per_query,
        min_duration_ns=common.min_duration_ns(duration, mlperf, DEFAULT_MIN_DURATION_NS),
        min_query_count=min_queries,
        max_duration_ns=common.max_duration_ns(max_duration),
        target_latency_ns=int((target_latency or 0) * NS_PER_MS),
        sample_seed=sample_seed,
        sample_count=sample_count,
        keep_records=records,
    )


def single_stream(
    model: options.ModelOption = DEFAULT_SERVER_MODEL,
    percentile: options.PercentileOption = 90.0,  # MLPerf SingleStream reports p90
    target_latency: options.TargetLatencyOption = None,
    duration: options.DurationOption = None,
    min_queries: options.MinQueriesOption = 1,
    max_duration: options.MaxDurationOption = 0.0,
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
    """MLPerf SingleStream: one sample per query, one in flight; reports p90 (early stopping)."""
    settings = _settings(
        Scenario.SINGLE_STREAM,
        1,
        percentile,
        target_latency,
        (duration, min_queries, max_duration, mlperf),
        (sample_seed, samples, records),
    )
    settings = replace(
        settings,
        **common.error_rules(error_budget, abort_on_error_rate, window, mlperf),
        check_outputs=check_outputs,
        same_sample=same_sample,
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
    _run(settings, flags, output, live, force)


def multi_stream(
    model: options.ModelOption = DEFAULT_SERVER_MODEL,
    samples_per_query: Annotated[
        int, typer.Option(help="Samples per query, sent as one batched request (MLPerf: 8).")
    ] = 8,
    percentile: options.PercentileOption = options.PERCENTILE,
    target_latency: options.TargetLatencyOption = None,
    duration: options.DurationOption = None,
    min_queries: options.MinQueriesOption = 1,
    max_duration: options.MaxDurationOption = 0.0,
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
    """MLPerf MultiStream: N samples per query as one batch, one in flight; reports p99."""
    settings = _settings(
        Scenario.MULTI_STREAM,
        samples_per_query,
        percentile,
        target_latency,
        (duration, min_queries, max_duration, mlperf),
        (sample_seed, samples, records),
    )
    settings = replace(
        settings,
        **common.error_rules(error_budget, abort_on_error_rate, window, mlperf),
        check_outputs=check_outputs,
        same_sample=same_sample,
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
    _run(settings, flags, output, live, force)
