"""Mooncake's JSON-lines trace (kvcache-ai/Mooncake FAST25-release; AIPerf and GuideLLM replay
it): one request per line, `timestamp` in milliseconds, `input_length` and `output_length` in
tokens, and `hash_ids` (the prompt's 512-token blocks, shared prefixes being KV-cache reuse).

The times are taken from the first row. The lengths are carried on each query; `hash_ids` are
not read yet (a prefix-sharing payload is the streaming work's, not the schedule's).
"""

from __future__ import annotations

from pathlib import Path

from loadtest.core.trace import Trace
from loadtest.engine.traces.common import counts, finish, floats, to_ns
from loadtest.engine.traces.table import read_jsonl

TIME, INPUT, OUTPUT = "timestamp", "input_length", "output_length"
SIGNS = (INPUT, OUTPUT, "hash_ids")  # beside TIME, what tells a Mooncake record


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
