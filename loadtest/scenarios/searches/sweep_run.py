"""Runs a sweep: each configuration the strategy picks is loaded, warmed, and given a find-peak;
the loaded configuration is put back at the end, whatever ends it.

Owns the budget clock and the server side; the choice of points is sweep_search.py's. Per
point: load the configuration (a rejection is a failed point, and the sweep goes on), reopen the
target (the model was reloaded), a short closed loop that warms the new instances and caps the
search (× 1.1, as find-peak's calibration), then `search_peak` seeded at the neighbour's peak,
then the boundary probe once more on another seed: the peak's interval is
[the highest rate VALID every time, the lowest rate INVALID]
(`peak_search.bracket` over all probes). Over a shape (load stages, a trace) every probe plays
it whole at a speed-up, as find-peak's do; a trace's times do not depend on the seed, so its
repeat replays the same times (docs/TRACES.md "sweep and compare over a shape").

Putting the configuration back: `run_sweep` restores in a `finally` after the points, on a stop
request (Ctrl-C, SIGTERM: the probe running ends, no new point starts), on an error (recorded in
the outcome, the partial result kept), and on success; `restore` is idempotent so the command can
call it again when the event loop itself was torn down. A SIGKILL cannot be caught: the server is
then left on the configuration being measured (README says how to reload it).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from loadtest.core.prompts import PromptSettings
from loadtest.core.records import Records
from loadtest.core.settings import NS_PER_S, PeakSettings
from loadtest.core.target import Target
from loadtest.engine import stopping
from loadtest.engine.samples import open_with_samples
from loadtest.engine.selfmeasure import Progress
from loadtest.errors import LoadtestError, SettingsError
from loadtest.scenarios.mlperf.play import Generator, closed_loop_throughput
from loadtest.scenarios.searches.peak_run import (
    PROBE_OVERHEAD_S,
    PeakOutcome,
    ProbeRun,
    probe_at,
    probe_seconds,
    search_peak,
)
from loadtest.scenarios.searches.peak_search import FAILED_LATENCY_NS, Probe, bracket
from loadtest.scenarios.searches.sweep_search import PointResult, Step, SweepSearch, rank
from loadtest.scenarios.searches.sweep_space import Candidate, SearchSpace, apply_candidate
from loadtest.server.model_control import ConfigRejected

CEILING = 1.1  # × the closed-loop throughput: no mean rate above it is sustainable
SEED_START = 0.9  # a seeded search starts just below the neighbour's peak


class ModelConfigurator(Protocol):
    """What the sweep needs from the server side (Triton's repository API, or a fake)."""

    async def loaded(self) -> dict[str, Any]:
        """The configuration loaded now (Triton's JSON form); read once, before any change."""
        ...

    async def apply(self, config: dict[str, Any]) -> None:
        """Load the model with this complete configuration; ConfigRejected if refused."""
        ...

    async def restore(self) -> str:
        """Load the original configuration again (idempotent); "" or what went wrong."""
        ...

    async def memory(self) -> tuple[int | None, str]:
        """The model's memory now, in bytes, and where the figure comes from."""
        ...


@dataclass(frozen=True)
class SweepSettings:
    """The sweep's own knobs; `peak` holds the SLO and probe settings (its budget is the whole
    sweep's)."""

    peak: PeakSettings
    point_budget_ns: int  # the most one point's search may take
    warmup_ns: int = NS_PER_S
    repeat_boundary: bool = True
    max_points: int = 0  # 0 = until converged or out of budget

    def __post_init__(self) -> None:
        if self.point_budget_ns <= 0:
            raise SettingsError("--point-budget must be > 0 s")
        if self.warmup_ns <= 0:
            raise SettingsError("--warmup must be > 0 s")
        if self.max_points < 0:
            raise SettingsError(f"--max-points must be ≥ 0, got {self.max_points}")


@dataclass(frozen=True)
class SweepPoint:
    """One configuration's measurement, with everything the report prints about it."""

    number: int
    result: PointResult
    reason: str
    config: dict[str, Any]
    outcome: PeakOutcome | None
    repeat: ProbeRun | None
    closed_loop_qps: float | None
    load_s: float
    elapsed_s: float
    memory_source: str
    latency_at_peak_ns: int | None  # at the bound's percentile, from scheduled time
    client_bound: bool  # some probe of this point was client-bound
    status: str  # find-peak's status, "failed to load", "not measured", ...

    @property
    def candidate(self) -> Candidate:
        return self.result.candidate


@dataclass(frozen=True)
class SweepOutcome:
    points: tuple[SweepPoint, ...]
    baseline: Candidate
    grid_size: int
    elapsed_s: float
    converged: bool  # the climb found no unmeasured neighbour left
    budget_exhausted: bool
    interrupted: bool
    stop_reason: str
    error: str  # an error that ended the sweep early ("" if none)
    restore_problem: str  # "" when the original configuration is loaded again

    def ranked(self) -> list[SweepPoint]:
        by_result = {id(p.result): p for p in self.points}
        return [by_result[id(r)] for r in rank([p.result for p in self.points])]

    @property
    def winner(self) -> SweepPoint | None:
        ranked = self.ranked()
        return ranked[0] if ranked and ranked[0].result.usable else None

    @property
    def baseline_point(self) -> SweepPoint | None:
        return next((p for p in self.points if p.candidate == self.baseline.normal()), None)


@dataclass
class SweepCallbacks:
    """For the progress display and the plain per-point lines."""

    on_point_start: Callable[[int, Step], None] = lambda number, step: None
    on_point: Callable[[SweepPoint], None] = lambda point: None
    on_probe: Callable[[ProbeRun], None] = lambda run: None
    on_stage: Callable[[str, float], None] = lambda label, expected_s: None
    on_tick: Callable[[Records | Progress, int], None] | None = None


@dataclass(frozen=True)
class Samples:
    """How the target's sample library is rebuilt after each reload."""

    count: int
    seed: int
    input_data: Path | None = None
    shapes: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    prompts: PromptSettings = dataclasses.field(default_factory=PromptSettings)


def interval(probes: Sequence[Probe], resolution: float) -> tuple[float | None, float, float]:
    """(peak, low, high) over all probes of a point, the repeated boundary probe included.

    With no failing rate above the peak (the budget, the throughput ceiling or the client stopped
    the search) the top is unknown, and the point is credited only with what it showed: the
    interval is the search's resolution above the peak, not the ceiling (a wide unknown interval
    would tie with every better point and win on cost)."""
    b = bracket(probes)
    if b.lo is None:
        high = b.hi.qps if b.hi is not None else 0.0
        return None, 0.0, high
    low = b.lo.qps
    high = b.hi.qps if b.hi is not None else low * (1 + resolution)
    return low, low, high


def _latency_at(runs: Sequence[ProbeRun], qps: float | None) -> int | None:
    at = [r for r in runs if qps is not None and r.probe.qps == qps and r.probe.valid]
    if not at:
        return None
    latency = at[-1].probe.latency_ns
    return None if latency >= FAILED_LATENCY_NS else latency


class _Clock:
    def __init__(self, budget_s: float) -> None:
        self.started = time.monotonic()
        self.budget_s = budget_s

    def used(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return self.budget_s - self.used()


@dataclass(frozen=True)
class _Sweep:
    """What every point of one sweep is measured with (run_sweep's arguments, and its clock)."""

    target: Target
    configurator: ModelConfigurator
    original: dict[str, Any]  # the configuration loaded before the sweep
    settings: SweepSettings
    samples: Samples
    request_timeout_s: float
    generator: Generator | None
    calls: SweepCallbacks
    clock: _Clock


async def run_sweep(
    target: Target,
    configurator: ModelConfigurator,
    space: SearchSpace,
    baseline: Candidate,
    settings: SweepSettings,
    samples: Samples,
    request_timeout_s: float,
    generator: Generator | None = None,
    callbacks: SweepCallbacks | None = None,
) -> SweepOutcome:
    """Climb from `baseline` (already loaded) until converged, out of budget or stopped; always
    restore the original configuration. The target is closed at the end."""
    calls = callbacks or SweepCallbacks()
    search = SweepSearch(space, baseline, settings.peak.resolution)
    original = await configurator.loaded()
    clock = _Clock(settings.peak.budget_ns / NS_PER_S)
    points: list[SweepPoint] = []
    state = {"converged": False, "exhausted": False, "error": ""}
    sweep = _Sweep(
        target, configurator, original, settings, samples, request_timeout_s, generator, calls,
        clock,
    )  # fmt: skip
    try:
        await _climb(sweep, search, points, state)
    except LoadtestError as exc:
        state["error"] = str(exc)
    finally:
        try:
            await target.close()
        finally:
            problem = await configurator.restore()
    stop = stopping.requested()
    return SweepOutcome(
        points=tuple(points),
        baseline=baseline,
        grid_size=search.space.grid_size(),
        elapsed_s=clock.used(),
        converged=bool(state["converged"]),
        budget_exhausted=bool(state["exhausted"]),
        interrupted=bool(stop),
        stop_reason=stop,
        error=str(state["error"]),
        restore_problem=problem,
    )


async def _climb(
    sweep: _Sweep, search: SweepSearch, points: list[SweepPoint], state: dict[str, object]
) -> None:
    load_s = 0.0  # the last load's duration, to budget the next
    while True:
        if stopping.requested():
            return
        step = search.next_step([p.result for p in points])
        if step is None:
            state["converged"] = True
            return
        if sweep.settings.max_points and len(points) >= sweep.settings.max_points:
            return
        start_s = probe_seconds(sweep.settings.peak, step.seed_qps or 1e9)
        needed = load_s + sweep.settings.warmup_ns / NS_PER_S + 2 * (start_s + PROBE_OVERHEAD_S)
        if sweep.clock.left() < needed:
            state["exhausted"] = True
            return
        number = len(points) + 1
        sweep.calls.on_point_start(number, step)
        point = await _measure_point(sweep, number, step)
        load_s = max(load_s, point.load_s)
        points.append(point)
        sweep.calls.on_point(point)


def _failed(
    number: int, step: Step, config: dict[str, Any], why: str, load_s: float, began: float
) -> SweepPoint:
    return SweepPoint(
        number=number,
        result=PointResult(step.candidate, None, 0.0, 0.0, failed=why),
        reason=step.reason,
        config=config,
        outcome=None,
        repeat=None,
        closed_loop_qps=None,
        load_s=load_s,
        elapsed_s=time.monotonic() - began,
        memory_source="",
        latency_at_peak_ns=None,
        client_bound=False,
        status="failed to load",
    )


async def _measure_point(sweep: _Sweep, number: int, step: Step) -> SweepPoint:
    began = time.monotonic()
    is_baseline = step.baseline
    config = sweep.original if is_baseline else apply_candidate(sweep.original, step.candidate)
    load_s = 0.0
    await sweep.target.close()
    if not is_baseline:
        sweep.calls.on_stage(f"loading {step.candidate.label()}", 0.0)
        try:
            await sweep.configurator.apply(config)
        except ConfigRejected as exc:
            return _failed(number, step, config, str(exc), time.monotonic() - began, began)
        load_s = time.monotonic() - began
    try:
        spec, library = await open_with_samples(
            sweep.target,
            sweep.samples.count,
            sweep.samples.seed,
            sweep.samples.input_data,
            sweep.samples.shapes,
            prompts=sweep.samples.prompts,
        )
    except LoadtestError as exc:
        return _failed(number, step, config, f"not usable after loading: {exc}", load_s, began)
    peak = sweep.settings.peak
    sweep.calls.on_stage(
        "warm-up: closed loop (caps the search)", sweep.settings.warmup_ns / NS_PER_S
    )
    closed, _seconds, stopped = await closed_loop_throughput(
        sweep.target,
        len(library),
        peak.sample_seed,
        peak.calibration_in_flight,
        sweep.settings.warmup_ns,
        max_qps=peak.max_qps,
    )
    if stopped:
        return _unmeasured(number, step, config, load_s, began, f"{stopped} during warm-up")
    if closed <= 0:
        return _failed(number, step, config, "no query succeeded after loading", load_s, began)
    ceiling = CEILING * closed
    if peak.max_qps:  # --max-qps: no probe above it (the warm-up was paced to it too)
        ceiling = min(ceiling, peak.max_qps)
    start = SEED_START * step.seed_qps if step.seed_qps else 0.5 * closed
    start = max(min(start, SEED_START * ceiling), 0.1)
    repeat_s = (
        probe_seconds(peak, start) + PROBE_OVERHEAD_S if sweep.settings.repeat_boundary else 0
    )
    search_budget = min(sweep.settings.point_budget_ns / NS_PER_S, sweep.clock.left() - repeat_s)
    point_settings = dataclasses.replace(
        peak,
        budget_ns=int(max(search_budget, 0.001) * NS_PER_S),
        start_qps=round(start, 3),
        max_qps=round(ceiling, 3),
    )
    outcome = await search_peak(
        sweep.target,
        spec,
        len(library),
        point_settings,
        sweep.request_timeout_s,
        on_probe=sweep.calls.on_probe,
        generator=sweep.generator,
        on_stage=sweep.calls.on_stage,
        on_tick=sweep.calls.on_tick,
    )
    runs = list(outcome.runs)
    repeat = None
    found = outcome.conclusion.peak_qps
    fits = sweep.clock.left() > probe_seconds(peak, found or 1) + PROBE_OVERHEAD_S
    if sweep.settings.repeat_boundary and found and not outcome.interrupted and fits:
        sweep.calls.on_stage(f"repeat of the boundary probe at {found:,.1f} QPS", 0.0)
        repeat_settings = dataclasses.replace(peak, schedule_seed=peak.schedule_seed + 1)
        repeat, _ = await probe_at(
            sweep.target, spec, len(library), repeat_settings, found, sweep.request_timeout_s,
            sweep.generator, sweep.calls.on_tick,
        )  # fmt: skip
        sweep.calls.on_probe(repeat)
        runs.append(repeat)
    probes = [r.probe for r in runs]
    confirmed, low, high = interval(probes, peak.resolution)
    memory, source = await sweep.configurator.memory()
    return SweepPoint(
        number=number,
        result=PointResult(step.candidate, confirmed, low, high, memory_bytes=memory),
        reason=step.reason,
        config=config,
        outcome=outcome,
        repeat=repeat,
        closed_loop_qps=closed,
        load_s=load_s,
        elapsed_s=time.monotonic() - began,
        memory_source=source,
        latency_at_peak_ns=_latency_at(runs, confirmed),
        client_bound=any(p.client_bound for p in probes),
        status=outcome.conclusion.status,
    )


def _unmeasured(
    number: int, step: Step, config: dict[str, Any], load_s: float, began: float, why: str
) -> SweepPoint:
    point = _failed(number, step, config, why, load_s, began)
    return dataclasses.replace(point, status="not measured")
