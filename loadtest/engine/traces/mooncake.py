"""Mooncake's JSON-lines trace (kvcache-ai/Mooncake FAST25-release; AIPerf and GuideLLM replay
it): one request per line, `timestamp` in milliseconds, `input_length` and `output_length` in
tokens, and `hash_ids` (the prompt's 512-token blocks, shared prefixes being KV-cache reuse).

The times are taken from the first row. The lengths are carried on each query. `hash_ids` are
read apart (`read_hash_ids`, by row index), only when prompts share prefixes (--shared-prefix,
engine/prompts/): they are ragged and the schedule has no use for them.
"""

from __future__ import annotations

from pathlib import Path

from loadtest.core.trace import Trace
from loadtest.engine.traces.common import counts, finish, floats, to_ns, trace_error
from loadtest.engine.traces.table import read_jsonl

TIME, INPUT, OUTPUT, HASH_IDS = "timestamp", "input_length", "output_length", "hash_ids"
SIGNS = (INPUT, OUTPUT, HASH_IDS)  # beside TIME, what tells a Mooncake record


def read_mooncake(path: Path) -> Trace:
    columns = read_jsonl(path, (TIME, INPUT, OUTPUT), required=(TIME, INPUT, OUTPUT))
    lines = columns.lines
    times = to_ns(path, floats(path, columns[TIME], lines, TIME), "ms", lines, TIME)
    return finish(
        path,
        times,
        f"mooncake trace {path.name}",
        input_tokens=counts(path, columns[INPUT], lines, INPUT),
        output_tokens=counts(path, columns[OUTPUT], lines, OUTPUT),
    )


def read_hash_ids(path: Path) -> list[tuple[int, ...]]:
    """Each row's `hash_ids` (whole numbers ≥ 0), indexed like the trace's rows (TraceRows.index);
    one line naming the row for a missing or malformed list."""
    columns = read_jsonl(path, (HASH_IDS,), required=(HASH_IDS,))
    rows = []
    for value, line in zip(columns[HASH_IDS], columns.lines, strict=True):
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
        ):
            raise trace_error(
                path, f"line {line}", f"{HASH_IDS} is not a list of whole numbers ≥ 0"
            )
        rows.append(tuple(value))
    return rows
