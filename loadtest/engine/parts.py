"""Records answers that arrive in parts: their per-query columns and the gaps between parts.

A target declaring `streams_parts` reports each query's events to the `core.target.Parts` the
runner gives it (`QueryParts` here). The first response, the part count and the final event's
count (and the prompt's, where the server reports one) land in the query's row of Records
(first_part_ns, parts, final_count, prompt_count); the gaps between
consecutive parts of one answer are many per query, so they go into one HDR histogram per run
(rules/stats.py's fixed range), which adds exactly across workers like the latency histograms.

Cheap per event, as the runner's completion path: one clock read, a few array writes, and a list
append per gap; the list is folded into the histogram's counts (vectorised, rules/stats.py's
LatencyCounts) every GAP_BATCH gaps, a fold short enough not to make a send late. A target
reports the parts of one network read at once (`part(count)`): one clock read for them all, and
gaps of 0 between them (counted, not listed), which is what the client saw.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from hdrh.histogram import HdrHistogram

from loadtest.core.records import NO_COUNT, NOT_SET_NS, Records
from loadtest.core.target import Done
from loadtest.rules.stats import LatencyCounts, encode_histogram

# A fold of 4096 gaps takes ~0.1 ms; one of 65 536 into an HdrHistogram took ~10 ms, every 256
# answers of 256 tokens, and made those sends late (benchmarks/stream_client.py).
GAP_BATCH = 4096


class PartsLog:
    """One run's record of answers in parts. `records` and `start_ns` are the runner's (a
    closed-loop runner replaces `records` when it grows); once `closed`, events are ignored,
    as answers after the run's end are."""

    def __init__(self, records: Records, clock: Callable[[], int]) -> None:
        self.records = records
        self.clock = clock
        self.start_ns = 0
        self.closed = False
        self._gaps: list[int] = []
        self._zero_gaps = 0  # gaps between parts of one read
        self._counts = LatencyCounts()

    def query(self, i: int, done: Done) -> QueryParts:
        """The Parts for query `i` (its row); `done` runs once, when the target ends it."""
        return QueryParts(self, i, done)

    def _gap(self, gap_ns: int) -> None:
        self._gaps.append(gap_ns)
        if len(self._gaps) >= GAP_BATCH:
            self._fold()

    def _together(self, count: int) -> None:
        """`count` gaps of 0: parts that came in the same read as the one before them."""
        self._zero_gaps += count

    def _fold(self) -> None:
        if self._gaps:
            self._counts.add(np.asarray(self._gaps, dtype=np.int64))
            self._gaps.clear()
        if self._zero_gaps:
            self._counts.add_zeros(self._zero_gaps)
            self._zero_gaps = 0

    def gaps(self) -> HdrHistogram:
        """Every gap between consecutive parts of one answer so far (ns)."""
        self._fold()
        return self._counts.histogram()

    def encoded_gaps(self) -> str:
        return encode_histogram(self.gaps())


class QueryParts:
    """One query's answer in parts (core.target.Parts), written into its row as events come."""

    __slots__ = ("_done", "_i", "_last", "_log", "_over")

    def __init__(self, log: PartsLog, i: int, done: Done) -> None:
        self._log = log
        self._i = i
        self._done = done
        self._last = NOT_SET_NS  # when the previous part came
        self._over = False

    def first(self) -> None:
        log = self._log
        if self._over or log.closed:
            return
        column = log.records.first_part_ns
        if column[self._i] == NOT_SET_NS:
            column[self._i] = log.clock() - log.start_ns

    def part(self, count: int = 1) -> None:
        log = self._log
        if self._over or log.closed:
            return
        now = log.clock() - log.start_ns
        records = log.records
        if self._last != NOT_SET_NS:
            log._gap(now - self._last)
        elif records.first_part_ns[self._i] == NOT_SET_NS:
            records.first_part_ns[self._i] = now
        if count > 1:
            log._together(count - 1)
        self._last = now
        records.parts[self._i] += count

    def final(self, count: int | None, prompt_count: int | None = None) -> None:
        if self._over or self._log.closed:
            return
        records = self._log.records
        records.final_count[self._i] = NO_COUNT if count is None else count
        if prompt_count is not None:
            records.prompt_count[self._i] = prompt_count

    def done(self, error: str | None) -> None:
        if self._over:
            return
        self._over = True
        self._done(error)
