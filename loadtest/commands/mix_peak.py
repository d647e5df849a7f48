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
from loadtest.core.settings import NS_PER_MS, NS_PER_S, ClientSettings, LoopKind, PeakSettings
from loadtest.engine import stopping, timing
from loadtest.errors import ExitCode
from loadtest.report.mix_peak_report import mix_peak_json, mix_probe_cells, render_mix_peak
from loadtest.report.outputs import save, stamp
from loadtest.report.peak_report import PEAK_FILES
from loadtest.report.results import build_environment
from loadtest.scenarios.experiments.mix_run import close_entries, open_entries
from loadtest.scenarios.experiments.mix_spec import MixDefaults, MixSpec
from loadtest.scenarios.searches.mix_peak_run import (
    NORMALIZED_BOUND_NS,
    MixPeakOutcome,
    MixProbeRun,
    check_peak_mix,
    search_mix_peak,
)
from loadtest.scenarios.target_flags import AccessFlags
from loadtest.server.deployment import EmbeddedMode
from loadtest.server.mix_deployment import MixMemberTarget, resolve_mix


def find_mix_peak(
    spec: MixSpec,
    settings: PeakSettings,
    client: ClientSettings,
    embedded: EmbeddedMode,
    repository: Path,
    output: Path | None,
    force: bool,
    timeout_s: float,
) -> None:
    """The search against every entry's server; find-peak.json; exit 3 when no peak."""
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
    if outcome.interrupted or stopping.requested():
        console.print(
            f"[yellow]partial result[/] ({outcome.stop_reason or stopping.requested()}): "
            "written above",
            highlight=False,
        )
        common.finish_saving(saved, "find-peak result")
        raise typer.Exit(stopping.exit_code())
    common.finish_saving(saved, "find-peak result")
    if outcome.conclusion.peak_qps is None:
        raise typer.Exit(ExitCode.INVALID)


def from_find_peak(mix_file: Path, flags: dict[str, Any], access: AccessFlags) -> None:
    """find-peak's flags (its locals) applied to a mix: the file's entries, find-peak's search."""
    from loadtest.commands.mix import load_mix

    defaults = MixDefaults(
        min_duration_ns=int(flags["probe_duration"] * NS_PER_S),
        seed=flags["seed"],
        percentile=flags["percentile"] / 100,
        protocol=flags["protocol"],
        url=flags["url"],
        samples=flags["samples"],
        sample_seed=flags["sample_seed"],
        timeout_s=flags["timeout"],
        late_threshold_ns=int(flags["late_threshold"] * NS_PER_MS),
        embedded=flags["embedded"],
        repository=flags["repository"],
        access=access,
    )
    spec = load_mix(mix_file, None, defaults)
    settings = PeakSettings(
        target_latency_ns=NORMALIZED_BOUND_NS,
        percentile=flags["percentile"] / 100,
        probe_duration_ns=int(flags["probe_duration"] * NS_PER_S),
        budget_ns=int(flags["budget"] * NS_PER_S),
        start_qps=flags["start_qps"],
        max_qps=flags["max_qps"],
        resolution=flags["resolution"],
        late_threshold_ns=int(flags["late_threshold"] * NS_PER_MS),
        schedule_seed=flags["seed"],
        sample_seed=flags["sample_seed"],
        sample_count=flags["samples"],
    )
    client = ClientSettings(workers=flags["workers"], loop=flags["loop"], ray_address=flags["ray"])
    find_mix_peak(
        spec,
        settings,
        client,
        flags["embedded"],
        flags["repository"],
        flags["output"],
        flags["force"],
        flags["timeout"],
    )


def _normalized(settings: PeakSettings) -> PeakSettings:
    """The search's bound is the normalized one: each entry keeps its own (scenarios/mix_peak)."""
    return replace(settings, target_latency_ns=NORMALIZED_BOUND_NS)
