"""Per-query raw measurements: preallocated numpy columns, one row per scheduled query.

Raw results are kept apart from their interpretation (stats.py, validity.py). Times are integer
nanoseconds relative to the run's start (t = 0 is when the first query was due), so they survive
JSON round trips exactly and never depend on wall-clock time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

NOT_SET_NS = -1  # a time that never happened (query not issued, or not completed)

# Error kinds every target means the same by: the client's per-request deadline passed (--timeout,
# from the send), and the server dropped the request on its own deadline (--server-timeout).
TIMEOUT = "timeout"
SERVER_TIMEOUT = "server-timeout"


class Status(enum.IntEnum):
    """What became of a query. PENDING rows at the end of a run were never completed."""

    PENDING = 0
    OK = 1
    ERROR = 2


@dataclass
class Records:
    """Columns for n queries. `error_kinds` maps the small integers in `error_code` to texts.

    A failed query is data (status ERROR + error kind), never an exception: the runner keeps going.
    """

    scheduled_ns: np.ndarray  # int64: when the query was due (MLPerf latency origin for Server)
    sample_index: np.ndarray  # int32: which sample of the library the query carries
    issued_ns: np.ndarray = field(init=False)  # int64: when the request actually left
    completed_ns: np.ndarray = field(init=False)  # int64: when the response (or error) arrived
    status: np.ndarray = field(init=False)  # int8: Status
    error_code: np.ndarray = field(init=False)  # int16: index into error_kinds, -1 when none
    samples_per_query: int = 1
    error_kinds: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.scheduled_ns)
        if len(self.sample_index) != n:
            raise ValueError("scheduled_ns and sample_index differ in length")
        self.issued_ns = np.full(n, NOT_SET_NS, dtype=np.int64)
        self.completed_ns = np.full(n, NOT_SET_NS, dtype=np.int64)
        self.status = np.zeros(n, dtype=np.int8)
        self.error_code = np.full(n, -1, dtype=np.int16)

    def __len__(self) -> int:
        return len(self.scheduled_ns)

    def error_code_for(self, kind: str) -> int:
        """Small integer for an error kind, added on first sight (few kinds exist in practice)."""
        try:
            return self.error_kinds.index(kind)
        except ValueError:
            self.error_kinds.append(kind)
            return len(self.error_kinds) - 1

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

    def to_columns(self) -> dict[str, list[int]]:
        """Compact JSON-able form: one list per column."""
        return {
            "scheduled_ns": self.scheduled_ns.tolist(),
            "sample_index": self.sample_index.tolist(),
            "issued_ns": self.issued_ns.tolist(),
            "completed_ns": self.completed_ns.tolist(),
            "status": self.status.tolist(),
            "error_code": self.error_code.tolist(),
        }

    @classmethod
    def from_columns(
        cls, columns: dict[str, list[int]], error_kinds: list[str], samples_per_query: int = 1
    ) -> Records:
        records = cls(
            scheduled_ns=np.asarray(columns["scheduled_ns"], dtype=np.int64),
            sample_index=np.asarray(columns["sample_index"], dtype=np.int32),
            samples_per_query=samples_per_query,
            error_kinds=list(error_kinds),
        )
        records.issued_ns[:] = columns["issued_ns"]
        records.completed_ns[:] = columns["completed_ns"]
        records.status[:] = columns["status"]
        records.error_code[:] = columns["error_code"]
        return records
