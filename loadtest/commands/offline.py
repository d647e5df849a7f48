"""`loadtest offline`: MLPerf Offline — one query of every sample, throughput to last completion."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from loadtest.commands import common, options
from loadtest.commands import flag_groups as groups
from loadtest.core.records import Records
from loadtest.core.settings import DEFAULT_MIN_DURATION_NS, NS_PER_S, OfflineSettings
from loadtest.core.target import ModelSpec, Target
from loadtest.engine.measurement import Measurement
from loadtest.engine.runner import OnStart
from loadtest.errors import SettingsError
from loadtest.models import DEFAULT_SERVER_MODEL
from loadtest.scenarios.mlperf.play import calibrate_offline, run_offline

Tick = Callable[[Records, int], None]


@groups.takes_groups
def offline(
    *,
    model: options.ModelOption = DEFAULT_SERVER_MODEL,
    expected_qps: Annotated[
        str,
        typer.Option(
            parser=options.auto_or_positive_float,
            help="Expected samples/s; sizes the query to 1.1 × duration × this. 'auto': measured "
            "first by a short closed-loop calibration at --max-in-flight (--mlperf: a number).",
        ),
    ] = options.AUTO,
    run: groups.RunLength,
    max_in_flight: Annotated[
        int, typer.Option(help="Requests outstanding at once: the only brake on issuing.")
    ] = 64,
    batch_size: Annotated[int, typer.Option(help="Samples per request.")] = 1,
    mlperf: options.MlperfOption = False,
    endpoint: groups.Endpoint,
    samples: groups.SampleLibrary,
    output: Annotated[groups.Output, groups.take("html")],
    checks: groups.Checks,
    access: groups.Access,
    ttft_bound: options.TtftBoundOption = None,
    tpot_bound: options.TpotBoundOption = None,
    mlperf_model: options.MlperfModelOption = None,
) -> None:
    """Run the MLPerf Offline scenario: all samples due at once, throughput = samples / time."""
    common.refuse_token_bounds("Offline", ttft_bound, tpot_bound, mlperf_model)
    qps = options.auto_value(expected_qps)
    if qps is None and mlperf:
        raise SettingsError("--mlperf needs an explicit --expected-qps (auto is not LoadGen's)")
    settings = OfflineSettings(
        expected_qps=qps,
        **run.settings_fields(mlperf, DEFAULT_MIN_DURATION_NS),
        max_in_flight=max_in_flight,
        batch_size=batch_size,
        sample_seed=samples.sample_seed,
        sample_count=samples.samples,
        keep_records=output.records,
        **checks.settings_fields(mlperf),
    )
    flags = groups.target_flags(model, endpoint, samples, access)
    sized = [settings]  # the settings the run used: resolved by the calibration when auto

    async def play(
        target: Target, spec: ModelSpec, count: int, tick: Tick, on_start: OnStart
    ) -> Measurement:
        if settings.expected_qps is None:
            common.say(
                f"calibrating: closed loop, {settings.max_in_flight} in flight, "
                f"{settings.calibration_ns / NS_PER_S:g} s (--expected-qps auto)"
            )
        sized[0] = run_settings = await calibrate_offline(target, count, settings)
        if (calibration := run_settings.calibration) is not None:
            common.say(
                f"calibrated: {calibration.samples_per_s:,.1f} samples/s closed loop "
                f"({calibration.in_flight} in flight, {calibration.seconds:g} s); query "
                f"{run_settings.query_samples} samples = 1.1 × "
                f"{run_settings.min_duration_ns / NS_PER_S:g} s × {calibration.headroom:g} × that"
            )
        return await run_offline(target, spec, count, run_settings, on_tick=tick, on_start=on_start)

    sizing = (
        "sized by a closed-loop calibration"
        if qps is None
        else f"{settings.query_samples} samples sized for {qps:g}/s"
    )
    common.execute(
        settings,
        flags,
        title=(
            f"Offline scenario: {sizing} over {settings.min_duration_ns / NS_PER_S:g} s, "
            f"≤ {max_in_flight} requests in flight"
        ),
        play=lambda target, spec, count, tick, _resolved, on_start: play(
            target, spec, count, tick, on_start
        ),
        output=output.output,
        live=output.live,
        batch_size=settings.batch_size,
        force=output.force,
        settings_used=lambda: sized[0],
    )
