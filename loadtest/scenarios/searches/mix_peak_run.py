"""find-peak for a mix: all Server rates scaled together (weights fixed) until the first entry
breaks its own bound; the answer is the mix's peak total QPS and which model broke first.

Each probe plays the whole mix at one total rate (every Server entry at its fixed share of it, on
its own seeded schedule) and judges every entry by its own MLPerf rules (peak_run's probe
judgement, unchanged). The search itself is peak_search.PeakSearch, unchanged, fed one
number per probe: the *worst* entry's latency at its percentile as a fraction of its own bound,
scaled so that 1 s stands for "at the bound" (NORMALIZED_BOUND_NS). A probe is VALID when every
entry is; it is a failure when some entry failed for a reason other than the client falling
behind; it is client-bound (no measurement of the server) otherwise. Offline entries are refused:
they have no bound to break and no rate to scale.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from loadtest.core.settings import NS_PER_S, ClientSettings, PeakSettings, ServerSettings
from loadtest.engine import stopping
from loadtest.engine.runner import nothing_to_do
from loadtest.errors import SettingsError
from loadtest.rules.validity import expected_min_queries
from loadtest.scenarios.experiments.mix_play import OpenedEntry, play_mix
from loadtest.scenarios.experiments.mix_spec import MixSpec
from loadtest.scenarios.searches.peak_run import PROBE_OVERHEAD_S, ProbeRun, probe_of
from loadtest.scenarios.searches.peak_search import (
    FAILED_LATENCY_NS,
    NORMALIZED_BOUND_NS,
    Conclusion,
    PeakSearch,
    Probe,
)

LATENCY_SCALE = (
    "latency_ns of a mix probe = the worst entry's latency at its percentile ÷ its own bound × "
    "1 s (1 s = exactly at the bound); each entry's own latency is under entries"
)


@dataclass(frozen=True)
class MixProbeRun:
    """One probe of the mix: the search's normalized view and every entry's own judgement."""

    probe: Probe
    entries: dict[str, ProbeRun]
    worst: str  # the entry nearest to (or furthest over) its bound

    @property
    def broken(self) -> list[str]:
        """Entries that failed for the server's sake (not only because the client lagged)."""
        return [n for n, r in self.entries.items() if not r.probe.valid and r.probe.counts]


@dataclass(frozen=True)
class MixPeakOutcome:
    runs: tuple[MixProbeRun, ...]
    conclusion: Conclusion
    breaks_first: str | None  # the entry that broke at the lowest failing rate above the peak
    elapsed_s: float
    budget_exhausted: bool
    interrupted: bool
    stop_reason: str = ""


def check_peak_mix(spec: MixSpec) -> None:
    offline = [e.name for e in spec.entries if not isinstance(e.settings, ServerSettings)]
    if offline:
        raise SettingsError(
            f"mix entry {offline[0]!r}: find-peak --mix scales Server rates; an Offline entry has "
            "no rate or bound to scale (drop it from the mix for the search)"
        )


def _ratio(run: ProbeRun) -> float:
    if run.probe.latency_ns >= FAILED_LATENCY_NS:
        return math.inf
    return run.probe.latency_ns / run.settings.target_latency_ns


def mix_probe(total_qps: float, entries: dict[str, ProbeRun]) -> MixProbeRun:
    """The mix probe the search reads, from every entry's own probe judgement."""
    worst = max(entries, key=lambda n: _ratio(entries[n]))
    ratio = _ratio(entries[worst])
    latency = (
        FAILED_LATENCY_NS
        if math.isinf(ratio)
        else min(FAILED_LATENCY_NS, round(ratio * NORMALIZED_BOUND_NS))
    )
    fastest = max(
        r.probe.fastest_ns / r.settings.target_latency_ns * NORMALIZED_BOUND_NS
        for r in entries.values()
    )
    failed = [r for r in entries.values() if not r.probe.valid and r.probe.counts]
    client_bound = not failed and any(r.probe.client_bound for r in entries.values())
    probe = Probe(
        qps=total_qps,
        latency_ns=latency,
        valid=all(r.probe.valid for r in entries.values()),
        client_bound=client_bound,
        completed_qps=sum(r.probe.completed_qps for r in entries.values()),
        reasons=tuple(
            f"{name}: {reason}" for name, r in entries.items() for reason in r.probe.reasons
        ),
        fastest_ns=round(fastest),
    )
    return MixProbeRun(probe, entries, worst)


def probe_spec(spec: MixSpec, total_qps: float, settings: PeakSettings) -> MixSpec:
    """The mix at `total_qps`, each entry lasting the probe duration and holding the queries
    early stopping needs at its percentile (× 1.3, as single-model probes)."""
    scaled = spec.at_total(total_qps)
    entries = []
    for entry in scaled.entries:
        s = entry.settings
        assert isinstance(s, ServerSettings)
        needed = math.ceil(1.3 * expected_min_queries(s.percentile, s.early_stopping_confidence))
        entries.append(
            replace(
                entry,
                settings=replace(
                    s,
                    min_duration_ns=settings.probe_duration_ns,
                    min_query_count=max(s.min_query_count, needed),
                ),
            )
        )
    return replace(scaled, entries=tuple(entries), min_duration_ns=settings.probe_duration_ns)


async def search_mix_peak(
    spec: MixSpec,
    opened: list[OpenedEntry],
    client: ClientSettings,
    settings: PeakSettings,
    drain_timeout_ns: int,
    on_probe: Callable[[MixProbeRun], None] = lambda run: None,
) -> MixPeakOutcome:
    """Probe the mix at total rates the peak search picks, within the budget."""
    started = time.monotonic()
    budget_s = settings.budget_ns / NS_PER_S
    search = PeakSearch(
        target_latency_ns=NORMALIZED_BOUND_NS,
        start_qps=settings.start_qps or spec.server_qps,
        resolution=settings.resolution,
        ceiling_qps=settings.max_qps or None,
    )
    runs: list[MixProbeRun] = []
    exhausted = interrupted = False
    stop_reason = ""
    while (qps := search.next_qps([r.probe for r in runs])) is not None:
        if stopping.requested():
            interrupted, stop_reason = True, stopping.requested()
            break
        total = round(qps, 3)
        at = probe_spec(spec, total, settings)
        expected_s = max(
            e.settings.min_query_count / e.settings.qps
            for e in at.entries
            if isinstance(e.settings, ServerSettings)
        )
        expected_s = max(expected_s, settings.probe_duration_ns / NS_PER_S)
        if time.monotonic() - started + expected_s + PROBE_OVERHEAD_S > budget_s:
            exhausted = True
            break
        sized = {e.name: e for e in at.entries}
        entries = [replace(o, entry=sized[o.name]) for o in opened]
        measured = await play_mix(at, entries, client, drain_timeout_ns, nothing_to_do)
        judged = {
            e.name: probe_of(e.entry.settings, measured.measurements[e.name])
            for e in entries
            if isinstance(e.entry.settings, ServerSettings)
        }
        run = mix_probe(total, judged)
        runs.append(run)
        on_probe(run)
        if measured.interrupted:
            interrupted, stop_reason = True, measured.stop_reason
            break
    probes = [r.probe for r in runs]
    conclusion = search.conclusion(probes, exhausted, interrupted)
    return MixPeakOutcome(
        runs=tuple(runs),
        conclusion=conclusion,
        breaks_first=_breaks_first(runs, conclusion),
        elapsed_s=time.monotonic() - started,
        budget_exhausted=exhausted,
        interrupted=interrupted,
        stop_reason=stop_reason,
    )


def _breaks_first(runs: list[MixProbeRun], conclusion: Conclusion) -> str | None:
    """At the lowest failing rate (above the peak, when there is one): the broken entry furthest
    over its bound."""
    floor = conclusion.peak_qps if conclusion.peak_qps is not None else -math.inf
    above = [r for r in runs if r.broken and r.probe.qps > floor]
    failing = sorted(above, key=lambda r: r.probe.qps)
    if not failing:
        return None
    first = failing[0]
    return max(first.broken, key=lambda n: _ratio(first.entries[n]))
