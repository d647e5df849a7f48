"""JSON read with a nesting bound: no file loadtest reads needs more than a few levels, and a
hostile one ('[' * 100000) made json.loads raise RecursionError (#26). The depth is found before
parsing, vectorised (result files with records run to tens of MB): the brackets outside strings,
counted up and down."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

# result.json's deepest path is about 6 levels (a sweep's points' probes' summaries' latency);
# 64 leaves room for any later schema and stays far below Python's recursion limit.
MAX_JSON_DEPTH = 64


class JsonTooDeep(ValueError):
    """The text nests deeper than MAX_JSON_DEPTH: refused before json.loads recurses."""


def json_depth(text: str | bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text (brackets in strings ignored)."""
    raw = text.encode() if isinstance(text, str) else text
    data = np.frombuffer(raw, dtype=np.uint8)
    quotes = np.flatnonzero(data == ord('"'))
    if quotes.size:
        # a quote preceded by an odd run of backslashes is inside a string, escaped
        escaped = np.zeros(quotes.size, dtype=bool)
        for i in np.flatnonzero(data[np.maximum(quotes - 1, 0)] == ord("\\")):
            at, run = int(quotes[i]) - 1, 0
            while at >= 0 and raw[at] == ord("\\"):
                run, at = run + 1, at - 1
            escaped[i] = run % 2 == 1
        quotes = quotes[~escaped]
    toggles = np.zeros(data.size + 1, dtype=np.int8)
    toggles[quotes + 1] = 1
    in_string = (np.cumsum(toggles[:-1], dtype=np.int64) % 2) == 1
    step = np.zeros(data.size, dtype=np.int64)
    step[(data == ord("[")) | (data == ord("{"))] = 1
    step[(data == ord("]")) | (data == ord("}"))] = -1
    step[in_string] = 0
    return int(np.cumsum(step).max(initial=0))


def loads_bounded(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads, refusing (JsonTooDeep) a text nested deeper than max_depth."""
    depth = json_depth(text)
    if depth > max_depth:
        raise JsonTooDeep(f"nested {depth} levels deep (at most {max_depth} expected)")
    return json.loads(text)
