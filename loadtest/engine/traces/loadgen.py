"""MLPerf LoadGen's `mlperf_log_trace.json`: each sample's *scheduled* time, so a LoadGen run's
schedule can be played by loadtest (one schedule through both tools).

The format (mlcommons/inference loadgen/logging.h `ChromeTracer`, loadgen.cc `SampleComplete`):
Chrome's Trace Event Format, `{"traceEvents": [...], "displayTimeUnit": "ns", ...}`, one event
per line, `ts` in µs (3 decimals, so whole ns) from the trace's origin. For every sample LoadGen
writes an async begin event `{"name": "Sample", "ph": "b", "id": <sample_seq>, "ts": <the
query's scheduled time>, "args": {"sample_seq", "query_seq", "sample_idx", "issue_start_ns",
"complete_ns"}}` (`issue_start_ns` and `complete_ns` are from the scheduled time) and a matching
`"ph": "e"` at completion. Events are written as samples complete, so they are put in
`sample_seq` order (the order LoadGen issued them in) before the times are checked.

Each query keeps its sample (`sample_idx`, an index into LoadGen's QSL). The times are taken
from the first sample (the trace's origin is LoadGen's start-up, not the run's).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import IO, Any

import numpy as np

from loadtest.core.trace import Trace
from loadtest.core.units import NS_PER_US
from loadtest.engine.traces.common import finish, in_order, open_text, trace_error

SAMPLE = "Sample"
ARGS = ("sample_seq", "sample_idx")
# A Sample begin line exactly as LoadGen writes it (logging.h AddAsyncBeginEvent): read by this
# pattern, since parsing 100 000 lines as JSON is most of the time a trace takes to load. A line
# written any other way is parsed as JSON.
LOADGEN_BEGIN = re.compile(
    r'\{"name":"Sample","cat":"default","ph":"b","pid":\d+,"id":\d+,"ts":(\d+(?:\.\d*)?),'
    r'"args":\{"sample_seq":(\d+),"query_seq":\d+,"sample_idx":(\d+),'
)

Begin = tuple[int, int, int, float]  # (line or event number, sample_seq, sample_idx, ts µs)


def _begin(path: Path, where: int, event: Any, row: str = "line") -> Begin | None:
    """A parsed event's fields if it is a Sample begin; one line if it is a malformed one."""
    if not isinstance(event, dict) or event.get("name") != SAMPLE or event.get("ph") != "b":
        return None
    args, ts = event.get("args"), event.get("ts")
    if not isinstance(args, dict) or any(
        not isinstance(args.get(a), int) or isinstance(args.get(a), bool) for a in ARGS
    ):
        raise trace_error(path, f"{row} {where}", f"a Sample event without integer {ARGS}")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        why = f"a Sample event whose ts {ts!r} is not a number"
        raise trace_error(path, f"{row} {where}", why)
    return where, args["sample_seq"], args["sample_idx"], float(ts)


def _scan_lines(path: Path, text: IO[str]) -> list[Begin]:
    found: list[Begin] = []
    for number, line in enumerate(text, start=2):
        if '"Sample"' not in line or '"ph":"e"' in line:  # not a begin (nor a broken one)
            continue
        fast = LOADGEN_BEGIN.match(line)
        if fast:
            found.append((number, int(fast[2]), int(fast[3]), float(fast[1])))
            continue
        try:
            event = json.loads(line.rstrip().rstrip(","))
        except json.JSONDecodeError as exc:
            raise trace_error(path, f"line {number}", f"not a trace event ({exc.msg})") from None
        begin = _begin(path, number, event)
        if begin is not None:
            found.append(begin)
    return found


def _sample_begins(path: Path) -> tuple[list[Begin], str]:
    """Every Sample begin event. LoadGen writes one event per line, so lines are scanned and
    only the Sample begins parsed; a file written otherwise is parsed whole (and its errors
    name the event's index). Scanning lines is also what makes LoadGen's own files readable:
    LoadGen 6.0's file is not valid JSON as a whole (its LogDetail events double their
    quotes: "key":""sut_name"")."""
    with open_text(path) as text:
        try:
            first = text.readline()
            if first.strip() == '{"traceEvents":[':
                return _scan_lines(path, text), "line"
            document = json.loads(first + text.read())
        except json.JSONDecodeError as exc:
            why = f"not valid JSON ({exc.msg} at line {exc.lineno})"
            raise trace_error(path, "", why) from None
        except UnicodeDecodeError as exc:
            raise trace_error(path, "", f"not UTF-8 text ({exc.reason})") from None
    events = document.get("traceEvents") if isinstance(document, dict) else document
    if not isinstance(events, list):
        raise trace_error(path, "", 'not a Chrome trace (no "traceEvents" list)')
    begins = (_begin(path, i, e, "event") for i, e in enumerate(events))
    return [b for b in begins if b is not None], "event"


def read_loadgen(path: Path) -> Trace:
    begins, row = _sample_begins(path)
    if not begins:
        raise trace_error(path, "", 'holds no LoadGen "Sample" events (was the trace enabled?)')
    where, seq, sample, ts_us = (np.array(column) for column in zip(*begins, strict=True))
    order = np.argsort(seq, kind="stable")
    repeated = np.flatnonzero(np.diff(seq[order]) == 0)
    if len(repeated):
        line = int(where[order][repeated[0] + 1])
        raise trace_error(path, f"{row} {line}", f"sample_seq {int(seq[order][repeated[0]])} again")
    if np.any(sample < 0):
        line = int(where[np.argmin(sample)])
        raise trace_error(path, f"{row} {line}", f"a negative sample_idx {int(sample.min())}")
    lines = where[order].tolist()
    ts_ns = np.round(ts_us[order] * NS_PER_US).astype(np.int64)
    times = in_order(path, ts_ns - ts_ns[0], lines, "the scheduled time (ts)", row)
    return finish(path, times, f"LoadGen trace {path.name}", sample=sample[order])
