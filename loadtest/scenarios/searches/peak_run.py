"""Runs a peak search on an opened target: calibration, then probes chosen by PeakSearch.

Owns the budget clock (the search itself is pure). Each probe is a full Server-scenario run,
judged by one of three pass rules (PeakSettings.token_rule and goodput_rule say which):
- MLPerf's: the run is VALID (the percentile within the bound, early stopping, no failures);
- MLPerf's token rule (LoadGen's LLM Server): VALID with the end-to-end bound and its early
  stopping replaced by p TTFT and p TPOT within their bounds, early stopping on each, and no
  answer of ≤ 1 token (rules/tokens.token_checks, as `server` judges them). The search reads the
  worse of the two percentile ÷ bound ratios (rules/tokens.token_ratio), scaled as goodput's;
- goodput's: at least `goodput_target` of the requests sent meet every --slo at once
  (rules/goodput.py). The search then reads the requests' SLO ratio at that share, scaled so
  that NORMALIZED_BOUND_NS stands for "exactly at the bounds", as find-peak --mix reads its
  worst entry.
Either way a client that fell behind its schedule neither passes nor fails the probe unless the
server failed even when measured from the actual sends. A probe's minimum query count is raised
to what early stopping needs at the bound's percentile, or at the goodput share (×1.3): at low
rates a probe then lasts longer than --probe-duration rather than failing for too few queries,
which would say nothing about the server.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from loadtest.core.arrivals import Timestamps
from loadtest.core.records import Records
from loadtest.core.settings import NS_PER_S, PeakSettings, ServerSettings
from loadtest.core.stages import Staged, StagedArrivals
from loadtest.core.target import ModelSpec, Target
from loadtest.engine import stopping
from loadtest.engine.measurement import Measurement
from loadtest.engine.selfmeasure import Progress
from loadtest.rules.goodput import SEND, Goodput, goodput, holds, ratio_at_share
from loadtest.rules.stage_results import StageResult, stage_results, stages_check
from loadtest.rules.stats import Summary, exact_percentile, exact_percentile_with_failures
from loadtest.rules.tokens import (
    fastest_ratio,
    per_query,
    token_figures,
    token_ratio,
)
from loadtest.rules.validity import (
    CLIENT_KEPT_UP,
    Verdict,
    expected_min_queries,
    with_check,
)
from loadtest.scenarios.mlperf.interpret import (
    interpret_server,
    interpret_server_tokens,
    token_bounds,
)
from loadtest.scenarios.mlperf.play import Generator, closed_loop_throughput, run_server
from loadtest.scenarios.searches.peak_search import (
    FAILED_LATENCY_NS,
    GOODPUT_WORDS,
    MLPERF_WORDS,
    NORMALIZED_BOUND_NS,
    Conclusion,
    PeakSearch,
    Probe,
)

PROBE_OVERHEAD_S = 1.5  # drain, interpretation and reconnect between probes, for budgeting
# A goodput target of 100 % needs every request good; its probe minimum is taken at 99.9 %
# (a flawless probe of ceil(log(0.01) / log(0.999)) × 1.3 ≈ 6,000 queries), not infinity.
MAX_COUNTED_SHARE = 0.999


@dataclass(frozen=True)
class ProbeRun:
    probe: Probe
    settings: ServerSettings
    summary: Summary
    verdict: Verdict
    client_cpu_s: float
    goodput: Goodput | None = None  # the goodput rule's figures (None under MLPerf's rule)
    token_ratio: float | None = None  # the token rule's worst percentile ÷ bound (None: not it)
    # the token rule's p TTFT (from the scheduled time) and p TPOT of the successful answers (ns)
    ttft_ns: int | None = None
    tpot_ns: int | None = None
    tokens_per_s: float | None = None  # the token rule's completed tokens/s (LoadGen's figure)
    # over --stages (MLPerf's rule): each stage judged alone, which the verdict counts
    stages: tuple[StageResult, ...] = ()


@dataclass(frozen=True)
class PeakOutcome:
    runs: tuple[ProbeRun, ...]
    conclusion: Conclusion
    calibration_qps: float | None  # closed-loop throughput measured before probing
    elapsed_s: float
    budget_exhausted: bool
    interrupted: bool
    stop_reason: str = ""  # why it was interrupted (SIGINT, SIGTERM)


async def calibrate(target: Target, sample_count: int, settings: PeakSettings) -> tuple[float, str]:
    """Closed-loop throughput with `calibration_in_flight` outstanding: an upper bound on any
    sustainable Poisson rate, so the search starts near the knee instead of doubling up to it.
    Also why it was stopped early ("" when it was not)."""
    qps, _seconds, stopped = await closed_loop_throughput(
        target,
        sample_count,
        settings.sample_seed,
        settings.calibration_in_flight,
        settings.calibration_ns,
        max_qps=settings.max_qps,
    )
    return qps, stopped


def _probe_of(
    settings: ServerSettings, measurement: Measurement, goodput_target: float = 0.0
) -> ProbeRun:
    """A probe judged by MLPerf's rule, by the token rule when the settings hold token bounds,
    or by the goodput rule when `goodput_target` is set."""
    if settings.ttft_bound_ns or settings.tpot_bound_ns:
        return _token_probe(settings, measurement)
    summary, verdict = interpret_server(settings, measurement.outcome)
    if goodput_target:
        return _goodput_probe(settings, measurement, summary, verdict, goodput_target)
    arrivals = settings.arrivals
    stages: tuple[StageResult, ...] = ()
    if isinstance(arrivals, StagedArrivals):  # over stages, a probe is VALID if every stage is
        stages = stage_results(
            measurement.outcome.records, arrivals, settings.target_latency_ns, settings.percentile
        )
        verdict = with_check(verdict, stages_check(stages))
    latencies = measurement.outcome.records.latency_from_scheduled_ns()
    latencies.sort()
    # Failures count as +∞, as in the verdict: a rate where the server drops requests never
    # looks faster than one where it answers them late.
    at_percentile: int | None = FAILED_LATENCY_NS
    if len(latencies) + summary.failed:
        at_percentile = exact_percentile_with_failures(
            latencies, summary.failed, settings.percentile
        )
    if at_percentile is None:
        at_percentile = FAILED_LATENCY_NS
    # A client that fell behind cannot clear or convict the server, unless the latency from the
    # *actual* send (which excludes the client's lag) already breaks the bound: then the server
    # failed at this rate whatever the client did.
    from_send = summary.latency_from_issue.percentiles().get(settings.percentile)
    if from_send is None:
        ranked = measurement.outcome.records.latency_from_issue_ns()
        ranked.sort()
        from_send = exact_percentile(ranked, settings.percentile) if len(ranked) else 0
    server_failed_anyway = from_send > settings.target_latency_ns
    probe = Probe(
        qps=settings.qps,
        latency_ns=int(at_percentile),
        valid=verdict.valid,
        client_bound=not summary.client_kept_up and not server_failed_anyway,
        completed_qps=summary.completed_qps,
        reasons=verdict.reasons,
        fastest_ns=summary.latency_from_issue.min_ns,
    )
    return ProbeRun(probe, settings, summary, verdict, measurement.client_cpu_s, stages=stages)


def _goodput_probe(
    settings: ServerSettings,
    measurement: Measurement,
    summary: Summary,
    verdict: Verdict,
    target: float,
) -> ProbeRun:
    """The goodput rule: passes when ≥ `target` of the sent requests meet every SLO; the search
    reads the SLO ratio at that share (see the module docstring)."""
    records = measurement.outcome.records
    result = goodput(records, settings.slos)
    passed = holds(result, target)
    ratio = ratio_at_share(records, settings.slos, target)
    measure = FAILED_LATENCY_NS if math.isinf(ratio) else round(ratio * NORMALIZED_BOUND_NS)
    # The client-bound rule, as MLPerf's: a lagging client clears nothing, but convicts the server
    # when goodput misses its target even measured from the actual sends (its lag taken out).
    server_failed_anyway = not holds(goodput(records, settings.slos, SEND), target)
    client_bound = not summary.client_kept_up and not server_failed_anyway
    reasons = [] if passed else [f"goodput {result.share * 100:.2f} % < {target * 100:g} %"]
    lagged = verdict.check(CLIENT_KEPT_UP)
    if lagged is not None and not lagged.passed:
        reasons.append(lagged.detail)
    probe = Probe(
        qps=settings.qps,
        latency_ns=min(FAILED_LATENCY_NS, measure),
        valid=passed and summary.client_kept_up,
        client_bound=client_bound,
        completed_qps=summary.completed_qps,
        reasons=tuple(reasons),
    )
    return ProbeRun(probe, settings, summary, verdict, measurement.client_cpu_s, result)


def _token_probe(settings: ServerSettings, measurement: Measurement) -> ProbeRun:
    """The token rule (interpret_server_tokens); the search reads the worse token ratio."""
    records = measurement.outcome.records
    summary, judged = interpret_server_tokens(settings, measurement.outcome)
    bounds = token_bounds(settings)
    ratio = token_ratio(records, bounds, summary.failed)
    measure = FAILED_LATENCY_NS if math.isinf(ratio) else round(ratio * NORMALIZED_BOUND_NS)
    # A lagging client clears nothing, but convicts the server when a bound is broken even with
    # TTFT from the actual send (TPOT holds no send lag).
    server_failed_anyway = token_ratio(records, bounds, summary.failed, from_send=True) > 1
    fastest = fastest_ratio(records, bounds)
    answers = per_query(records)
    figures = token_figures(records)
    probe = Probe(
        qps=settings.qps,
        latency_ns=min(FAILED_LATENCY_NS, measure),
        valid=judged.valid,
        client_bound=not summary.client_kept_up and not server_failed_anyway,
        completed_qps=summary.completed_qps,
        reasons=judged.reasons,
        fastest_ns=min(FAILED_LATENCY_NS, round(fastest * NORMALIZED_BOUND_NS)),
    )
    return ProbeRun(
        probe,
        settings,
        summary,
        judged,
        measurement.client_cpu_s,
        token_ratio=ratio,
        ttft_ns=_at(answers.ttft, settings.percentile),
        tpot_ns=_at(answers.tpot, settings.percentile),
        tokens_per_s=figures.completed_tokens_per_s if figures else None,
    )


def _at(values: np.ndarray, percentile: float) -> int | None:
    """The exact percentile of a probe's answers (None: no answer)."""
    return exact_percentile(np.sort(values), percentile) if len(values) else None


# The one probe judgement, also applied to each entry of a mix (scenarios/searches/mix_peak_run.py).
probe_of = _probe_of


async def search_peak(
    target: Target,
    model: ModelSpec,
    sample_count: int,
    settings: PeakSettings,
    request_timeout_s: float,
    on_probe: Callable[[ProbeRun], None] = lambda run: None,
    on_calibration: Callable[[float], None] = lambda qps: None,
    generator: Generator | None = None,
    on_stage: Callable[[str, float], None] = lambda label, expected_s: None,
    on_tick: Callable[[Records | Progress, int], None] | None = None,
) -> PeakOutcome:
    """Calibrate (unless a start rate is given), then probe until the search concludes, the
    budget would be overrun, or a stop is requested. The callbacks are for a progress display:
    `on_stage` names each stage and how long it is expected to take, `on_tick` is each probe's
    runner tick, `on_probe` reports each finished probe."""
    started = time.monotonic()
    budget_s = settings.budget_ns / NS_PER_S
    calibration_qps = None
    start_qps = settings.start_qps
    ceiling = settings.max_qps or None
    if not start_qps:
        on_stage("calibration: closed-loop throughput", settings.calibration_ns / NS_PER_S)
        calibration_qps, stopped = await calibrate(target, sample_count, settings)
        if stopped:
            probes: list[Probe] = []
            return PeakOutcome(
                runs=(),
                conclusion=PeakSearch(settings.target_latency_ns, 1.0).conclusion(probes, False),
                calibration_qps=calibration_qps,
                elapsed_s=time.monotonic() - started,
                budget_exhausted=False,
                interrupted=True,
                stop_reason=f"{stopped} during calibration",
            )
        on_calibration(calibration_qps)
        start_qps = max(0.5 * calibration_qps, 0.1)
        ceiling = min(ceiling or math.inf, 1.1 * calibration_qps)
        if ceiling is math.inf:
            ceiling = None
    search = PeakSearch(
        target_latency_ns=(
            NORMALIZED_BOUND_NS
            if settings.goodput_rule or settings.token_rule
            else settings.target_latency_ns
        ),
        start_qps=start_qps if not ceiling else min(start_qps, ceiling * 0.9),
        resolution=settings.resolution,
        ceiling_qps=ceiling,
        words=GOODPUT_WORDS if settings.goodput_rule else MLPERF_WORDS,
        normalized=settings.token_rule,
    )
    runs: list[ProbeRun] = []
    exhausted = interrupted = False
    stop_reason = ""
    while (qps := search.next_qps([r.probe for r in runs])) is not None:
        if stopping.requested():  # stopped between probes
            interrupted, stop_reason = True, stopping.requested()
            break
        expected_s = probe_seconds(settings, qps)
        if time.monotonic() - started + expected_s + PROBE_OVERHEAD_S > budget_s:
            exhausted = True
            break
        law = getattr(settings.arrival_law, "label", settings.arrival_law.name)
        on_stage(f"probe {len(runs) + 1} at {qps:,.1f} QPS ({law})", expected_s)
        run, measurement = await _run_probe(
            target, model, sample_count, settings, qps, request_timeout_s, generator, on_tick
        )
        runs.append(run)
        on_probe(run)
        if measurement.outcome.interrupted:
            interrupted = True
            stop_reason = measurement.outcome.stop_reason
            break
    probes = [r.probe for r in runs]
    return PeakOutcome(
        runs=tuple(runs),
        conclusion=search.conclusion(probes, exhausted, interrupted),
        calibration_qps=calibration_qps,
        elapsed_s=time.monotonic() - started,
        budget_exhausted=exhausted,
        interrupted=interrupted,
        stop_reason=stop_reason,
    )


async def probe_at(
    target: Target,
    model: ModelSpec,
    sample_count: int,
    settings: PeakSettings,
    qps: float,
    request_timeout_s: float,
    generator: Generator | None = None,
    on_tick: Callable[[Records | Progress, int], None] | None = None,
) -> tuple[ProbeRun, bool]:
    """One probe at `qps` as the search runs them (same minimum query count), outside a search:
    the sweep repeats the boundary probe with it. Also whether a stop interrupted it."""
    run, measurement = await _run_probe(
        target, model, sample_count, settings, qps, request_timeout_s, generator, on_tick
    )
    return run, measurement.outcome.interrupted


async def _run_probe(
    target: Target,
    model: ModelSpec,
    sample_count: int,
    settings: PeakSettings,
    qps: float,
    request_timeout_s: float,
    generator: Generator | None,
    on_tick: Callable[[Records | Progress, int], None] | None,
) -> tuple[ProbeRun, Measurement]:
    """One Server-scenario probe at `qps`, judged: the search's and probe_at's shared step."""
    probe_settings = settings.probe(round(qps, 3), probe_min_queries(settings))
    measurement = await run_server(
        target,
        model,
        sample_count,
        probe_settings,
        drain_timeout_ns=int((request_timeout_s + 5) * NS_PER_S),
        on_tick=on_tick,
        generator=generator,
    )
    return _probe_of(probe_settings, measurement, settings.goodput_target), measurement


def probe_min_queries(settings: PeakSettings) -> int:
    """What early stopping needs at the bound's percentile (or the goodput share), ×1.3 (see the
    module docstring)."""
    share = (
        min(settings.goodput_target, MAX_COUNTED_SHARE)
        if settings.goodput_rule
        else settings.percentile
    )
    return math.ceil(1.3 * expected_min_queries(share, settings.early_stopping_confidence))


def probe_seconds(settings: PeakSettings, qps: float) -> float:
    """How long one probe at `qps` lasts (its minimum duration, or its minimum query count; a
    shape: its whole length at that speed-up)."""
    if settings.shaped:
        law = settings.probe(qps, 1).arrival_law
        if isinstance(law, Staged):
            return law.profile.duration_ns / NS_PER_S
        assert isinstance(law, Timestamps)
        return int(law.times_ns[-1]) / NS_PER_S
    min_queries = probe_min_queries(settings)
    return max(settings.probe_duration_ns / NS_PER_S, min_queries / max(qps, 1e-9))
