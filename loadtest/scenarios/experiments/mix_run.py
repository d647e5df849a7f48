"""A mix end to end on opened entries: size the Offline queries, play each entry alone, then all
together, observing each entry's Triton around every play.

Order: Offline entries with `expected_qps = "auto"` are calibrated first, alone (their query is then
the same size alone and together); with `isolated`, every entry plays alone on exactly the schedule
it plays in the mix (same seeds, same library, same query); last, all entries together. A stop
(Ctrl-C, SIGTERM) ends the play it interrupts with a partial result and skips the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from loadtest.core.settings import ClientSettings, OfflineSettings
from loadtest.engine import stopping
from loadtest.engine.samples import open_with_samples
from loadtest.errors import LoadtestError
from loadtest.observe.observer import ServerSide
from loadtest.observe.observer_set import ObserverSet
from loadtest.scenarios.experiments.mix_play import MixMeasurement, OpenedEntry, play_mix
from loadtest.scenarios.experiments.mix_spec import MixSpec
from loadtest.scenarios.mlperf.play import calibrate_offline
from loadtest.server.deployment import Deployment
from loadtest.targets import target_for
from loadtest.targets.mix import entry_error


@dataclass(frozen=True)
class MixRun:
    """One play: which entries, what they measured, and each one's server side."""

    names: tuple[str, ...]
    measurement: MixMeasurement
    server_sides: dict[str, ServerSide | None]

    @property
    def alone(self) -> bool:
        return len(self.names) == 1


@dataclass(frozen=True)
class MixOutcome:
    spec: MixSpec  # with every Offline query sized (its calibration recorded in its settings)
    isolated: tuple[MixRun, ...]  # one per entry, in entry order (empty with --no-isolated)
    together: MixRun | None  # None when stopped before it
    stop_reason: str  # "" when every play ran as scheduled

    @property
    def interrupted(self) -> bool:
        return bool(stopping.requested()) or self.together is None


async def open_entries(spec: MixSpec, deployments: dict[str, Deployment]) -> list[OpenedEntry]:
    """Open every entry's target and prepare its library, before any load; a failure is one line
    naming the entry (already-opened targets are closed)."""
    opened: list[OpenedEntry] = []
    try:
        for entry in spec.entries:
            resolved = deployments[entry.name].target
            target = target_for(resolved)
            settings = entry.settings
            batch = settings.batch_size if isinstance(settings, OfflineSettings) else 1
            try:
                model, library = await open_with_samples(
                    target,
                    settings.sample_count,
                    settings.sample_seed,
                    entry.flags.input_data,
                    entry.flags.shapes,
                    batch,
                )
            except LoadtestError as exc:
                await target.close()
                raise entry_error(entry.name, exc) from None
            opened.append(OpenedEntry(entry, target, model, len(library), resolved))
    except BaseException:
        await close_entries(opened)
        raise
    return opened


async def close_entries(opened: list[OpenedEntry]) -> None:
    for entry in opened:
        await entry.target.close()


async def size_offline(
    spec: MixSpec, opened: list[OpenedEntry], say: Callable[[str], None]
) -> tuple[MixSpec, list[OpenedEntry]]:
    """`expected_qps = "auto"` resolved for each Offline entry by its calibration, alone."""
    sized = []
    for item in opened:
        settings = item.entry.settings
        if isinstance(settings, OfflineSettings) and settings.expected_qps is None:
            say(f"{item.name}: calibrating its Offline query alone (closed loop, 2 s)")
            settings = await calibrate_offline(item.target, item.library_size, settings)
            item = replace(item, entry=replace(item.entry, settings=settings))
        sized.append(item)
    entries = {e.name: e.entry for e in sized}
    spec = replace(spec, entries=tuple(entries[e.name] for e in spec.entries))
    return spec, sized


async def play_observed(
    spec: MixSpec, entries: list[OpenedEntry], client: ClientSettings, drain_timeout_ns: int
) -> MixRun:
    """One play of `entries` with each entry's Triton observed from the play's t = 0."""
    probes = ObserverSet({e.name: e.target for e in entries})
    try:
        measurement = await play_mix(spec, entries, client, drain_timeout_ns, probes.start)
        sides = await probes.finish(measurement.measurements)
    finally:
        await probes.close()
    return MixRun(tuple(e.name for e in entries), measurement, sides)


async def measure_mix(
    spec: MixSpec,
    opened: list[OpenedEntry],
    client: ClientSettings,
    drain_timeout_ns: int,
    isolated: bool,
    say: Callable[[str], None],
) -> MixOutcome:
    """Calibrate, each alone (if asked), then all together (see the module docstring)."""
    spec, opened = await size_offline(spec, opened, say)
    alone: list[MixRun] = []
    if isolated:
        for item in opened:
            if stopping.requested():
                return MixOutcome(spec, tuple(alone), None, stopping.requested())
            say(f"alone: {item.name} ({_what(item)})")
            run = await play_observed(spec, [item], client, drain_timeout_ns)
            alone.append(run)
            if run.measurement.interrupted:
                return MixOutcome(spec, tuple(alone), None, run.measurement.stop_reason)
    if stopping.requested():
        return MixOutcome(spec, tuple(alone), None, stopping.requested())
    say("together: " + ", ".join(f"{e.name} ({_what(e)})" for e in opened))
    together = await play_observed(spec, opened, client, drain_timeout_ns)
    return MixOutcome(spec, tuple(alone), together, together.measurement.stop_reason)


def _what(item: OpenedEntry) -> str:
    settings = item.entry.settings
    if isinstance(settings, OfflineSettings):
        return f"Offline, {settings.query_samples} samples, ≤ {settings.max_in_flight} in flight"
    return f"Server {settings.qps:g} QPS, bound {settings.target_latency_ns / 1e6:g} ms"
