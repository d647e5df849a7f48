"""`loadtest server`: the MLPerf Server scenario (seeded Poisson arrivals, open loop) end to end."""

from __future__ import annotations

from typing import Annotated

import typer

from loadtest.commands import common, options
from loadtest.commands import flag_groups as groups
from loadtest.commands.options import finite_float
from loadtest.core.settings import (
    DEFAULT_MIN_DURATION_NS,
    NS_PER_MS,
    NS_PER_S,
    ClientSettings,
    LoopKind,
    ServerSettings,
    resolve_loop,
)
from loadtest.core.slos import parse_slos
from loadtest.models import DEFAULT_SERVER_MODEL, DEFAULT_SERVER_QPS
from loadtest.scenarios.mlperf.play import Generator
from loadtest.scenarios.run import server_play


@groups.takes_groups
def server(
    *,
    model: options.ModelOption = DEFAULT_SERVER_MODEL,
    qps: Annotated[
        float | None,
        typer.Option(
            parser=finite_float,
            help=f"Scheduled arrival rate (queries/s; default {DEFAULT_SERVER_QPS:g}).",
            show_default=False,
        ),
    ] = None,
    run: Annotated[groups.RunLength, groups.take(min_queries=100)],
    target_latency: options.TargetLatencyOption = None,
    percentile: options.PercentileOption = options.PERCENTILE,
    late_threshold: options.LateThresholdOption = options.LATE_THRESHOLD_MS,
    mlperf: options.MlperfOption = False,
    endpoint: groups.Endpoint,
    seed: options.SeedOption = 0,
    samples: groups.SampleLibrary,
    output: groups.Output,
    client: groups.Client,
    checks: groups.Checks,
    access: groups.Access,
    ttft_bound: options.TtftBoundOption = None,
    tpot_bound: options.TpotBoundOption = None,
    mlperf_model: options.MlperfModelOption = None,
    slo: options.SloOption = None,
    arrival: groups.Arrival,
) -> None:
    """Run the MLPerf Server scenario: Poisson arrivals at --qps (or --arrival, --stages, --trace),
    latency from scheduled time."""
    fields = arrival.settings_fields(qps, DEFAULT_SERVER_QPS, run, mlperf, DEFAULT_MIN_DURATION_NS)
    fields["arrival_law"], prompts = groups.prompted_law(
        samples, arrival, fields["arrival_law"], endpoint.wire
    )
    settings = ServerSettings(
        **fields,
        target_latency_ns=common.target_latency_ns(model, target_latency),
        percentile=percentile / 100,
        schedule_seed=seed,
        sample_seed=samples.sample_seed,
        sample_count=samples.samples,
        keep_records=output.records,
        late_threshold_ns=int(late_threshold * NS_PER_MS),
        **checks.settings_fields(mlperf),
        **common.token_bound_fields(ttft_bound, tpot_bound, mlperf_model),
        slos=parse_slos(slo),
    )
    flags = groups.target_flags(model, endpoint, samples, access, client.shared_memory, prompts)
    common.execute(
        settings,
        flags,
        title=_title(settings, arrival.shaped, mlperf),
        play=server_play(settings, client.settings(), flags),
        loop=client_loop(client.settings(), settings.qps, flags),
        output=output.output,
        live=output.live,
        html=output.html,
        force=output.force,
    )


def _title(settings: ServerSettings, shaped: bool, mlperf: bool) -> str:
    """The run's title: its law (and rate), and how long it lasts."""
    what = f"Server scenario: {settings.arrivals.describe()}"
    if shaped and not mlperf:
        common.say(f"stages and traces are {groups.PLAYED_WHOLE}")
        return f"{what}, played whole"
    return f"{what} for ≥ {settings.min_duration_ns / NS_PER_S:g} s"


def client_loop(client: ClientSettings, qps: float, flags: common.TargetFlags) -> LoopKind:
    """The loop this process plays on when it plays alone (workers resolve their own)."""
    generator = Generator(client, flags.target_settings())
    return resolve_loop(client.loop, qps / generator.worker_count(qps))
