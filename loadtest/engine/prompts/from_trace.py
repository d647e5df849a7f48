"""A recorded LLM trace's lengths shape the prompts: one prompt per row.

When a replayed trace (Mooncake, Azure, BurstGPT, a plain table with lengths) carries input
lengths and names no samples, each row gets a sample of its own: row k of the replayed trace
plays sample k, whose prompt has the row's input length and whose max_tokens is the row's
output length. The rows then name their samples by position (`TraceRows.sample`), so the
schedule, its deal to workers and find-peak's speed-ups keep each query with its row's prompt
without anything downstream knowing. A sample per row is the simple honest design: two rows of
the same length still get different text (a shared text would be a cache hit the trace never
had). Its cost is memory, hence the caps (core/prompts.py): beyond them the trace must be
windowed.

--shared-prefix reads a Mooncake trace's `hash_ids` (engine/traces/mooncake.read_hash_ids) for
the replayed rows, so engine/prompts/render.py gives each block id the same text everywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from loadtest.core.arrivals import Timestamps
from loadtest.core.prompts import MAX_TRACE_PROMPTS, TraceLengths
from loadtest.core.trace import TraceRows
from loadtest.engine.traces import detect_format
from loadtest.engine.traces.mooncake import read_hash_ids
from loadtest.errors import SettingsError


def trace_prompts(
    law: Timestamps, path: Path, format: str | None, shared_prefix: bool
) -> tuple[Timestamps, TraceLengths | None]:
    """The law with each row naming its own sample, and the rows' lengths; the law unchanged
    and None when the trace has no input lengths or names its samples already."""
    rows = law.rows
    if rows is None or rows.input_tokens is None or rows.sample is not None:
        if shared_prefix:
            raise SettingsError(
                f"--shared-prefix: {law.source} carries no input lengths and hash_ids "
                "(a Mooncake trace does)"
            )
        return law, None
    if len(rows) > MAX_TRACE_PROMPTS:
        raise SettingsError(
            f"{law.source}: {len(rows):,} rows with lengths, over the {MAX_TRACE_PROMPTS:,} "
            "prompts rendered one per row; replay a window (--trace-start, --trace-end)"
        )
    hash_ids = None
    if shared_prefix:
        if (format or detect_format(path)).strip().lower() != "mooncake":
            raise SettingsError(f"--shared-prefix: {law.source} has no hash_ids (Mooncake's)")
        every = read_hash_ids(path)
        hash_ids = tuple(every[int(i)] for i in rows.index)
    lengths = TraceLengths(rows.input_tokens, rows.output_tokens, hash_ids, law.source)
    by_row = TraceRows(
        rows.index,
        np.arange(len(rows), dtype=np.int64),
        rows.input_tokens,
        rows.output_tokens,
        rows.model_index,
        rows.models,
    )
    return Timestamps(law.times_ns, rows=by_row, source=law.source), lengths
