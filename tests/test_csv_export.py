"""CSV export: records.csv round-trips exactly; summary.csv is metric,value rows."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from synthetic_results import run_json, synthetic_records

from loadtest.core.records import NOT_SET_NS
from loadtest.errors import ResultFileError
from loadtest.report.csv_export import (
    RECORD_COLUMNS,
    TIMELINE_COLUMNS,
    read_records_csv,
    records_csv,
    summary_csv,
    timeline_csv,
)
from loadtest.rules.stats import timeline


def test_records_round_trip_exactly():
    records = synthetic_records(n=500, errors=4)
    records.issued_ns[-1] = NOT_SET_NS  # one query never issued
    text = records_csv(records)
    back = read_records_csv(text)
    for column in ("scheduled_ns", "sample_index", "issued_ns", "completed_ns", "status"):
        assert np.array_equal(getattr(back, column), getattr(records, column)), column
    kinds = [records.error_kinds[c] if c >= 0 else None for c in records.error_code.tolist()]
    kinds_back = [back.error_kinds[c] if c >= 0 else None for c in back.error_code.tolist()]
    assert kinds == kinds_back


def test_records_columns_and_derived_values():
    records = synthetic_records(n=50, errors=2)
    rows = list(csv.DictReader(io.StringIO(records_csv(records))))
    assert tuple(rows[0]) == RECORD_COLUMNS
    assert rows[0]["status"] == "error" and rows[0]["error_kind"] == "timeout"
    assert rows[-1]["status"] == "pending" and rows[-1]["completed_ns"] == ""
    assert rows[-1]["latency_ns"] == ""
    ok = rows[10]
    assert ok["status"] == "ok" and ok["error_kind"] == ""
    assert int(ok["latency_ns"]) == int(ok["completed_ns"]) - int(ok["scheduled_ns"])
    assert int(ok["send_lag_ns"]) == int(ok["issued_ns"]) - int(ok["scheduled_ns"])


def test_summary_csv_has_flattened_metrics():
    data = run_json(synthetic_records(n=300, errors=3))
    rows = dict(csv.reader(io.StringIO(summary_csv(data))))
    assert rows["metric"] == "value"
    assert rows["scenario"] == "Server"
    assert int(rows["latency.p99_ns"]) == data["summary"]["latency"]["p99_ns"]
    assert rows["errors_by_kind.timeout"] == "3"
    assert "latency_hdr" not in rows


def test_not_a_records_csv_is_refused():
    with pytest.raises(ResultFileError, match=r"records\.csv"):
        read_records_csv("a,b\n1,2\n")


def test_timeline_csv_has_one_row_per_second_matching_the_timeline():
    records = synthetic_records(n=3000, errors=7)
    line = timeline(records)
    rows = list(csv.DictReader(io.StringIO(timeline_csv(line))))
    assert len(rows) == len(line) >= 2
    assert tuple(rows[0])[: len(TIMELINE_COLUMNS)] == TIMELINE_COLUMNS
    assert "errors.timeout" in rows[0]
    for k, row in enumerate(rows):
        assert int(row["start_ns"]) == line.start_ns[k]
        assert int(row["completed"]) == line.completed[k]
        assert int(row["errors.timeout"]) == line.errors_by_kind["timeout"][k]
        p99 = line.p99_latency_ns[k]
        assert row["p99_latency_ns"] == ("" if np.isnan(p99) else str(round(p99)))
    assert sum(int(r["scheduled"]) for r in rows) == len(records)
