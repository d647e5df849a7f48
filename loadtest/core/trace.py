"""A recorded trace, read: each query's time and what the trace says about it, and how it is
replayed (a window, a speed-up, an idle-gap cap).

The readers (engine/traces/) turn each file format into a `Trace` in its own units; this module
is the arithmetic they share and what the rest of the package sees: `Trace.replayed(options)`
then `core.arrivals.Timestamps.of(trace)` is the arrival law a run plays.

`TraceRows` is what a trace says about each query beside its time, carried with the query
through the schedule and its shards (core/schedule.py deals it with the times): the row's
index in the trace (so each query keeps its trace index), and where the format has them its
sample, model, and input and output lengths in tokens. Arrays are read-only, so a frozen
trace stays frozen when it crosses to a worker process or a Ray actor. Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from loadtest.core.units import NS_PER_S
from loadtest.errors import SettingsError

ROW_COLUMNS = ("index", "sample", "input_tokens", "output_tokens", "model_index")


def _frozen(values: np.ndarray, dtype: type) -> np.ndarray:
    array: np.ndarray = np.ascontiguousarray(values, dtype=dtype)
    if array is values:
        array = array.copy()
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class TraceRows:
    """Per query, in schedule order: its row in the trace (`index`, 0-based among the trace's
    data rows as read), and optionally its sample, input and output lengths (tokens) and
    model (`model_index` into `models`). Every array has one entry per query."""

    index: np.ndarray
    sample: np.ndarray | None = None
    input_tokens: np.ndarray | None = None
    output_tokens: np.ndarray | None = None
    model_index: np.ndarray | None = None
    models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", _frozen(self.index, np.int64))
        for name in ROW_COLUMNS[1:]:
            values = getattr(self, name)
            if values is not None:
                dtype = np.int32 if name == "model_index" else np.int64
                column = _frozen(values, dtype)
                if column.shape != self.index.shape:
                    raise ValueError(f"trace rows: {name} and index differ in length")
                object.__setattr__(self, name, column)
        object.__setattr__(self, "models", tuple(self.models))
        codes = self.model_index
        if (
            codes is not None
            and len(codes)
            and (codes.min() < 0 or codes.max() >= len(self.models))
        ):
            raise ValueError("trace rows: a model index outside the model names")

    def __len__(self) -> int:
        return len(self.index)

    def take(self, which: np.ndarray) -> TraceRows:
        """The rows at `which` (a boolean mask or indices), in that order."""

        def part(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else values[which]

        return TraceRows(
            self.index[which],
            part(self.sample),
            part(self.input_tokens),
            part(self.output_tokens),
            part(self.model_index),
            self.models,
        )

    @classmethod
    def concatenate(cls, parts: list[TraceRows]) -> TraceRows:
        """Several shards' rows end to end (they must share the model names and columns)."""
        first = parts[0]
        columns: dict[str, np.ndarray | None] = {}
        for name in ROW_COLUMNS:
            present = [getattr(p, name) is not None for p in parts]
            if any(present) and not all(present):
                raise ValueError(f"trace rows: {name} is missing from some parts")
            columns[name] = (
                np.concatenate([getattr(p, name) for p in parts]) if all(present) else None
            )
        if any(p.models != first.models for p in parts):
            raise ValueError("trace rows: the parts name different models")
        index = columns.pop("index")
        assert index is not None
        return cls(index, **columns, models=first.models)

    def model_of(self, query: int) -> str | None:
        return None if self.model_index is None else self.models[int(self.model_index[query])]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TraceRows) or self.models != other.models:
            return False
        for name in ROW_COLUMNS:
            mine, theirs = getattr(self, name), getattr(other, name)
            if (mine is None) != (theirs is None):
                return False
            if mine is not None and not np.array_equal(mine, theirs):
                return False
        return True

    def __hash__(self) -> int:
        return hash((self.index.tobytes(), self.models, len(self)))


@dataclass(frozen=True)
class ReplayOptions:
    """How a trace is replayed; applied in this order by `Trace.replayed`:
    - `start_ns`, `end_ns`: the window [start, end) in the trace's own time, from its origin;
      the window's start becomes the replay's t = 0;
    - `speedup`: every time divided by it (2 plays twice as fast; 1 leaves times untouched);
    - `max_gap_ns`: any gap longer than this, after the speed-up, is shortened to it (idle
      stretches of a day-long log cut to a second, say); the gap before the first query too."""

    speedup: float = 1.0
    max_gap_ns: int | None = None
    start_ns: int = 0
    end_ns: int | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.speedup, (int, float)) and math.isfinite(self.speedup)):
            raise SettingsError(f"--speedup must be a finite number, got {self.speedup}")
        if not 1e-6 <= self.speedup <= 1e6:
            raise SettingsError(f"--speedup must be in [1e-6, 1e6], got {self.speedup:g}")
        if self.max_gap_ns is not None and self.max_gap_ns <= 0:
            raise SettingsError("the idle-gap cap must be > 0 s")
        if self.start_ns < 0:
            raise SettingsError("the trace window's start must be ≥ 0 s")
        if self.end_ns is not None and self.end_ns <= self.start_ns:
            raise SettingsError("the trace window's end must be after its start")

    @property
    def identity(self) -> bool:
        return self == ReplayOptions()

    def describe(self) -> str:
        parts = []
        if self.start_ns or self.end_ns is not None:
            end = "end" if self.end_ns is None else f"{self.end_ns / NS_PER_S:g} s"
            parts.append(f"window {self.start_ns / NS_PER_S:g} s-{end}")
        if self.speedup != 1:
            parts.append(f"speed-up ×{self.speedup:g}")
        if self.max_gap_ns is not None:
            parts.append(f"gaps capped at {self.max_gap_ns / NS_PER_S:g} s")
        return ", ".join(parts)


@dataclass(frozen=True, eq=False)
class Trace:
    """A trace as read: `times_ns` (int64 ns from the trace's origin, non-decreasing), one
    `rows` entry per time, and `source` naming it for reports ("mooncake trace conv.jsonl").

    The origin is the format's own start where it has one (loadtest's result.json: the run's
    start, so a replay keeps the first query's offset and reproduces the schedule bit for bit)
    and the first row otherwise."""

    times_ns: np.ndarray
    rows: TraceRows
    source: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "times_ns", _frozen(self.times_ns, np.int64))
        if len(self.times_ns) != len(self.rows):
            raise ValueError("a trace's times and rows differ in length")

    def __len__(self) -> int:
        return len(self.times_ns)

    def replayed(self, options: ReplayOptions) -> Trace:
        """The trace as `options` replay it (see ReplayOptions); SettingsError if no row is
        left."""
        if options.identity:
            return self
        times = self.times_ns
        keep = times >= options.start_ns
        if options.end_ns is not None:
            keep &= times < options.end_ns
        if not keep.any():
            raise SettingsError(
                f"{self.source}: the window {options.describe()} holds none of its "
                f"{len(times):,} rows (they span 0-{int(times[-1]) / NS_PER_S:g} s)"
            )
        rows = self.rows if keep.all() else self.rows.take(keep)
        times = times[keep] - options.start_ns
        if options.speedup != 1:
            times = np.round(times / options.speedup).astype(np.int64)
        if options.max_gap_ns is not None:
            gaps = np.minimum(np.diff(times, prepend=0), options.max_gap_ns)
            times = np.cumsum(gaps)
        return Trace(times, rows, f"{self.source} ({options.describe()})")
