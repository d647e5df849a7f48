"""Per-query columns are declared once (core/records.py), and answers in parts reach them.

Every bulk operation (take, concatenate, extended, the JSON columns) is checked column by column
over `COLUMNS`, so a column added later is covered without touching these tests. Then the part
columns end to end: a streaming fake played by both runners, through a wrapper, and written to
result.json and read back.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic_results import run_json, synthetic_records

from loadtest.core.records import COLUMNS, NO_COUNT, NOT_SET_NS, Records
from loadtest.core.schedule import Schedule
from loadtest.engine.runner import ClosedLoopRunner, Runner
from loadtest.report.resultfile import ResultFile, load_result
from loadtest.rules.stats import decode_histograms
from loadtest.scenarios.experiments.mix_play import entry_records
from loadtest.shards.merge import merge_records
from loadtest.targets.fake import FakeTarget, ServiceLaw, fake_from_url
from loadtest.targets.wrapper import TargetWrapper

MS = 1_000_000
PARTS = ("first_part_ns", "parts", "final_count")


def _filled(n: int, seed: int, kinds: list[str]) -> Records:
    """Records whose every column holds distinct, seeded values (error codes valid for kinds)."""
    rng = np.random.default_rng(seed)
    records = Records(np.sort(rng.integers(0, 10**9, n)), rng.integers(0, 64, n))
    for col in COLUMNS:
        if col.name not in ("scheduled_ns", "sample_index", "error_code"):
            setattr(records, col.name, rng.integers(0, 100, n).astype(col.dtype))
    records.error_kinds = list(kinds)
    records.error_code[:] = rng.integers(-1, len(kinds), n)
    return records


def test_every_column_is_a_field_with_its_dtype_and_fill():
    names = [col.name for col in COLUMNS]
    assert names[:6] == [
        "scheduled_ns",
        "sample_index",
        "issued_ns",
        "completed_ns",
        "status",
        "error_code",
    ]
    assert set(PARTS) <= set(names)
    records = Records(np.arange(3), np.zeros(3))
    for col in COLUMNS:
        values = getattr(records, col.name)
        assert values.dtype == col.dtype and len(values) == 3, col.name
        if col.name not in ("scheduled_ns", "sample_index"):
            assert (values == col.fill).all(), col.name
    assert records.final_count.tolist() == [NO_COUNT] * 3
    assert records.first_part_ns.tolist() == [NOT_SET_NS] * 3


def test_take_copies_every_column_of_the_rows():
    records = _filled(50, 1, ["timeout"])
    mask = records.scheduled_ns % 2 == 0
    for rows in (mask, np.flatnonzero(mask), slice(5, 20)):
        part = records.take(rows)
        for col in COLUMNS:
            assert np.array_equal(getattr(part, col.name), getattr(records, col.name)[rows])
        assert part.error_kinds == records.error_kinds
        part.issued_ns[:] = 7  # a copy: the original is untouched
        assert not (records.issued_ns == 7).all()


def test_concatenate_carries_every_column_and_renumbers_error_kinds():
    a = _filled(30, 2, ["timeout", "http 500"])
    b = _filled(20, 3, ["http 500", "reset"])
    joined = Records.concatenate([a, b])
    assert joined.error_kinds == ["timeout", "http 500", "reset"]
    for col in COLUMNS:
        if col.name != "error_code":
            expected = np.concatenate([getattr(a, col.name), getattr(b, col.name)])
            assert np.array_equal(getattr(joined, col.name), expected), col.name
    kinds = [joined.error_kinds[c] if c >= 0 else None for c in joined.error_code]
    own = [r.error_kinds[c] if c >= 0 else None for r in (a, b) for c in r.error_code]
    assert kinds == own
    assert len(Records.concatenate([])) == 0


def test_merge_keeps_each_row_whole_in_due_time_order():
    a, b = _filled(40, 4, ["x"]), _filled(40, 5, ["y"])
    merged = merge_records([a, b])
    assert (np.diff(merged.scheduled_ns) >= 0).all()
    rows = {
        tuple(int(getattr(r, c.name)[i]) for c in COLUMNS if c.name != "error_code")
        for r in (a, b)
        for i in range(len(r))
    }
    merged_rows = {
        tuple(int(getattr(merged, c.name)[i]) for c in COLUMNS if c.name != "error_code")
        for i in range(len(merged))
    }
    assert merged_rows == rows


def test_a_mix_cut_keeps_every_column_of_its_entry_with_local_sample_indices():
    records = _filled(60, 8, ["x"])
    records.sample_index[:] = np.arange(60) % 12  # entry 0: samples 0-4, entry 1: 5-11
    part = entry_records(records, records.sample_index >= 5, 5)
    mask = records.sample_index >= 5
    assert part.sample_index.tolist() == (records.sample_index[mask] - 5).tolist()
    for col in COLUMNS:
        if col.name != "sample_index":
            assert np.array_equal(getattr(part, col.name), getattr(records, col.name)[mask])


def test_extended_adds_unwritten_rows():
    records = _filled(5, 6, ["x"])
    longer = records.extended(np.array([9, 8], np.int64))
    assert len(longer) == 7 and longer.sample_index[5:].tolist() == [9, 8]
    for col in COLUMNS:
        head = getattr(longer, col.name)[:5]
        assert np.array_equal(head, getattr(records, col.name)), col.name
        if col.name not in ("scheduled_ns", "sample_index"):
            assert (getattr(longer, col.name)[5:] == col.fill).all(), col.name


def test_json_columns_round_trip_every_column():
    records = _filled(25, 7, ["timeout"])
    columns = json.loads(json.dumps(records.to_columns()))
    back = Records.from_columns(columns, records.error_kinds)
    for col in COLUMNS:
        assert np.array_equal(getattr(back, col.name), getattr(records, col.name)), col.name


def test_unused_optional_columns_are_left_out_and_older_files_still_load():
    records = synthetic_records(n=100, errors=2)
    columns = records.to_columns()
    assert not set(PARTS) & set(columns)  # a run without parts writes what it always wrote
    back = Records.from_columns(columns, records.error_kinds)
    assert back.parts.tolist() == [0] * 100 and back.final_count.tolist() == [NO_COUNT] * 100
    assert np.array_equal(back.completed_ns, records.completed_ns)
    with pytest.raises(KeyError):
        Records.from_columns({k: v for k, v in columns.items() if k != "status"}, [])
    with pytest.raises(ValueError, match="parts holds 3 rows"):
        Records.from_columns({**columns, "parts": [1, 2, 3]}, records.error_kinds)


def test_an_older_result_file_reads_with_part_columns_at_their_fill(tmp_path: Path):
    path = tmp_path / "old" / "result.json"
    path.parent.mkdir()
    data = run_json(synthetic_records(n=200))
    assert "parts" not in data["records"]["columns"]
    path.write_text(json.dumps(data))
    records = load_result(path).records()
    assert records is not None and len(records) == 200
    assert (records.first_part_ns == NOT_SET_NS).all() and (records.parts == 0).all()


def _schedule(n: int, gap_ms: float) -> Schedule:
    return Schedule((np.arange(n) * gap_ms * MS).astype(np.int64), np.zeros(n, np.int32))


async def _open(target):
    await target.open()
    await target.prepare([{"INPUT0": np.zeros((1, 4), np.float32)}])
    return target


def _check_parts(records: Records, parts: int, count: int) -> None:
    ok = records.ok
    assert ok.all()
    assert (records.parts[ok] == parts).all()
    assert (records.final_count[ok] == count).all()
    first = records.first_part_ns[ok]
    assert (records.issued_ns[ok] < first).all() and (first <= records.completed_ns[ok]).all()
    # the parts after the first take ≥ (parts − 1) gaps of 1 ms
    assert ((records.completed_ns[ok] - first) >= (parts - 1) * MS).all()


@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "wrapped"])
def test_the_open_loop_runner_records_answers_in_parts(wrapped):
    fake = fake_from_url("fake://?servers=16&law=constant&service_ms=2&parts=4&part_ms=1")
    assert fake.capabilities.streams_parts
    target = TargetWrapper(fake) if wrapped else fake

    async def play():
        return await Runner(_schedule(40, 2), await _open(target)).run(handle_sigint=False)

    outcome = asyncio.run(play())
    _check_parts(outcome.records, 4, 4)
    gaps = decode_histograms([outcome.part_gaps])
    assert gaps.get_total_count() == 3 * 40  # parts − 1 gaps per answer
    assert gaps.get_min_value() >= 0.9 * MS


def test_a_final_event_without_a_count_and_a_timeout_mid_answer():
    url = "fake://?servers=16&law=constant&service_ms=1&parts=3&part_ms=1&counted=0"

    async def play(url, timeout_s=0.0):
        target = await _open(fake_from_url(url, timeout_s))
        return await Runner(_schedule(10, 2), target).run(handle_sigint=False)

    _check_parts(asyncio.run(play(url)).records, 3, NO_COUNT)
    slow = "fake://?servers=16&law=constant&service_ms=1&parts=10&part_ms=20"
    cut = asyncio.run(play(slow, timeout_s=0.05)).records
    assert cut.errored.all() and cut.error_kinds == ["timeout"]
    assert ((cut.parts >= 1) & (cut.parts < 10)).all()  # the parts before the deadline count
    assert (cut.first_part_ns != NOT_SET_NS).all() and (cut.final_count == NO_COUNT).all()


@pytest.mark.parametrize("stream", [False, True], ids=["offline", "stream"])
def test_the_closed_loop_runner_records_answers_in_parts_as_it_grows(stream):
    fake = FakeTarget(ServiceLaw("constant", MS), servers=4, parts=3, part_gap_ns=MS)

    async def play():
        runner = ClosedLoopRunner(
            np.zeros(4, np.int32),
            await _open(TargetWrapper(fake)),
            workers=2,
            all_due_at_start=not stream,
            more_samples=(lambda n: np.zeros(n, np.int32)) if stream else None,
            min_query_count=1500 if stream else 0,
        )
        return await runner.run(handle_sigint=False)

    outcome = asyncio.run(play())
    records = outcome.records
    assert len(records) == (1500 if stream else 4)  # a stream grew its rows past 1024
    _check_parts(records, 3, 3)
    assert decode_histograms([outcome.part_gaps]).get_total_count() == 2 * len(records)


def test_a_streamed_run_survives_result_json(tmp_path: Path):
    out = tmp_path / "run"
    url = "fake://?servers=16&law=constant&service_ms=2&parts=5&part_ms=1"
    args = ["server", "--url", url, "--qps", "100", "--duration", "1", "--target-latency", "500"]
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.cli", *args, "--records", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode in (0, 3, 5), result.stderr
    data = json.loads((out / "result.json").read_text())
    assert set(PARTS) <= set(data["records"]["columns"])
    records = ResultFile("run", "run", data).records()
    assert records is not None and records.ok.sum() > 50
    _check_parts(records.take(records.ok), 5, 5)
    hdr = data["client"]["hdr"]
    assert decode_histograms([hdr["part_gap"]]).get_total_count() == 4 * int(records.ok.sum())
    first = decode_histograms([hdr["first_part_from_scheduled"]])
    assert first.get_total_count() == int(records.ok.sum())
