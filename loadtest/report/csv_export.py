"""A run's per-query records and its summary as CSV, for spreadsheets, pandas and other tools.

records.csv — one row per scheduled query, in schedule order:

    query          row number (0-based), the query's position in the schedule
    sample_index   which sample of the library the query carried
    scheduled_ns   when the query was due, ns from the run's start (the latency origin)
    issued_ns      when the request actually left; empty if it never did
    completed_ns   when the response or error arrived; empty if it never did
    status         ok, error or pending (never completed)
    error_kind     the error's kind for status=error, else empty
    latency_ns     completed_ns − scheduled_ns (latency from scheduled time, the MLPerf Server
                   definition; also filled for errors = time to the error); empty if not completed.
                   The summary's percentiles use the status=ok rows only.
    send_lag_ns    issued_ns − scheduled_ns (how late the client sent); empty if never issued

A streamed run (answers in parts: any query with a first response) gets seven more columns; any
other run's records.csv is unchanged:

    first_part_ns      when the first response arrived, ns from the run's start; empty if none
    ttft_ns            first_part_ns − scheduled_ns: time to first token from the scheduled time
                       (LoadGen's origin, the one the TTFT bound holds); also for failed queries
                       that got a first response. The token figures use the status=ok rows only.
    ttft_from_send_ns  first_part_ns − issued_ns: time to first token from the actual send
    parts              responses received (0 for none)
    final_count        the server's token count (num_output_tokens summed); empty if it sent none
    tokens             n_tokens of a status=ok row, as the token figures count it: final_count, or
                       parts when the server sent no counts (summary.csv's tokens.token_source
                       says which); empty for other rows
    tpot_ns            (completed_ns − first_part_ns) // (tokens − 1): time per output token,
                       the first token excluded (LoadGen; = (e2e − TTFT)/(n − 1), floored to the
                       ns as the figures are); status=ok rows with tokens > 1 only

summary.csv — `metric,value` rows: scenario, verdict.valid, then every field of the summary
flattened with dots (latency.p99_ns, send_lag.late_share, errors_by_kind.<kind>, ...), and for a
streamed run result.json's token figures as `tokens.*` rows (tokens.ttft.p99_ns, tokens.tpot.p50_ns,
tokens.itl.p99_ns, tokens.token_source, tokens.origins.<figure>, ...). Times stay integer ns as in
result.json. The HDR histogram string (latency_hdr) is left out: it is an encoding
for exact merges, not a number.

timeline.csv — one row per second of the run (result.json's `timeline`, written for every run
with or without --records): start_ns, scheduled, issued, completed, errors, in_flight,
p50_latency_ns, p99_latency_ns (exact percentiles of the latency from scheduled time of the
successful queries completing in that second; empty where none completed), p99_send_lag_ns,
max_send_lag_ns (among the queries sent in that second; empty where none), then one
errors.<kind> column per error kind seen.

`read_records_csv` parses records.csv back into Records (the round trip is exact, the streamed
columns first_part_ns, parts and final_count included; the derived columns are not read). Pure
text in, text out; the command writes the files.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np

from loadtest.core.records import NO_COUNT, NOT_SET_NS, Records, Status
from loadtest.errors import ResultFileError
from loadtest.rules.stats import Timeline
from loadtest.rules.tokens import query_tokens

RECORD_COLUMNS = (
    "query",
    "sample_index",
    "scheduled_ns",
    "issued_ns",
    "completed_ns",
    "status",
    "error_kind",
    "latency_ns",
    "send_lag_ns",
)
# Appended for a streamed run only (see the module docstring).
TOKEN_COLUMNS = (
    "first_part_ns",
    "ttft_ns",
    "ttft_from_send_ns",
    "parts",
    "final_count",
    "tokens",
    "tpot_ns",
)
STATUS_TEXT = {Status.PENDING: "pending", Status.OK: "ok", Status.ERROR: "error"}
STATUS_OF_TEXT = {text: status for status, text in STATUS_TEXT.items()}
SKIPPED_SUMMARY_FIELDS = frozenset({"latency_hdr"})


def _time(value: int) -> str:
    return "" if value == NOT_SET_NS else str(value)


def records_csv(records: Records) -> str:
    """records.csv text (see the module docstring)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    streamed = bool(records.streamed.any())
    writer.writerow(RECORD_COLUMNS + TOKEN_COLUMNS if streamed else RECORD_COLUMNS)
    kinds = records.error_kinds
    columns = zip(
        records.sample_index.tolist(),
        records.scheduled_ns.tolist(),
        records.issued_ns.tolist(),
        records.completed_ns.tolist(),
        records.status.tolist(),
        records.error_code.tolist(),
        strict=True,
    )
    token_cells = _token_cells(records) if streamed else None
    for query, (sample, scheduled, issued, completed, status, code) in enumerate(columns):
        kind = ""
        if status == Status.ERROR:
            kind = kinds[code] if 0 <= code < len(kinds) else "unknown"
        row: list[object] = [
            query,
            sample,
            scheduled,
            _time(issued),
            _time(completed),
            STATUS_TEXT[Status(status)],
            kind,
            "" if completed == NOT_SET_NS else completed - scheduled,
            "" if issued == NOT_SET_NS else issued - scheduled,
        ]
        if token_cells is not None:
            row += token_cells[query]
        writer.writerow(row)
    return out.getvalue()


def _token_cells(records: Records) -> list[list[object]]:
    """Each row's TOKEN_COLUMNS cells: rules/tokens.py's per-query arithmetic, row by row."""
    tokens, _ = query_tokens(records)
    counted = records.ok & records.streamed
    cells = []
    rows = zip(
        records.scheduled_ns.tolist(),
        records.issued_ns.tolist(),
        records.completed_ns.tolist(),
        records.first_part_ns.tolist(),
        records.parts.tolist(),
        records.final_count.tolist(),
        tokens.tolist(),
        counted.tolist(),
        strict=True,
    )
    for scheduled, issued, completed, first, parts, final, n, ok in rows:
        came = first != NOT_SET_NS
        cells.append(
            [
                _time(first),
                first - scheduled if came else "",
                first - issued if came and issued != NOT_SET_NS else "",
                parts,
                "" if final == NO_COUNT else final,
                n if ok else "",
                (completed - first) // (n - 1) if ok and n > 1 else "",
            ]
        )
    return cells


def read_records_csv(text: str, samples_per_query: int = 1) -> Records:
    """Records from records.csv text; error kinds are numbered in order of first appearance."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or tuple(reader.fieldnames[: len(RECORD_COLUMNS)]) != (
        RECORD_COLUMNS
    ):
        raise ResultFileError(f"not a loadtest records.csv (expected columns {RECORD_COLUMNS})")
    rows = list(reader)
    records = Records(
        scheduled_ns=np.array([int(r["scheduled_ns"]) for r in rows], dtype=np.int64),
        sample_index=np.array([int(r["sample_index"]) for r in rows], dtype=np.int32),
        samples_per_query=samples_per_query,
    )
    streamed = set(TOKEN_COLUMNS).issubset(reader.fieldnames)
    for i, row in enumerate(rows):
        records.issued_ns[i] = int(row["issued_ns"]) if row["issued_ns"] else NOT_SET_NS
        records.completed_ns[i] = int(row["completed_ns"]) if row["completed_ns"] else NOT_SET_NS
        status = STATUS_OF_TEXT[row["status"]]
        records.status[i] = status
        if status == Status.ERROR:
            records.error_code[i] = records.error_code_for(row["error_kind"] or "unknown")
        if streamed:
            first, final = row["first_part_ns"], row["final_count"]
            records.first_part_ns[i] = int(first) if first else NOT_SET_NS
            records.parts[i] = int(row["parts"])
            records.final_count[i] = int(final) if final else NO_COUNT
    return records


def flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        if key in SKIPPED_SUMMARY_FIELDS:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(flatten(value, f"{name}."))
        else:
            rows.append((name, value))
    return rows


def summary_csv(result: dict[str, Any]) -> str:
    """summary.csv text from a run's result JSON (see the module docstring)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("metric", "value"))
    writer.writerow(("scenario", result.get("scenario", "")))
    verdict = result.get("verdict")
    if isinstance(verdict, dict) and "valid" in verdict:
        writer.writerow(("verdict.valid", verdict["valid"]))
    for name, value in flatten(result.get("summary") or {}):
        writer.writerow((name, value))
    tokens = result.get("tokens")
    if isinstance(tokens, dict):
        for name, value in flatten(tokens, "tokens."):
            writer.writerow((name, "" if value is None else value))
    return out.getvalue()


TIMELINE_COLUMNS = (
    "start_ns",
    "scheduled",
    "issued",
    "completed",
    "errors",
    "in_flight",
    "p50_latency_ns",
    "p99_latency_ns",
    "p99_send_lag_ns",
    "max_send_lag_ns",
)


def timeline_csv(timeline: Timeline) -> str:
    """timeline.csv text (see the module docstring)."""
    columns = timeline.to_dict()
    kinds = sorted(columns["errors_by_kind"])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*TIMELINE_COLUMNS, *(f"errors.{kind}" for kind in kinds)])
    for k in range(len(timeline)):
        cells = [columns[name][k] for name in TIMELINE_COLUMNS]
        cells += [columns["errors_by_kind"][kind][k] for kind in kinds]
        writer.writerow(["" if cell is None else cell for cell in cells])
    return out.getvalue()
