"""Rows of a CSV or JSON-lines trace, streamed into columns, with each row's line number.

Both readers keep only the columns asked for (as text or JSON values, one list per column) and
the line each row came from, so the formats' own modules convert whole columns at once and can
still name the line of a bad value. A column is used when the header (CSV) or the first record
(JSONL) has it; every later row must have it too.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtest.engine.traces.common import open_text, trace_error


@dataclass
class Columns:
    """The columns read (by the name asked for) and each row's line in the file (1-based)."""

    values: dict[str, list[object]]
    lines: list[int]

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def __getitem__(self, name: str) -> list[object]:
        return self.values[name]


def csv_header(path: Path) -> list[str]:
    """The first row's names (stripped); [] for an empty file."""
    with open_text(path) as text:
        try:
            return [n.strip() for n in next(csv.reader(text), [])]
        except (csv.Error, UnicodeDecodeError) as exc:
            raise trace_error(path, "line 1", f"not a CSV header ({exc})") from None


def first_keys(path: Path) -> list[str]:
    """The keys of a JSON-lines file's first record; [] when it is not an object."""
    with open_text(path) as text:
        try:
            first = next((line for line in text if line.strip()), "")
        except UnicodeDecodeError as exc:
            raise trace_error(path, "", f"not UTF-8 text ({exc.reason})") from None
    try:
        record = json.loads(first) if first else None
    except json.JSONDecodeError:
        return []
    return list(record) if isinstance(record, dict) else []


def read_csv(
    path: Path, wanted: Sequence[str], required: Sequence[str] = ()
) -> tuple[list[str], Columns]:
    """The header and the `wanted` columns present in it; one line if a `required` one is not,
    or a row has another number of fields than the header."""
    with open_text(path) as text:
        reader = csv.reader(text)
        try:
            names = next(reader, None)
            if names is None:
                raise trace_error(path, "", "is empty")
            names = [n.strip() for n in names]
            for name in required:
                if name not in names:
                    raise trace_error(
                        path, "line 1", f"no column {name!r} (the header has {', '.join(names)})"
                    )
            where = {name: names.index(name) for name in wanted if name in names}
            values: dict[str, list[object]] = {name: [] for name in where}
            lines: list[int] = []
            width = len(names)
            pairs = [(values[name].append, i) for name, i in where.items()]
            for row in reader:
                if not row:
                    continue
                if len(row) != width:
                    raise trace_error(
                        path,
                        f"line {reader.line_num}",
                        f"{len(row)} fields where the header has {width}",
                    )
                lines.append(reader.line_num)
                for append, i in pairs:
                    append(row[i])
        except csv.Error as exc:
            raise trace_error(path, f"line {reader.line_num}", f"not valid CSV ({exc})") from None
        except UnicodeDecodeError as exc:
            raise trace_error(path, "", f"not UTF-8 text ({exc.reason})") from None
    return names, Columns(values, lines)


def read_jsonl(path: Path, wanted: Sequence[str], required: Sequence[str] = ()) -> Columns:
    """The `wanted` keys of a JSON-lines file (one object per line; blank lines skipped)."""
    values: dict[str, list[object]] = {}
    lines: list[int] = []
    with open_text(path) as text:
        try:
            for line_number, line in enumerate(text, start=1):
                if not line.strip():
                    continue
                where = f"line {line_number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise trace_error(path, where, f"not a JSON object ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise trace_error(path, where, "not a JSON object")
                if not lines:  # the first record decides which keys are read
                    for name in required:
                        if name not in record:
                            raise trace_error(
                                path,
                                where,
                                f"no {name!r} (it has {', '.join(record) or 'nothing'})",
                            )
                    values = {name: [] for name in wanted if name in record}
                for name, column in values.items():
                    try:
                        column.append(record[name])
                    except KeyError:
                        raise trace_error(
                            path, where, f"no {name!r}, which the first row has"
                        ) from None
                lines.append(line_number)
        except UnicodeDecodeError as exc:
            raise trace_error(path, "", f"not UTF-8 text ({exc.reason})") from None
    return Columns(values, lines)
