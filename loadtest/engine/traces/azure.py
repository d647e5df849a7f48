"""The Azure LLM inference trace CSV (Azure/AzurePublicDataset, AzureLLMInferenceDataset2023.md,
and the 2024 edition with the same schema): `TIMESTAMP` an absolute wall-clock datetime with 7
fractional digits (100 ns ticks, e.g. `2023-11-16 18:17:03.9799600`), `ContextTokens`,
`GeneratedTokens`.

The datetimes are parsed whole-column by numpy to the nanosecond (no float on the way, so the
100 ns ticks survive) and taken from the first row; both lengths are carried on each query.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from loadtest.core.trace import Trace
from loadtest.engine.traces.common import counts, finish, in_order, trace_error
from loadtest.engine.traces.table import read_csv

TIME, INPUT, OUTPUT = "TIMESTAMP", "ContextTokens", "GeneratedTokens"
HEADER = (TIME, INPUT, OUTPUT)


def _datetime(text: object) -> np.datetime64:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy only warns about a time zone (Z, +01:00)
        parsed = np.datetime64(str(text).strip(), "ns")
    if np.isnat(parsed):
        raise ValueError("not a date and time")
    return parsed


def datetimes_ns(path: Path, values: Sequence[object], lines: Sequence[int]) -> np.ndarray:
    """Absolute datetimes -> int64 ns since the epoch; one line naming the first bad one."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            parsed = np.array(values, dtype="datetime64[ns]")
        if not np.isnat(parsed).any():
            return parsed.astype(np.int64)
    except (ValueError, TypeError, DeprecationWarning):
        pass
    for value, line in zip(values, lines, strict=True):
        try:
            _datetime(value)
        except (ValueError, TypeError, DeprecationWarning):
            raise trace_error(
                path,
                f"line {line}",
                f"{TIME} {value!r} is not a date and time like 2023-11-16 18:17:03.9799600",
            ) from None
    raise trace_error(path, "", f"{TIME}: the column could not be read")


def read_azure(path: Path) -> Trace:
    _, columns = read_csv(path, HEADER, required=HEADER)
    lines = columns.lines
    if not lines:
        raise trace_error(path, "", "holds no rows to replay")
    absolute = datetimes_ns(path, columns[TIME], lines)
    times = in_order(path, absolute - absolute[0], lines, TIME)
    return finish(
        path,
        times,
        f"Azure LLM trace {path.name}",
        input_tokens=counts(path, columns[INPUT], lines, INPUT),
        output_tokens=counts(path, columns[OUTPUT], lines, OUTPUT),
    )
