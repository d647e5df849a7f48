"""`loadtest models build|list`: build the benchmark suite into a Triton model repository.

Flags become a call to loadtest.models.build_repository; progress is shown with rich. Errors are
ModelBuildError / SettingsError, which loadtest.cli turns into one line and exit code 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from loadtest.commands.options import seed_value
from loadtest.core.units import NS_PER_MS
from loadtest.errors import SettingsError
from loadtest.models import SUITE, build_repository, default_repository
from loadtest.models.build import MODEL_FILE, VERSION, human_bytes, read_stamp, stamp_int
from loadtest.models.flops import human_flops
from loadtest.report.console import make_console

app = typer.Typer(
    help="Build and list the benchmark models (ONNX + Triton configs) in a model repository.",
    no_args_is_help=True,
)
console = make_console()
notes = make_console(stderr=True)

RepositoryOption = Annotated[
    Path | None,
    typer.Option(
        help="Model repository [default: ./model_repository if it exists, else the checkout's]."
    ),
]


@app.command()
def build(
    repository: RepositoryOption = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Build only this model (repeatable)."),
    ] = None,
    all_models: Annotated[
        bool,
        typer.Option("--all", help="Build every suite model, bert_large (1.3 GB) included."),
    ] = False,
    seed: Annotated[
        int, typer.Option(parser=seed_value, help="Weight seed (same seed -> identical bytes).")
    ] = 0,
    force: Annotated[bool, typer.Option(help="Rebuild even when up to date.")] = False,
) -> None:
    """Generate model.onnx and config.pbtxt for the default suite (or the named models)."""
    if all_models and model:
        raise SettingsError("--all and --model exclude each other")
    names = list(SUITE) if all_models else model
    target = repository or default_repository()
    with notes.status("building models ...") as status:

        def progress(text: str) -> None:
            status.update(text)
            notes.print(f"[dim]{text}[/]", highlight=False)

        results = build_repository(target, names, seed=seed, force=force, progress=progress)
    table = Table(title=f"model repository {target}")
    for column in ("model", "size", "FLOPs/sample", "build time", "", "file"):
        table.add_column(column)
    for result in results:
        table.add_row(
            result.name,
            human_bytes(result.bytes),
            human_flops(result.flops) if result.flops else "?",
            "-" if result.skipped else f"{result.seconds:.1f} s",
            "up to date" if result.skipped else "built",
            str(result.path),
        )
    console.print(table)


@app.command(name="list")
def list_models(repository: RepositoryOption = None) -> None:
    """The suite: what each model is, its latency bound, and whether it is built here."""
    target = repository or default_repository()
    table = Table(
        title=f"benchmark suite (repository {target})",
        caption=(
            "FLOPs/sample: 2 x multiply-adds of Conv, ConvTranspose, Gemm, MatMul and LSTM, from "
            "the graph (rnnt: one decode step per frame, a lower bound; gpt_tiny_l2_d128: one "
            "token on an empty cache); ~ = before building. build time: generate + write + "
            "onnx.checker (+ a tokenizer trained) when it was built, on that machine."
        ),
    )
    for column in ("model", "built", "size", "FLOPs/sample", "build time", "bound", "default"):
        table.add_column(column)
    table.add_column("description", overflow="fold")
    for name, model in SUITE.items():
        path = target / name / VERSION / MODEL_FILE
        stamp = read_stamp(path.parent)
        built = "yes" if path.is_file() else "no"
        if path.is_file() and stamp is not None:
            built = f"yes (seed {stamp.get('seed')})"
        size = (
            human_bytes(path.stat().st_size)
            if path.is_file()
            else f"~{human_bytes(model.approx_bytes)}"
        )
        flops = stamp_int(stamp, "flops") if path.is_file() else 0
        seconds = stamp.get("build_seconds") if path.is_file() and stamp else None
        if model.target_latency_ns is None and model.backend == "python":
            bound = model.latency_source  # a streaming LLM is judged per token, not end to end
        elif model.target_latency_ns is None:
            bound = "none (Offline, SingleStream only)"
        else:
            bound = f"{model.target_latency_ns / NS_PER_MS:g} ms p{model.percentile * 100:g}"
            bound += f" ({model.latency_source})"
        table.add_row(
            name,
            built,
            size,
            human_flops(flops) if flops else f"~{human_flops(model.approx_flops)}",
            f"{seconds:g} s" if isinstance(seconds, int | float) else "-",
            bound,
            "yes" if model.default_build else "no",
            model.description,
        )
    console.print(table)
