"""Recorded traces, read from files in their own units: each format's reader returns a
`core.trace.Trace` (times in int64 ns, per-query rows), `load_trace` replays it (window,
speed-up, idle-gap cap) as the arrival law `core.arrivals.Timestamps` that a run plays.

Formats (docs/TRACES.md says where each one is defined):
- `loadtest`: loadtest's own result.json (its scheduled times, bit for bit);
- `loadgen`: MLPerf LoadGen's mlperf_log_trace.json (Chrome trace, µs; each sample's scheduled
  time);
- `mooncake`: Mooncake JSON lines (`timestamp` ms, `input_length`, `output_length`);
- `azure`: the Azure LLM inference CSV (`TIMESTAMP` absolute datetimes, `ContextTokens`,
  `GeneratedTokens`);
- `burstgpt`: BurstGPT CSV (`Timestamp` s, `Model`, `Request tokens`, `Response tokens`);
- `csv`, `jsonl`: plain tables of times in a stated unit, with optional model, sample and
  lengths.
The format is told from the content (and `.gz` is decompressed) unless it is named. A malformed
trace is one SettingsError line naming the file and the row; nothing runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from loadtest.core.arrivals import Timestamps
from loadtest.core.trace import ReplayOptions, Trace
from loadtest.engine.traces import azure, burstgpt, mooncake
from loadtest.engine.traces.azure import read_azure
from loadtest.engine.traces.burstgpt import read_burstgpt
from loadtest.engine.traces.common import head, trace_error
from loadtest.engine.traces.loadgen import read_loadgen
from loadtest.engine.traces.loadtest_result import read_loadtest_result
from loadtest.engine.traces.mooncake import read_mooncake
from loadtest.engine.traces.plain import read_plain_csv, read_plain_jsonl
from loadtest.engine.traces.table import csv_header

Reader = Callable[[Path], Trace]
READERS: dict[str, Reader] = {
    "loadtest": read_loadtest_result,
    "loadgen": read_loadgen,
    "mooncake": read_mooncake,
    "azure": read_azure,
    "burstgpt": read_burstgpt,
}
PLAIN = {"csv": read_plain_csv, "jsonl": read_plain_jsonl}
FORMATS = (*READERS, *PLAIN)
NAMES = ", ".join(FORMATS)


def detect_format(path: Path) -> str:
    """The format of `path`, told from its first bytes (and its header or first record)."""
    start = head(path, 4096).lstrip()
    if not start:
        raise trace_error(path, "", "is empty")
    first_line = start.split("\n", 1)[0].strip()
    if start.startswith("{"):
        if first_line.startswith('{"traceEvents"') or '"traceEvents"' in start[:200]:
            return "loadgen"
        if '"schema": "loadtest.' in start[:200] or '"schema":"loadtest.' in start[:200]:
            return "loadtest"
        try:
            record = json.loads(first_line)
        except json.JSONDecodeError:
            record = None
        inner_suffix = Path(path.stem).suffix if path.suffix.lower() == ".gz" else path.suffix
        if isinstance(record, dict):
            if mooncake.TIME in record and set(record) & set(mooncake.SIGNS):
                return "mooncake"
            if inner_suffix.lower() != ".json":
                return "jsonl"
        raise trace_error(path, "", f"a JSON file of no known trace format: name it ({NAMES})")
    names = set(csv_header(path))
    if azure.TIME in names and names & {azure.INPUT, azure.OUTPUT}:
        return "azure"
    if burstgpt.TIME in names and names & {burstgpt.INPUT, burstgpt.OUTPUT}:
        return "burstgpt"
    return "csv"


def read_trace(path: Path, format: str | None = None, unit: str | None = None) -> Trace:
    """The trace in `path` as read, in its format's own units. `format` one of FORMATS (None:
    detected); `unit` ('s', 'ms', 'us', 'ns') is for the plain formats only (their time
    column's unit when its name does not say)."""
    name = (format or detect_format(path)).strip().lower()
    if name in PLAIN:
        return PLAIN[name](path, unit)
    if name not in READERS:
        raise trace_error(path, "", f"unknown trace format {format!r} (one of {NAMES})")
    if unit is not None:
        raise trace_error(
            path, "", f"a {name} trace has its own time unit; a unit is for csv and jsonl traces"
        )
    return READERS[name](path)


def load_trace(
    path: Path,
    format: str | None = None,
    unit: str | None = None,
    options: ReplayOptions | None = None,
) -> Timestamps:
    """The arrival law that replays `path`: read, then windowed, sped up and capped."""
    return Timestamps.of(read_trace(path, format, unit).replayed(options or ReplayOptions()))
