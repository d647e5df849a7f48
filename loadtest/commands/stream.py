"""`loadtest single-stream` and `loadtest multi-stream`: MLPerf's closed-loop latency scenarios."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import typer

from loadtest.commands import common, options
from loadtest.commands import flag_groups as groups
from loadtest.core.settings import (
    DEFAULT_MIN_DURATION_NS,
    NS_PER_MS,
    NS_PER_S,
    Scenario,
    StreamSettings,
)
from loadtest.errors import SettingsError
from loadtest.models import DEFAULT_SERVER_MODEL
from loadtest.scenarios.mlperf.play import run_stream


@dataclass(frozen=True)
class StreamFlags:
    """What single-stream and multi-stream both take, after their own percentile."""

    target_latency: options.TargetLatencyOption = None
    run: groups.RunLength = field(default_factory=groups.RunLength)
    mlperf: options.MlperfOption = False
    endpoint: groups.Endpoint = field(default_factory=groups.Endpoint)
    samples: groups.SampleLibrary = field(default_factory=groups.SampleLibrary)
    output: Annotated[groups.Output, groups.take("html")] = field(default_factory=groups.Output)
    checks: groups.Checks = field(default_factory=groups.Checks)
    access: groups.Access = field(default_factory=groups.Access)


def _run(
    model: str, scenario: Scenario, samples_per_query: int, percentile: float, flags: StreamFlags
) -> None:
    """The stream scenario's settings from its flags, then the run (one sample or a batch in
    flight: --target-latency is optional, only reported against)."""
    if flags.target_latency is not None and flags.target_latency <= 0:
        raise SettingsError(f"--target-latency must be > 0 ms, got {flags.target_latency:g}")
    settings = StreamSettings(
        scenario=scenario,
        percentile=percentile / 100,
        samples_per_query=samples_per_query,
        **flags.run.settings_fields(flags.mlperf, DEFAULT_MIN_DURATION_NS),
        target_latency_ns=int((flags.target_latency or 0) * NS_PER_MS),
        sample_seed=flags.samples.sample_seed,
        sample_count=flags.samples.samples,
        keep_records=flags.output.records,
        **flags.checks.settings_fields(flags.mlperf),
    )
    common.execute(
        settings,
        groups.target_flags(model, flags.endpoint, flags.samples, flags.access),
        title=(
            f"{scenario.value} scenario: closed loop, {samples_per_query} sample(s) per query, "
            f"≥ {settings.min_duration_ns / NS_PER_S:g} s"
        ),
        play=lambda target, spec, count, tick, _resolved, on_start: run_stream(
            target, spec, count, settings, on_tick=tick, on_start=on_start
        ),
        output=flags.output.output,
        live=flags.output.live,
        batch_size=samples_per_query,
        force=flags.output.force,
    )


@groups.takes_groups
def single_stream(
    *,
    model: options.ModelOption = DEFAULT_SERVER_MODEL,
    percentile: options.PercentileOption = 90.0,  # MLPerf SingleStream reports p90
    stream: StreamFlags,
    ttft_bound: options.TtftBoundOption = None,
    tpot_bound: options.TpotBoundOption = None,
    mlperf_model: options.MlperfModelOption = None,
) -> None:
    """MLPerf SingleStream: one sample per query, one in flight; reports p90 (early stopping)."""
    common.refuse_token_bounds("SingleStream", ttft_bound, tpot_bound, mlperf_model)
    _run(model, Scenario.SINGLE_STREAM, 1, percentile, stream)


@groups.takes_groups
def multi_stream(
    *,
    model: options.ModelOption = DEFAULT_SERVER_MODEL,
    samples_per_query: Annotated[
        int,
        typer.Option(help="Samples per query, sent as one batched request (MLPerf: 8)."),
    ] = 8,
    percentile: options.PercentileOption = options.PERCENTILE,
    stream: StreamFlags,
) -> None:
    """MLPerf MultiStream: N samples per query as one batch, one in flight; reports p99."""
    _run(model, Scenario.MULTI_STREAM, samples_per_query, percentile, stream)
