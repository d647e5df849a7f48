"""A plain CSV or JSON-lines trace: one query per row, a time column whose unit is said, and
optionally each query's model, sample and input and output lengths.

The time column is `time` or `timestamp`, with its unit in the name (`time_s`, `time_ms`,
`time_us`, `time_ns`, `timestamp_ms`, ...) or given by the caller (`unit`); a unit is never
guessed, and a unit in the name that disagrees with the one given is refused. Optional columns:
`model` (a name), `sample` (an index into the sample library), `input_tokens` and
`output_tokens` (or Mooncake's `input_length` and `output_length`). Times are taken from the
first row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from loadtest.core.trace import Trace
from loadtest.engine.traces.common import (
    UNITS_NS,
    counts,
    finish,
    floats,
    to_ns,
    trace_error,
    unit_of,
)
from loadtest.engine.traces.table import Columns, csv_header, first_keys, read_csv, read_jsonl

TIME_NAMES = ("time", "timestamp")
OPTIONAL = ("model", "sample", "input_tokens", "output_tokens", "input_length", "output_length")
UNIT_HINT = "name the column time_s, time_ms, time_us or time_ns, or give the unit"


def time_column(path: Path, names: list[str], unit: str | None) -> tuple[str, str]:
    """The time column among `names` and its unit; one line when there is none, several, or
    no unit."""
    found = [
        name
        for name in names
        if name.lower() in TIME_NAMES
        or (name.lower().rpartition("_")[0] in TIME_NAMES and unit_of(name.lower()))
    ]
    if not found:
        raise trace_error(path, "line 1", f"no time column (want time or timestamp; {UNIT_HINT})")
    if len(found) > 1:
        raise trace_error(path, "line 1", f"several time columns ({', '.join(found)}): keep one")
    column = found[0]
    named = unit_of(column.lower())
    if unit is not None and unit not in UNITS_NS:
        raise trace_error(path, "", f"unknown time unit {unit!r} (s, ms, us or ns)")
    if named and unit and named != unit:
        raise trace_error(
            path, "line 1", f"the column {column!r} says {named}, but {unit} was given"
        )
    chosen = named or unit
    if chosen is None:
        raise trace_error(path, "line 1", f"the time column {column!r} has no unit: {UNIT_HINT}")
    return column, chosen


def _trace(path: Path, columns: Columns, column: str, unit: str, kind: str) -> Trace:
    lines = columns.lines
    times = to_ns(path, floats(path, columns[column], lines, column), unit, lines, column)

    def whole(*names: str) -> np.ndarray | None:
        for name in names:
            if name in columns:
                return counts(path, columns[name], lines, name)
        return None

    return finish(
        path,
        times,
        f"{kind} trace {path.name}",
        sample=whole("sample"),
        input_tokens=whole("input_tokens", "input_length"),
        output_tokens=whole("output_tokens", "output_length"),
        models=[str(m) for m in columns["model"]] if "model" in columns else None,
    )


def read_plain_csv(path: Path, unit: str | None = None) -> Trace:
    column, chosen = time_column(path, csv_header(path), unit)
    _, columns = read_csv(path, (column, *OPTIONAL), required=(column,))
    return _trace(path, columns, column, chosen, "CSV")


def read_plain_jsonl(path: Path, unit: str | None = None) -> Trace:
    column, chosen = time_column(path, first_keys(path), unit)
    columns = read_jsonl(path, (column, *OPTIONAL), required=(column,))
    return _trace(path, columns, column, chosen, "JSONL")
