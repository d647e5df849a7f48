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
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.core.trace import Trace
from loadtest.core.units import NS_PER_US
from loadtest.engine.traces.common import finish, in_order, open_text, trace_error

SAMPLE = "Sample"
ARGS = ("sample_seq", "sample_idx")


def _sample_events(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line, event) of every Sample begin event. LoadGen writes one event per line, so lines
    are scanned and only the Sample begins parsed; a file written otherwise is parsed whole.
    Scanning lines is also what makes LoadGen's own files readable: LoadGen 6.0's file is not
    valid JSON as a whole (its LogDetail events double their quotes: "key":""sut_name"")."""
    found: list[tuple[int, dict[str, Any]]] = []
    with open_text(path) as text:
        try:
            first = text.readline()
            if first.strip() == '{"traceEvents":[':
                for number, line in enumerate(text, start=2):
                    if '"Sample"' in line and '"ph":"e"' not in line:  # begins, or broken
                        try:
                            event = json.loads(line.rstrip().rstrip(","))
                        except json.JSONDecodeError as exc:
                            raise trace_error(
                                path, f"line {number}", f"not a trace event ({exc.msg})"
                            ) from None
                        if event.get("name") == SAMPLE and event.get("ph") == "b":
                            found.append((number, event))
                return found
            document = json.loads(first + text.read())
        except json.JSONDecodeError as exc:
            raise trace_error(
                path, "", f"not valid JSON ({exc.msg} at line {exc.lineno})"
            ) from None
        except UnicodeDecodeError as exc:
            raise trace_error(path, "", f"not UTF-8 text ({exc.reason})") from None
    events = document.get("traceEvents") if isinstance(document, dict) else document
    if not isinstance(events, list):
        raise trace_error(path, "", 'not a Chrome trace (no "traceEvents" list)')
    return [
        (i, e)
        for i, e in enumerate(events)
        if isinstance(e, dict) and e.get("name") == SAMPLE and e.get("ph") == "b"
    ]


def read_loadgen(path: Path) -> Trace:
    events = _sample_events(path)
    if not events:
        raise trace_error(path, "", 'holds no LoadGen "Sample" events (was the trace enabled?)')
    count = len(events)
    seq = np.empty(count, np.int64)
    ts_ns = np.empty(count, np.int64)
    sample = np.empty(count, np.int64)
    for k, (line, event) in enumerate(events):
        args = event.get("args")
        ts = event.get("ts")
        if not isinstance(args, dict) or any(not isinstance(args.get(a), int) for a in ARGS):
            raise trace_error(path, f"line {line}", f"a Sample event without integer {ARGS}")
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not np.isfinite(ts):
            raise trace_error(
                path, f"line {line}", f"a Sample event whose ts {ts!r} is not a number"
            )
        seq[k], sample[k] = args["sample_seq"], args["sample_idx"]
        ts_ns[k] = round(ts * NS_PER_US)
    order = np.argsort(seq, kind="stable")
    if np.any(np.diff(seq[order]) == 0):
        duplicate = int(seq[order][np.flatnonzero(np.diff(seq[order]) == 0)[0]])
        raise trace_error(path, "", f"sample_seq {duplicate} appears twice")
    if np.any(sample < 0):
        raise trace_error(
            path, f"line {events[int(np.argmin(sample))][0]}", "a negative sample_idx"
        )
    lines = [events[int(i)][0] for i in order]
    times = ts_ns[order]
    times = in_order(path, times - times[0], lines, "the scheduled time (ts)")
    return finish(path, times, f"LoadGen trace {path.name}", sample=sample[order])
