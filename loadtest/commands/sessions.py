"""`loadtest sessions`: multi-turn conversations, each turn carrying the conversation so far.

Sessions start on the arrival law at --rate sessions/s (one schedule entry per session start);
turn k+1 is due at turn k's completion + --think-time. Sessions come from a ShareGPT file
(--input-data) or the --turns law with --input-tokens/--output-tokens per turn. Only targets that
declare `plays_turns` (openai, openai-chat, http-stream, grpc-stream) take them; other protocols
and workers (--workers, Ray) are not offered. Exit codes: 0 every session completed, 3 a session
failed, 1 bad input (one line), 2 a malformed flag value (a law that does not parse, as on
every command), 130/143 stopped (the partial figures are printed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.markup import escape

from loadtest.commands import common, options
from loadtest.commands import flag_groups as groups
from loadtest.core.arrivals import ArrivalLaw, law_named
from loadtest.core.lengths import length_law_named
from loadtest.core.schedule import schedule_of
from loadtest.core.sessions import SessionPlan, think_time_named
from loadtest.core.settings import Protocol
from loadtest.engine import stopping, timing
from loadtest.engine.prompts.sessions import AnswerFiller, session_plan
from loadtest.engine.prompts.tokenizer import tokenizer_for
from loadtest.engine.samples import random_samples
from loadtest.engine.sessions import SessionPlayer, SessionRun
from loadtest.errors import ExitCode, SettingsError
from loadtest.report import outputs
from loadtest.report.console import make_console
from loadtest.report.sessions_report import as_json, notes, outcome_table, timing_table
from loadtest.rules.sessions import session_figures
from loadtest.scenarios import run as run_module
from loadtest.scenarios.target_flags import TargetFlags

SESSION_PROTOCOLS = (
    Protocol.OPENAI,
    Protocol.OPENAI_CHAT,
    Protocol.HTTP_STREAM,
    Protocol.GRPC_STREAM,
)
THINK_STREAM = 0x5448494E  # "THIN": think times, from --sample-seed
BASE_SAMPLES = 16  # drawn as usual for the model's other inputs (stream, ignore_eos, ...)
MAX_SESSIONS = 100_000


def _refuse_protocol(protocol: Protocol) -> None:
    if protocol not in SESSION_PROTOCOLS:
        names = ", ".join(p.value for p in SESSION_PROTOCOLS)
        raise SettingsError(f"--protocol {protocol.value}: sessions play over {names} only")


def play_sessions(
    flags: TargetFlags,
    plan: SessionPlan,
    law: ArrivalLaw,
    rate: float,
    seed: int,
    think_ns: np.ndarray,
    filler: AnswerFiller,
) -> SessionRun:
    """Connect (the embedded Triton as for any run), prepare the base samples, play."""
    count = len(plan.sessions)
    with run_module.connected(flags, common.say) as (_deployment, target):

        async def go() -> SessionRun:
            try:
                model = await target.open()
                base = random_samples(model, BASE_SAMPLES, seed)
                await target.prepare(base)
                schedule = schedule_of(law.arrivals(rate, 0, count, seed), len(base), seed)
                return await SessionPlayer(
                    target,
                    plan,
                    schedule.scheduled_ns[:count],
                    schedule.sample_index[:count],
                    think_ns,
                    filler.text,
                ).run()
            finally:
                await target.close()

        return timing.run(go())


def _think_time_text(text: str) -> str:
    """--think-time: a law `core.sessions.think_time_named` reads (a bad one: exit 2, as every
    malformed value)."""
    try:
        think_time_named(text)
    except SettingsError as exc:
        raise typer.BadParameter(str(exc)) from None
    return text


TurnsOption = Annotated[
    str | None,
    typer.Option(
        "--turns",
        parser=options.length_law_text,
        help="Synthetic sessions: turns per session, a length law (fixed:N, uniform:LO:HI, "
        "normal:MEAN:SD, lognormal:MEAN:SD); each turn's prompt --input-tokens, its answer "
        "--output-tokens. Without it, --input-data names a ShareGPT file.",
    ),
]
ThinkTimeOption = Annotated[
    str,
    typer.Option(
        "--think-time",
        parser=_think_time_text,
        help="Pause between an answer's end and the next turn's due time, in ms: fixed:MS, "
        "uniform:LO:HI, exponential:MEAN, lognormal:MEAN:SD; seeded by --sample-seed.",
    ),
]


@groups.takes_groups
def sessions(
    *,
    model: options.ModelOption = "llm_known",
    count: Annotated[
        int, typer.Option("--sessions", min=1, max=MAX_SESSIONS, help="Sessions to play.")
    ] = 20,
    rate: Annotated[
        float,
        typer.Option("--rate", parser=options.finite_float, help="Session starts per second."),
    ] = 1.0,
    arrival: options.ArrivalOption = options.ARRIVAL,
    seed: options.SeedOption = 0,
    turns: TurnsOption = None,
    think_time: ThinkTimeOption = "fixed:0",
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Write the figures and their definitions to this file."),
    ] = None,
    force: options.ForceOption = False,
    endpoint: Annotated[
        groups.Endpoint,
        groups.take(
            "grpc_client",
            "grpc_compression",
            "grpc_keepalive",
            "connections",
            protocol=Protocol.OPENAI,
        ),
    ],
    samples: Annotated[groups.SampleLibrary, groups.take("samples", "shape", "shared_prefix")],
    access: groups.Access,
) -> None:
    """Multi-turn sessions: each turn carries the conversation so far; turn k+1 is due at turn
    k's completion + think time. Per-session figures and TTFT by turn index."""
    _refuse_protocol(endpoint.wire)
    if rate <= 0:
        raise SettingsError(f"--rate must be > 0 sessions/s, got {rate:g}")
    think = think_time_named(think_time)
    turns_law = None if turns is None else length_law_named(turns)
    law = law_named(arrival)
    if json_path is not None:
        outputs.check_file(json_path, force, "--json")
    tokenizer = tokenizer_for(samples.tokenizer)
    prompts = samples.prompt_settings()
    plan = session_plan(
        count, turns_law, prompts, samples.input_data, tokenizer, samples.sample_seed
    )
    rng = np.random.Generator(np.random.PCG64([samples.sample_seed, THINK_STREAM]))
    think_ns = think.draw_ns(plan.turns, rng)
    flags = groups.target_flags(model, endpoint, groups.SampleLibrary(), access)
    run = play_sessions(
        flags, plan, law, rate, seed, think_ns, AnswerFiller(tokenizer, samples.sample_seed)
    )
    figures = session_figures(run.records, run.session, run.turn)
    console = make_console()
    console.print(
        f"[bold]sessions[/]: {count} at {rate:g}/s ({escape(law.name)} starts, --seed {seed}), "
        f"{escape(endpoint.wire.value)} model {escape(model)}"
    )
    for line in notes(think.describe(), plan.source, plan.tokenizer):
        console.print(f"[dim]{escape(line)}[/]", highlight=False)
    console.print(outcome_table(figures))
    console.print(timing_table(figures))
    if json_path is not None:
        document = as_json(figures, think.describe(), plan.source, plan.tokenizer)
        outputs.write_atomically(json_path, json.dumps(document, indent=2) + "\n")
        console.print(f"written: {escape(str(json_path))}")
    if run.stopped:
        raise typer.Exit(stopping.exit_code())
    if figures.failed:
        raise typer.Exit(ExitCode.INVALID)
