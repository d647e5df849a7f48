"""`loadtest compare`'s peak search: each target's highest VALID rate, probes interleaved.

The same search as find-peak and sweep (peak_search.PeakSearch, one per target), driven in turns:
Triton's next probe, then native's, then Triton's... so both targets meet the same minutes of a
shared machine (slow drift, a neighbour's burst) instead of one getting the quiet half. Each target
is first calibrated (closed loop, in turn) for its start rate and ceiling. When a target's search
has concluded, its boundary probe (its peak) is repeated on another Poisson seed, still in turns;
a repeat that fails lowers the bracket's top to that rate, and the search resumes inside the new
bracket, until its peak has passed on two seeds (or the budget ends it). The peak's interval is
the sweep's: [the highest rate VALID every time it ran, the lowest rate INVALID]
(sweep_run.interval). One lucky probe then cannot decide the ratio.

The budget (--budget) is the whole search's, shared by the targets; a probe that would overrun it
(keeping room for the repeats) is not started.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from loadtest.core.settings import NS_PER_S, PeakSettings
from loadtest.core.target import ModelSpec, Target
from loadtest.engine import stopping
from loadtest.scenarios.experiments import compare_run
from loadtest.scenarios.experiments.compare_run import CompareResult, CompareSession, CompareSetup
from loadtest.scenarios.mlperf.play import Generator
from loadtest.scenarios.searches.peak_run import (
    PROBE_OVERHEAD_S,
    ProbeRun,
    calibrate,
    probe_at,
    probe_seconds,
)
from loadtest.scenarios.searches.peak_search import Conclusion, PeakSearch, Probe, bracket
from loadtest.scenarios.searches.sweep_run import interval

OnProbe = Callable[[str, ProbeRun, bool], None]  # target, probe, is it a repeat


@dataclass(frozen=True)
class TargetPeak:
    """One target's search: every probe in the order run, and the peak with its interval."""

    target: str
    calibration_qps: float | None
    runs: tuple[ProbeRun, ...]  # the search's probes, then the repeat(s) of its boundary
    repeated: tuple[bool, ...]  # per run: a repeat of the boundary probe on another seed
    conclusion: Conclusion  # the search's own, over every probe (the repeats included)
    peak_qps: float | None  # VALID every time it ran (the repeat included)
    low_qps: float
    high_qps: float


@dataclass(frozen=True)
class ComparePeaks:
    settings: PeakSettings
    peaks: dict[str, TargetPeak]  # in target order
    elapsed_s: float
    budget_exhausted: bool
    stop_reason: str  # "" unless a stop signal ended it


@dataclass
class _Search:
    name: str
    target: Target
    search: PeakSearch | None = None
    calibration_qps: float | None = None
    runs: list[ProbeRun] = dataclasses.field(default_factory=list)
    repeated: list[bool] = dataclasses.field(default_factory=list)
    done: bool = False

    def add(self, run: ProbeRun, repeat: bool) -> None:
        self.runs.append(run)
        self.repeated.append(repeat)

    def probes(self) -> list[Probe]:
        return [r.probe for r in self.runs]

    def next_probe(self, repeats: int) -> tuple[float | None, bool]:
        """The next rate and whether it repeats the boundary: the search's next probe; once it
        has concluded, its peak again on another seed, until the peak has run `repeats` + 1
        times. A failed repeat moves the bracket down, and the search resumes inside it. A
        client-bound repeat counts as a run: it says nothing of the server, and repeating it
        where the client cannot keep up only spent the budget (seen: 16 repeats at one rate)."""
        assert self.search is not None
        probes = self.probes()
        qps = self.search.next_qps(probes)
        if qps is not None:
            return qps, False
        lo = bracket(probes).lo
        if lo is None or repeats <= 0:
            return None, False
        runs_at_peak = sum(1 for p in probes if p.qps == lo.qps)
        return (lo.qps, True) if runs_at_peak <= repeats else (None, False)


async def interleaved_peaks(
    targets: Mapping[str, Target],
    spec: ModelSpec,
    sample_count: int,
    settings: PeakSettings,
    request_timeout_s: float,
    repeats: int = 1,
    on_probe: OnProbe = lambda name, run, repeat: None,
    say: Callable[[str], None] = lambda text: None,
    generator: Generator | None = None,
) -> ComparePeaks:
    """Calibrate each target, search every peak one probe per target in turn, then repeat each
    boundary probe `repeats` times on other seeds (in turn too)."""
    started = time.monotonic()
    budget_s = settings.budget_ns / NS_PER_S
    searches = [_Search(name, target) for name, target in targets.items()]
    stop = ""
    for s in searches:
        start, ceiling = settings.start_qps, settings.max_qps or None
        if not start:
            say(f"{s.name}: calibration (closed loop, {settings.calibration_ns / NS_PER_S:g} s)")
            s.calibration_qps, stopped = await calibrate(s.target, sample_count, settings)
            if stopped:
                stop = stopped
                break
            start = max(0.5 * s.calibration_qps, 0.1)
            ceiling = min(ceiling or float("inf"), 1.1 * s.calibration_qps)
        s.search = PeakSearch(
            settings.target_latency_ns,
            start if not ceiling else min(start, 0.9 * ceiling),
            settings.resolution,
            ceiling,
        )

    def left() -> float:
        return budget_s - (time.monotonic() - started)

    def reserve() -> float:
        """Room kept for every target's repeat of its boundary (at its peak so far)."""
        total = 0.0
        for s in searches:
            lo = bracket(s.probes()).lo
            rate = lo.qps if lo else (s.search.start_qps if s.search else 1.0)
            total += probe_seconds(settings, rate) + PROBE_OVERHEAD_S
        return total

    exhausted = False
    while not stop and not all(s.done for s in searches):
        for s in searches:
            if s.done or stop:
                continue
            qps, repeat = s.next_probe(repeats)
            if qps is None:
                s.done = True
                continue
            if stopping.requested():
                stop = stopping.requested()
                break
            room = probe_seconds(settings, qps) + PROBE_OVERHEAD_S
            if room + (0 if repeat else reserve()) > left():
                exhausted, s.done = True, True
                continue
            probe_settings = settings
            if repeat:
                seed = settings.schedule_seed + sum(s.repeated) + 1
                probe_settings = dataclasses.replace(settings, schedule_seed=seed)
                say(f"{s.name}: repeat of the boundary probe at {qps:,.1f} QPS (seed {seed})")
            else:
                say(f"{s.name}: probe at {qps:,.1f} QPS")
            run, interrupted = await probe_at(
                s.target, spec, sample_count, probe_settings, qps, request_timeout_s, generator
            )
            s.add(run, repeat)
            on_probe(s.name, run, repeat)
            if interrupted:
                stop = stopping.requested() or "interrupted"
    peaks = {}
    for s in searches:
        search = s.search or PeakSearch(settings.target_latency_ns, 1.0)
        peak, low, high = interval([r.probe for r in s.runs], settings.resolution)
        peaks[s.name] = TargetPeak(
            target=s.name,
            calibration_qps=s.calibration_qps,
            runs=tuple(s.runs),
            repeated=tuple(s.repeated),
            conclusion=search.conclusion(s.probes(), exhausted),
            peak_qps=peak,
            low_qps=low,
            high_qps=high,
        )
    return ComparePeaks(settings, peaks, time.monotonic() - started, exhausted, stop)


async def measure(
    session: CompareSession,
    setup: CompareSetup,
    peak: PeakSettings | None,
    say: Callable[[str], None],
    on_probe: OnProbe = lambda name, run, repeat: None,
) -> tuple[CompareResult, ComparePeaks | None]:
    """compare_run.measure (checks, fixed rates), then the interleaved peak search when asked."""
    found: list[ComparePeaks] = []

    async def search(spec: ModelSpec, count: int) -> None:
        assert peak is not None
        peaks = await interleaved_peaks(
            session.targets, spec, count, peak, setup.flags.timeout_s, on_probe=on_probe, say=say
        )
        found.append(peaks)

    result = await compare_run.measure(session, setup, say, search if peak else None)
    peaks = found[0] if found else None
    if peaks is not None and peaks.stop_reason and not result.stop_reason:
        result = dataclasses.replace(result, stop_reason=peaks.stop_reason)
    return result, peaks
