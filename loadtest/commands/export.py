"""`loadtest export`: a run's result.json -> summary.csv, timeline.csv and records.csv
(report/csv_export.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loadtest.commands import options
from loadtest.errors import ResultFileError, SettingsError
from loadtest.report.console import make_console
from loadtest.report.csv_export import records_csv, summary_csv, timeline_csv
from loadtest.report.outputs import write_atomically
from loadtest.report.resultfile import RUN, load_result
from loadtest.rules.stats import Timeline

console = make_console()
CSV_FILES = ("summary.csv", "timeline.csv", "records.csv")


def export(
    result: Annotated[Path, typer.Argument(help="A run's result.json.")],
    csv: Annotated[
        bool, typer.Option("--csv", help="Write CSV (the default, and the one format so far).")
    ] = True,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Directory for the CSV files [default: beside RUN]."),
    ] = None,
    force: options.ForceOption = False,
) -> None:
    """Export the summary (summary.csv), the per-second timeline (timeline.csv) and, for runs
    written with --records, the per-query records (records.csv) as CSV."""
    if not csv:  # kept for scripts that pass --csv explicitly; there is no other format yet
        raise SettingsError("CSV is the only export format")
    run = load_result(result)
    if run.kind != RUN:
        raise ResultFileError(f"{result}: a {run.kind} result; export takes one run's result.json")
    directory = output or result.parent
    taken = [directory / name for name in CSV_FILES if (directory / name).exists()]
    if taken and not force:  # as every other output: refused, not silently replaced (#26)
        raise SettingsError(
            f"{', '.join(str(p) for p in taken)} already exist(s): pass --force to overwrite, "
            "or choose another --output"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        summary_path = directory / "summary.csv"
        write_atomically(summary_path, summary_csv(run.data))
        timeline = run.data.get("timeline")
        if isinstance(timeline, dict):
            timeline_path = directory / "timeline.csv"
            write_atomically(timeline_path, timeline_csv(Timeline.from_dict(timeline)))
            console.print(f"timeline: {timeline_path} ({len(timeline.get('start_ns', []))} s)")
        records = run.records()
        if records is None:
            console.print(
                f"summary: {summary_path}\nno per-query records in {result} (the run was written "
                "without --records), so no records.csv: summary only"
            )
            return
        records_path = directory / "records.csv"
        write_atomically(records_path, records_csv(records))
    except OSError as exc:
        raise ResultFileError(f"cannot write CSV to {directory}: {exc}") from None
    streamed = ", with the token columns first_part_ns … tpot_ns" if records.streamed.any() else ""
    console.print(
        f"records: {records_path} ({len(records)} queries{streamed})\nsummary: {summary_path}"
    )
