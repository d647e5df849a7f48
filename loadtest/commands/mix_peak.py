"""`loadtest find-peak --mix MIX.toml`: the mix's peak total QPS, weights fixed, and which model
breaks its bound first (scenarios/searches/mix_peak_run.py). find-peak routes here when --mix is
given."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from loadtest.commands import common
from loadtest.commands import flag_groups as groups
from loadtest.core.settings import ClientSettings, LoopKind, PeakSettings
from loadtest.engine import stopping, timing
from loadtest.errors import ExitCode
from loadtest.report.mix_peak_report import mix_peak_json, mix_probe_cells, render_mix_peak
from loadtest.report.outputs import save, stamp
from loadtest.report.peak_report import PEAK_FILES
from loadtest.report.results import build_environment
from loadtest.scenarios.experiments.mix_run import close_entries, open_entries
from loadtest.scenarios.experiments.mix_spec import MixSpec
from loadtest.scenarios.searches.mix_peak_run import (
    MixPeakOutcome,
    MixProbeRun,
    check_peak_mix,
    search_mix_peak,
)
from loadtest.scenarios.searches.peak_search import NORMALIZED_BOUND_NS
from loadtest.server.mix_deployment import MixMemberTarget, resolve_mix


def find_mix_peak(
    spec: MixSpec,
    settings: PeakSettings,
    client: ClientSettings,
    endpoint: groups.Endpoint,
    flags: groups.Output,
) -> None:
    """The search against every entry's server; find-peak.json; exit 3 when no peak."""
    embedded, repository, timeout_s = endpoint.embedded, endpoint.repository, endpoint.timeout
    output, force = flags.output, flags.force
    check_peak_mix(spec)
    settings = _normalized(settings)
    stopping.reset()
    common.check_outputs(output, None, force, PEAK_FILES)
    members = [
        MixMemberTarget(e.name, e.flags.target_settings(), e.url_given) for e in spec.entries
    ]
    drain_timeout_ns = int((timeout_s + 5) * 1e9)
    console = common.console

    def show(run: MixProbeRun) -> None:
        console.print("probe: " + " | ".join(mix_probe_cells(run)), highlight=False)

    try:
        with resolve_mix(members, embedded, repository, common.say) as deployments:

            async def measure() -> tuple[MixPeakOutcome, dict[str, object]]:
                opened = await open_entries(spec, deployments)
                try:
                    common.say(
                        f"find-peak --mix: {len(opened)} entries, weights fixed, from "
                        f"{settings.start_qps or spec.server_qps:g} QPS total; budget "
                        f"{settings.budget_ns / 1e9:g} s"
                    )
                    with stopping.catching(asyncio.get_running_loop()):
                        outcome = await search_mix_peak(
                            spec, opened, client, settings, drain_timeout_ns, show
                        )
                    first = opened[0]
                    environment = build_environment(first.target, deployments[first.name])
                finally:
                    await close_entries(opened)
                stopping.defer_signals()
                return outcome, environment

            parent_loop = LoopKind.PRECISE if client.loop is LoopKind.AUTO else client.loop
            outcome, environment = timing.run(measure(), parent_loop.value)
        render_mix_peak(console, spec, outcome)
        result = mix_peak_json(spec, settings, dict(environment), outcome)
        name = f"{stamp(result['created_unix_s'])}-find-peak-mix"
        saved = save(
            {PEAK_FILES[0]: json.dumps(result, indent=1) + "\n"}, output, name, force=force
        )
        common.say_saved(saved)
    finally:
        stopping.install_process_handlers()
    common.finish_or_stop(saved, "find-peak result", outcome.interrupted, outcome.stop_reason)
    if outcome.conclusion.peak_qps is None:
        raise typer.Exit(ExitCode.INVALID)


def from_find_peak(
    mix_file: Path,
    search: dict[str, Any],
    endpoint: groups.Endpoint,
    client: ClientSettings,
    access: groups.Access,
    output: groups.Output,
) -> None:
    """find-peak's flags applied to a mix: the file's entries, find-peak's search (`search`: the
    PeakSettings fields but the bound, which is the normalized one)."""
    from loadtest.commands.mix import entry_defaults, load_mix

    settings = PeakSettings(target_latency_ns=NORMALIZED_BOUND_NS, **search)
    defaults = entry_defaults(
        endpoint,
        access,
        min_duration_ns=settings.probe_duration_ns,
        seed=settings.schedule_seed,
        percentile=settings.percentile,
        samples=settings.sample_count,
        sample_seed=settings.sample_seed,
        late_threshold_ns=settings.late_threshold_ns,
    )
    find_mix_peak(load_mix(mix_file, None, defaults), settings, client, endpoint, output)


def _normalized(settings: PeakSettings) -> PeakSettings:
    """The search's bound is the normalized one: each entry keeps its own (scenarios/mix_peak)."""
    return replace(settings, target_latency_ns=NORMALIZED_BOUND_NS)
