"""`loadtest offline`: MLPerf Offline — one query of every sample, throughput to last completion."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from loadtest.commands import common, options
from loadtest.core.records import Records
from loadtest.core.settings import DEFAULT_MIN_DURATION_NS, NS_PER_S, OfflineSettings, Protocol
from loadtest.core.target import ModelSpec, Target
from loadtest.engine.measurement import Measurement
from loadtest.engine.runner import OnStart
from loadtest.errors import SettingsError
from loadtest.models import DEFAULT_SERVER_MODEL
from loadtest.scenarios.mlperf.play import calibrate_offline, run_offline
from loadtest.server.deployment import EmbeddedMode

Tick = Callable[[Records, int], None]


def offline(
    model: options.ModelOption = DEFAULT_SERVER_MODEL,
    expected_qps: Annotated[
        str,
        typer.Option(
            parser=options.auto_or_positive_float,
            help="Expected samples/s; sizes the query to 1.1 × duration × this. 'auto': measured "
            "first by a short closed-loop calibration at --max-in-flight (--mlperf: a number).",
        ),
    ] = options.AUTO,
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
    """Run the MLPerf Offline scenario: all samples due at once, throughput = samples / time."""
    qps = options.auto_value(expected_qps)
    if qps is None and mlperf:
        raise SettingsError("--mlperf needs an explicit --expected-qps (auto is not LoadGen's)")
    settings = OfflineSettings(
        expected_qps=qps,
        min_duration_ns=common.min_duration_ns(duration, mlperf, DEFAULT_MIN_DURATION_NS),
        min_query_count=min_queries,
        max_in_flight=max_in_flight,
        batch_size=batch_size,
        sample_seed=sample_seed,
        sample_count=samples,
        max_duration_ns=common.max_duration_ns(max_duration),
        keep_records=records,
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
        output=output,
        live=live,
        batch_size=settings.batch_size,
        force=force,
        settings_used=lambda: sized[0],
    )
