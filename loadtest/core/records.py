"""Per-query raw measurements: preallocated numpy columns, one row per scheduled query.

Raw results are kept apart from their interpretation (stats.py, validity.py). Times are integer
nanoseconds relative to the run's start (t = 0 is when the first query was due), so they survive
JSON round trips exactly and never depend on wall-clock time.

The columns are declared once, as the fields of `Records` carrying `column(...)` metadata (dtype,
the value of a row nothing wrote, and whether older result files may lack it); `COLUMNS` is read
from them. Everything that handles rows in bulk goes through that list: `take` (a mix cut back
per entry), `concatenate` (the shards' merge, a closed-loop runner growing), `extended`, and the
JSON columns. Adding a per-query figure is one field here, the place that stamps it, and the place
that reports it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

NOT_SET_NS = -1  # a time that never happened (query not issued, or not completed)
NO_COUNT = -1  # a count the server never sent (final_count of an answer without one)

# Error kinds every target means the same by: the client's per-request deadline passed (--timeout,
# from the send), and the server dropped the request on its own deadline (--server-timeout).
TIMEOUT = "timeout"
SERVER_TIMEOUT = "server-timeout"


class Status(enum.IntEnum):
    """What became of a query. PENDING rows at the end of a run were never completed."""

    PENDING = 0
    OK = 1
    ERROR = 2


@dataclass(frozen=True)
class Column:
    """One per-query column: its numpy dtype, the value of a row nothing wrote, and whether a
    result file may lack it (written before it existed, or left out while it held only `fill`)."""

    name: str
    dtype: np.dtype
    fill: int
    optional: bool = False


def column(dtype: type, fill: int, *, optional: bool = False) -> Mapping[str, Any]:
    """Field metadata that makes a Records field a per-query column."""
    return {"column": (np.dtype(dtype), fill, optional)}


@dataclass
class Records:
    """Columns for n queries. `error_kinds` maps the small integers in `error_code` to texts.

    A failed query is data (status ERROR + error kind), never an exception: the runner keeps going.
    """

    # when the query was due (MLPerf latency origin for Server)
    scheduled_ns: np.ndarray = field(metadata=column(np.int64, 0))
    # which sample of the library the query carries
    sample_index: np.ndarray = field(metadata=column(np.int32, 0))
    # when the request actually left
    issued_ns: np.ndarray = field(init=False, metadata=column(np.int64, NOT_SET_NS))
    # when the response (or error) arrived
    completed_ns: np.ndarray = field(init=False, metadata=column(np.int64, NOT_SET_NS))
    status: np.ndarray = field(init=False, metadata=column(np.int8, Status.PENDING))
    # index into error_kinds, -1 when none (renumbered when records are concatenated)
    error_code: np.ndarray = field(init=False, metadata=column(np.int16, -1))
    # Answers in parts (targets declaring streams_parts; engine/parts.py stamps them): when the
    # first response arrived, how many parts came, and the count the final event carried.
    first_part_ns: np.ndarray = field(
        init=False, metadata=column(np.int64, NOT_SET_NS, optional=True)
    )
    parts: np.ndarray = field(init=False, metadata=column(np.int32, 0, optional=True))
    final_count: np.ndarray = field(init=False, metadata=column(np.int64, NO_COUNT, optional=True))
    # The prompt's token count as the server reports it (an OpenAI usage.prompt_tokens), beside
    # the client tokenizer's (rules/prompt_counts.py compares them); NO_COUNT when it sent none.
    prompt_count: np.ndarray = field(init=False, metadata=column(np.int64, NO_COUNT, optional=True))
    # A replayed trace's row of each query (core/trace.TraceRows.index, stamped from the
    # schedule's rows by the runner); -1 for a drawn law (and then left out of result.json).
    trace_index: np.ndarray = field(init=False, metadata=column(np.int64, -1, optional=True))
    samples_per_query: int = 1
    error_kinds: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.scheduled_ns)
        if len(self.sample_index) != n:
            raise ValueError("scheduled_ns and sample_index differ in length")
        for col in COLUMNS:
            if col.name in GIVEN:
                setattr(self, col.name, np.asarray(getattr(self, col.name), dtype=col.dtype))
            else:
                setattr(self, col.name, np.full(n, col.fill, dtype=col.dtype))

    def __len__(self) -> int:
        return len(self.scheduled_ns)

    def error_code_for(self, kind: str) -> int:
        """Small integer for an error kind, added on first sight (few kinds exist in practice)."""
        try:
            return self.error_kinds.index(kind)
        except ValueError:
            self.error_kinds.append(kind)
            return len(self.error_kinds) - 1

    def columns(self) -> dict[str, np.ndarray]:
        """Every per-query column by name (the arrays themselves, not copies)."""
        return {col.name: getattr(self, col.name) for col in COLUMNS}

    def _with(self, columns: Mapping[str, np.ndarray], error_kinds: list[str]) -> Records:
        """Records holding exactly these columns (each already of its length and dtype)."""
        rows = Records(
            scheduled_ns=columns["scheduled_ns"],
            sample_index=columns["sample_index"],
            samples_per_query=self.samples_per_query,
            error_kinds=error_kinds,
        )
        for name in NOT_GIVEN:
            setattr(rows, name, np.asarray(columns[name], dtype=COLUMN[name].dtype))
        return rows

    def take(self, rows: np.ndarray | slice) -> Records:
        """A copy of some rows (a boolean mask, indices or a slice), every column with them."""
        return self._with(
            {name: np.array(values[rows]) for name, values in self.columns().items()},
            list(self.error_kinds),
        )

    @classmethod
    def concatenate(cls, parts: Sequence[Records]) -> Records:
        """All rows of `parts` in order; their error kinds joined into one table (error codes
        renumbered to it). Empty `parts` gives empty Records."""
        if not parts:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int32))
        kinds: list[str] = []
        for records in parts:
            kinds.extend(k for k in records.error_kinds if k not in kinds)
        joined = {
            col.name: np.concatenate([getattr(r, col.name) for r in parts]).astype(col.dtype)
            for col in COLUMNS
        }
        codes = []
        for records in parts:
            table = np.array([kinds.index(k) for k in records.error_kinds] + [-1], dtype=np.int16)
            codes.append(table[records.error_code])  # -1 indexes the trailing -1: "no error"
        joined["error_code"] = np.concatenate(codes).astype(np.int16)
        return parts[0]._with(joined, kinds)

    def extended(self, sample_index: np.ndarray) -> Records:
        """These rows followed by one unwritten row per new sample index (due at t = 0)."""
        more = Records(np.zeros(len(sample_index), np.int64), sample_index)
        return Records.concatenate([self, more])

    @property
    def issued(self) -> np.ndarray:
        """Mask of queries that left the client."""
        return self.issued_ns != NOT_SET_NS

    @property
    def ok(self) -> np.ndarray:
        return self.status == Status.OK

    @property
    def errored(self) -> np.ndarray:
        return self.status == Status.ERROR

    @property
    def pending(self) -> np.ndarray:
        return self.status == Status.PENDING

    @property
    def streamed(self) -> np.ndarray:
        """Mask of queries whose answer began to arrive in parts (a first response came)."""
        return self.first_part_ns != NOT_SET_NS

    def latency_from_scheduled_ns(self) -> np.ndarray:
        """Completion − scheduled time for successful queries (the MLPerf Server definition)."""
        ok = self.ok
        return self.completed_ns[ok] - self.scheduled_ns[ok]

    def latency_from_issue_ns(self) -> np.ndarray:
        """Completion − actual send, for successful queries (what perf_analyzer reports)."""
        ok = self.ok
        return self.completed_ns[ok] - self.issued_ns[ok]

    def send_lag_ns(self) -> np.ndarray:
        """Actual send − scheduled time, for every issued query."""
        issued = self.issued
        return self.issued_ns[issued] - self.scheduled_ns[issued]

    def first_part_from_scheduled_ns(self) -> np.ndarray:
        """First response − scheduled time (time to first token, from the schedule), for
        successful queries whose answer came in parts."""
        kept = self.ok & self.streamed
        return self.first_part_ns[kept] - self.scheduled_ns[kept]

    def to_columns(self) -> dict[str, list[int]]:
        """Compact JSON-able form: one list per column. An optional column holding nothing but
        its fill is left out, so a run that never used it writes the file it always wrote."""
        return {
            name: values.tolist()
            for name, values in self.columns().items()
            if not (COLUMN[name].optional and bool(np.all(values == COLUMN[name].fill)))
        }

    @classmethod
    def from_columns(
        cls,
        columns: Mapping[str, Sequence[int]],
        error_kinds: list[str],
        samples_per_query: int = 1,
    ) -> Records:
        """The inverse of `to_columns`. A missing optional column reads as its fill (files
        written before it existed); a missing required one raises KeyError, a column of another
        length ValueError."""
        records = cls(
            scheduled_ns=np.asarray(columns["scheduled_ns"], dtype=np.int64),
            sample_index=np.asarray(columns["sample_index"], dtype=np.int32),
            samples_per_query=samples_per_query,
            error_kinds=list(error_kinds),
        )
        for name in NOT_GIVEN:
            col = COLUMN[name]
            if name in columns or not col.optional:
                values = np.asarray(columns[name], dtype=col.dtype)
                if values.shape != (len(records),):
                    raise ValueError(f"column {name} holds {values.size} rows, not {len(records)}")
                setattr(records, name, values)
        return records


COLUMNS: tuple[Column, ...] = tuple(
    Column(f.name, *f.metadata["column"]) for f in fields(Records) if "column" in f.metadata
)
COLUMN: dict[str, Column] = {col.name: col for col in COLUMNS}
GIVEN = frozenset(f.name for f in fields(Records) if "column" in f.metadata and f.init)
NOT_GIVEN: tuple[str, ...] = tuple(col.name for col in COLUMNS if col.name not in GIVEN)
