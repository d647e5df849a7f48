"""What every trace reader shares: one-line errors that name the file and the row, opening a
file (gzip too), columns of text turned into checked numbers, and the finished `Trace`.

Every problem is a SettingsError (exit 1, before any load) of one line: "FILE, line N: what is
wrong". Numbers are converted a whole column at a time (numpy), and only when that fails is the
column walked to find the first bad row, so a 100 000-row trace loads in a fraction of a second.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np

from loadtest.core.trace import Trace, TraceRows
from loadtest.core.units import NS_PER_MS, NS_PER_S, NS_PER_US
from loadtest.errors import SettingsError

UNITS_NS = {"s": NS_PER_S, "ms": NS_PER_MS, "us": NS_PER_US, "ns": 1}
# Beyond this a time in ns would not fit int64 with room to subtract and add: ~146 years.
MAX_ABS_NS = 2**62


def trace_error(path: Path, where: str, why: str) -> SettingsError:
    """'FILE, line 7: why' (where = 'line 7', 'event 12', 'query 3'; '' for the whole file)."""
    return SettingsError(f"{path}, {where}: {why}" if where else f"{path}: {why}")


def open_text(path: Path) -> IO[str]:
    """The file as text (a `.gz` is decompressed); one line if it cannot be opened."""
    try:
        # utf-8-sig: a byte-order mark (spreadsheet exports) is dropped, not read as a name
        if path.suffix.lower() == ".gz":
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
        return path.open(encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise trace_error(path, "", "no such trace file") from None
    except IsADirectoryError:
        raise trace_error(path, "", "is a directory, not a trace file") from None
    except OSError as exc:
        raise trace_error(path, "", f"cannot read ({exc.strerror or exc})") from None


def head(path: Path, size: int = 65536) -> str:
    """The first `size` characters (format detection)."""
    with open_text(path) as text:
        try:
            return text.read(size)
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise trace_error(path, "", f"cannot read as text ({exc})") from None


def unit_of(name: str) -> str | None:
    """'time_ms' -> 'ms', 'timestamp_s' -> 's'; None without a unit suffix."""
    stem, _, suffix = name.rpartition("_")
    return suffix if stem and suffix in UNITS_NS else None


def floats(path: Path, values: Sequence[object], lines: Sequence[int], what: str) -> np.ndarray:
    """A column of numbers (text or JSON numbers) as float64, every one finite."""
    try:
        column = np.array(values, dtype=np.float64)
    except (ValueError, TypeError):
        column = None
    if column is None or column.ndim != 1 or not np.all(np.isfinite(column)):
        for value, line in zip(values, lines, strict=True):
            try:
                number = float(value)  # type: ignore[arg-type]
            except (ValueError, TypeError):
                raise trace_error(
                    path, f"line {line}", f"{what} {value!r} is not a number"
                ) from None
            if not np.isfinite(number):
                raise trace_error(path, f"line {line}", f"{what} {value!r} is not a finite number")
        raise trace_error(path, "", f"{what}: a column of numbers could not be read")
    return column


def counts(path: Path, values: Sequence[object], lines: Sequence[int], what: str) -> np.ndarray:
    """A column of whole numbers ≥ 0 (token lengths, sample indices) as int64."""
    column = floats(path, values, lines, what)
    bad = np.flatnonzero((column < 0) | (column != np.floor(column)) | (column > 2**53))
    if len(bad):
        value = values[int(bad[0])]
        raise trace_error(
            path, f"line {lines[int(bad[0])]}", f"{what} {value!r} is not a whole number ≥ 0"
        )
    return column.astype(np.int64)


def to_ns(path: Path, values: np.ndarray, unit: str, lines: Sequence[int], what: str) -> np.ndarray:
    """Times in `unit` (float) -> int64 ns from the first row, checked in order.

    Subtracting the first time before scaling keeps large absolute values (seconds since a
    day zero) as precise as their own digits allow."""
    if len(values) == 0:
        raise trace_error(path, "", "holds no rows to replay")
    relative = (values - values[0]) * UNITS_NS[unit]
    too_big = np.flatnonzero(np.abs(relative) > MAX_ABS_NS)
    if len(too_big):
        line = lines[int(too_big[0])]
        raise trace_error(path, f"line {line}", f"{what} is absurdly far from the first row's")
    return in_order(path, np.round(relative).astype(np.int64), lines, what)


def in_order(
    path: Path, times_ns: np.ndarray, lines: Sequence[int], what: str, row: str = "line"
) -> np.ndarray:
    """`times_ns` unchanged, or one line naming the first row that goes back in time."""
    back = np.flatnonzero(np.diff(times_ns) < 0)
    if len(back):
        k = int(back[0]) + 1
        raise trace_error(
            path,
            f"{row} {lines[k]}",
            f"{what} goes back in time (a negative gap of "
            f"{(int(times_ns[k - 1]) - int(times_ns[k])) / NS_PER_MS:g} ms after {row} "
            f"{lines[k - 1]}): a trace must be in time order",
        )
    return times_ns


def model_codes(names: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Each row's model as an index into the distinct names, in order of first appearance."""
    table: dict[str, int] = {}
    codes = np.fromiter((table.setdefault(n, len(table)) for n in names), np.int32, len(names))
    return codes, tuple(table)


def finish(
    path: Path,
    times_ns: np.ndarray,
    source: str,
    *,
    sample: np.ndarray | None = None,
    input_tokens: np.ndarray | None = None,
    output_tokens: np.ndarray | None = None,
    models: Sequence[str] | None = None,
) -> Trace:
    """The Trace: each row keeps its index in the file's data rows."""
    if len(times_ns) == 0:
        raise trace_error(path, "", "holds no rows to replay")
    codes, names = model_codes(models) if models is not None else (None, ())
    rows = TraceRows(
        np.arange(len(times_ns), dtype=np.int64),
        sample=sample,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        model_index=codes,
        models=names,
    )
    return Trace(times_ns, rows, source)
