"""`loadtest report`: result files -> one self-contained HTML report (see report/html.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from loadtest.errors import ResultFileError
from loadtest.report.console import make_console
from loadtest.report.resultfile import ResultFile, from_data, load_results
from loadtest.report.results import write_atomically

console = make_console()


def write_html_report(results: list[ResultFile], path: Path) -> Path:
    """Render and write the report; the parent directory is created when missing."""
    from loadtest.report.html import render_html  # plotly: only when HTML is asked for

    text = render_html(results)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, text)
    except OSError as exc:
        raise ResultFileError(f"cannot write {path}: {exc}") from None
    return path


def write_run_html(result: dict[str, Any], path: Path, label: str = "run") -> None:
    """For scenario commands' --html: the report of the run just built (its result.json data)."""
    written = write_html_report([from_data(result, label)], path)
    console.print(f"report: {written}")


def report(
    results: Annotated[
        list[Path], typer.Argument(help="result.json files: runs, find-peak or compare results.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] = Path(
        "report.html"
    ),
) -> None:
    """Write one self-contained HTML report (plots, verdicts, settings) that works offline."""
    written = write_html_report(load_results(results), output)
    size_mb = written.stat().st_size / 1e6
    console.print(f"report: {written} ({size_mb:.1f} MB, self-contained; open it in a browser)")
