"""stats.py on hand-made records whose answers are worked out by hand in the comments."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from loadtest.core.records import Records, Status
from loadtest.rules.stats import (
    HDR_HIGHEST_NS,
    PERCENTILE_METHOD,
    LatencyCounts,
    count_out_of_range,
    decode_histograms,
    encode_histogram,
    exact_percentile,
    latency_histogram,
    latency_stats,
    new_latency_histogram,
    percentile_index,
    send_lag_stats,
    summarize,
    timeline,
)

MS = 1_000_000


def make_records(
    scheduled: list[int],
    issued: list[int],
    completed: list[int],
    status: list[Status],
    errors: dict[int, str] | None = None,
    samples_per_query: int = 1,
) -> Records:
    records = Records(
        scheduled_ns=np.asarray(scheduled, dtype=np.int64),
        sample_index=np.zeros(len(scheduled), dtype=np.int32),
        samples_per_query=samples_per_query,
    )
    records.issued_ns[:] = issued
    records.completed_ns[:] = completed
    records.status[:] = status
    for row, kind in (errors or {}).items():
        records.error_code[row] = records.error_code_for(kind)
    return records


OK, ERR, PEND = Status.OK, Status.ERROR, Status.PENDING

# Ten queries due 1 ms apart. Row 7 fails (timeout), row 8 is sent 0.5 ms late, row 9 is sent 2 ms
# late and never answered.
#   row   scheduled  issued  completed  status  latency from scheduled / from issue (ms)
#    0        0        0        5       OK       5 / 5
#    1        1        1        4       OK       3 / 3
#    2        2        2        9       OK       7 / 7
#    3        3        3        4       OK       1 / 1
#    4        4        4        6       OK       2 / 2
#    5        5        5       11       OK       6 / 6
#    6        6        6       10       OK       4 / 4
#    7        7        7        8       ERROR    -
#    8        8        8.5     16.5     OK       8.5 / 8
#    9        9       11        -       PENDING  -
SCHEDULED = [i * MS for i in range(10)]
ISSUED = [0, 1 * MS, 2 * MS, 3 * MS, 4 * MS, 5 * MS, 6 * MS, 7 * MS, 8_500_000, 11 * MS]
COMPLETED = [5 * MS, 4 * MS, 9 * MS, 4 * MS, 6 * MS, 11 * MS, 10 * MS, 8 * MS, 16_500_000, -1]
STATUS = [OK, OK, OK, OK, OK, OK, OK, ERR, OK, PEND]


@pytest.fixture
def records() -> Records:
    return make_records(SCHEDULED, ISSUED, COMPLETED, STATUS, errors={7: "timeout"})


# --- percentiles -------------------------------------------------------------------------------


def test_percentile_index_is_loadgen_floor_of_n_times_p() -> None:
    assert percentile_index(100, 0.99) == 99
    assert percentile_index(1000, 0.999) == 999
    assert percentile_index(10, 0.5) == 5
    assert percentile_index(8, 0.9) == 7  # floor(7.2)
    assert percentile_index(1, 0.999) == 0
    # double arithmetic exactly as LoadGen's size_t(n * p): 100 * 0.29 = 28.999999999999996
    assert percentile_index(100, 0.29) == 28
    with pytest.raises(ValueError):
        percentile_index(10, 1.0)
    with pytest.raises(ValueError):
        percentile_index(0, 0.5)


def test_latency_stats_exact_on_a_shuffled_range() -> None:
    values = np.random.default_rng(1).permutation(np.arange(1, 1001, dtype=np.int64))
    stats = latency_stats(values)
    # sorted[i] = i + 1; index = floor(1000 p)
    assert (stats.p50_ns, stats.p90_ns, stats.p95_ns) == (501, 901, 951)
    assert (stats.p97_ns, stats.p99_ns, stats.p999_ns) == (971, 991, 1000)
    assert (stats.count, stats.min_ns, stats.max_ns) == (1000, 1, 1000)
    assert stats.mean_ns == 500  # 500.5 truncated, like LoadGen's integer mean
    assert stats.method == PERCENTILE_METHOD
    assert list(stats.percentiles()) == [0.5, 0.9, 0.95, 0.97, 0.99, 0.999]
    assert values[0] != 1  # the input was not sorted in place


def test_latency_stats_empty_is_all_zero() -> None:
    stats = latency_stats(np.array([], dtype=np.int64))
    assert stats.count == 0 and stats.p99_ns == 0 and stats.max_ns == 0


def test_exact_percentile_reads_the_sorted_array() -> None:
    assert exact_percentile(np.array([10, 20, 30, 40]), 0.5) == 30  # floor(2.0) = 2
    assert exact_percentile(np.array([10, 20, 30, 40]), 0.74) == 30  # floor(2.96) = 2


# --- summary -----------------------------------------------------------------------------------


def test_counts(records: Records) -> None:
    s = summarize(records)
    assert (s.scheduled, s.issued, s.completed_ok, s.errors, s.pending) == (10, 10, 8, 1, 1)
    assert s.not_issued == 0
    assert s.samples_per_query == 1


def test_latency_from_scheduled_and_from_issue(records: Records) -> None:
    s = summarize(records)
    # from scheduled, sorted: 1 2 3 4 5 6 7 8.5 ms (n = 8)
    assert s.latency.count == 8
    assert s.latency.min_ns == 1 * MS and s.latency.max_ns == 8_500_000
    assert s.latency.p50_ns == 5 * MS  # index 4
    assert s.latency.p90_ns == 8_500_000  # index floor(7.2) = 7
    assert s.latency.p99_ns == 8_500_000
    assert s.latency.mean_ns == 4_562_500  # 36.5 ms / 8
    # from issue, row 8 is 8 ms instead of 8.5: a CO-prone tool would see less
    assert s.latency_from_issue.p90_ns == 8 * MS
    assert s.latency_from_issue.mean_ns == 4_500_000


def test_send_lag_and_client_flag(records: Records) -> None:
    s = summarize(records)
    lag = s.send_lag
    # lags: eight 0s, 0.5 ms, 2 ms (n = 10)
    assert (lag.count, lag.p50_ns, lag.max_ns) == (10, 0, 2 * MS)
    assert (lag.p99_ns, lag.p999_ns) == (2 * MS, 2 * MS)  # index floor(9.9) = 9: the 2 ms
    assert lag.late_count == 1 and lag.late_share == pytest.approx(0.1)
    assert not s.client_kept_up
    relaxed = summarize(records, late_threshold_ns=3 * MS)
    assert relaxed.send_lag.late_count == 0 and relaxed.client_kept_up


def test_client_kept_up_both_ways() -> None:
    # 200 queries, one 5 ms late: share 0.5 %, p99 (index 198) is 0 -> kept up
    lags = np.zeros(200, dtype=np.int64)
    lags[-1] = 5 * MS
    assert send_lag_stats(lags, 200).kept_up
    # 100 queries, one late: share exactly 1 % is allowed, but p99 (index 99) is the late one
    lags = np.zeros(100, dtype=np.int64)
    lags[-1] = 5 * MS
    stats = send_lag_stats(lags, 100)
    assert stats.late_share == pytest.approx(0.01) and stats.p99_ns == 5 * MS
    assert not stats.kept_up
    # exactly at the threshold is not late
    assert send_lag_stats(np.full(10, 1 * MS), 10).kept_up
    # nothing issued out of something scheduled: fell behind completely
    assert not send_lag_stats(np.array([], dtype=np.int64), 5).kept_up
    assert send_lag_stats(np.array([], dtype=np.int64), 0).kept_up


def test_throughput_arithmetic(records: Records) -> None:
    s = summarize(records)
    # 10 due times over 9 ms: 9 gaps / 9 ms = 1000 QPS
    assert s.scheduled_qps == pytest.approx(1000.0)
    # (8 ok − 1) / (16.5 ms − 0)
    assert s.completed_qps == pytest.approx(7 / 0.0165)
    assert s.throughput_samples_per_s == pytest.approx(8 / 0.0165)
    assert s.scheduled_samples_per_s == s.scheduled_qps
    assert (s.first_scheduled_ns, s.final_scheduled_ns) == (0, 9 * MS)
    assert (s.final_issued_ns, s.final_completed_ns, s.final_ok_completed_ns) == (
        11 * MS,
        16_500_000,
        16_500_000,
    )
    assert s.duration_ns == 16_500_000  # default: last issue or completion
    assert summarize(records, duration_ns=20 * MS).duration_ns == 20 * MS


def test_samples_per_query_scales_sample_rates() -> None:
    r = make_records([0, 10 * MS], [0, 10 * MS], [5 * MS, 20 * MS], [OK, OK], samples_per_query=8)
    s = summarize(r)
    assert s.scheduled_qps == pytest.approx(100.0)  # 1 gap / 10 ms
    assert s.scheduled_samples_per_s == pytest.approx(800.0)
    assert s.completed_qps == pytest.approx(50.0)  # 1 / 20 ms
    assert s.completed_samples_per_s == pytest.approx(400.0)
    assert s.throughput_samples_per_s == pytest.approx(16 / 0.020)


def test_throughput_guards_zero_division() -> None:
    one = summarize(make_records([0], [0], [0], [OK]))
    assert one.scheduled_qps == 0.0 and one.completed_qps == 0.0
    assert one.throughput_samples_per_s == 0.0
    # a single query with a measured duration: scheduled / duration
    single = summarize(make_records([0], [0], [2 * MS], [OK]), duration_ns=1000 * MS)
    assert single.scheduled_qps == pytest.approx(1.0)
    empty = summarize(make_records([], [], [], []))
    assert (empty.scheduled, empty.completed_ok, empty.scheduled_qps) == (0, 0, 0.0)
    assert empty.latency.count == 0 and empty.client_kept_up
    assert empty.errors_by_kind == {}


def test_pending_includes_never_issued() -> None:
    r = make_records([0, MS, 2 * MS], [0, MS, -1], [MS, -1, -1], [OK, PEND, PEND])
    s = summarize(r)
    assert (s.issued, s.pending, s.not_issued) == (2, 2, 1)
    assert s.final_scheduled_ns == MS  # the last *issued* query's due time


def test_errors_by_kind_sorted_by_count() -> None:
    r = make_records(
        [0, 1, 2, 3, 4],
        [0, 1, 2, 3, 4],
        [5, 6, 7, 8, 9],
        [ERR, ERR, ERR, OK, ERR],
        errors={0: "unavailable", 1: "timeout", 2: "timeout"},
    )
    s = summarize(r)
    # row 4 failed without an error kind -> "unknown"
    assert s.errors_by_kind == {"timeout": 2, "unavailable": 1, "unknown": 1}
    assert list(s.errors_by_kind) == ["timeout", "unavailable", "unknown"]


def test_to_dict_is_json(records: Records) -> None:
    d = summarize(records).to_dict()
    text = json.dumps(d)
    assert d["client_kept_up"] is False
    assert d["latency"]["p99_ns"] == 8_500_000
    assert d["errors_by_kind"] == {"timeout": 1}
    assert isinstance(d["latency_hdr"], str)
    assert "NaN" not in text


# --- HDR histograms ----------------------------------------------------------------------------


def test_vectorised_recording_equals_recording_each_value() -> None:
    rng = np.random.default_rng(7)
    values = np.concatenate(
        [
            rng.lognormal(16, 2, 20_000).astype(np.int64),
            np.arange(0, 3000, dtype=np.int64),
            (2 ** np.arange(1, 35)).astype(np.int64),
        ]
    )
    values = values[values <= HDR_HIGHEST_NS]
    reference = new_latency_histogram()
    for v in values.tolist():
        assert reference.record_value(v)
    fast = latency_histogram(values)
    assert list(fast.counts) == list(reference.counts)
    assert fast.get_total_count() == reference.get_total_count() == len(values)
    assert fast.get_min_value() == reference.get_min_value()
    assert fast.get_max_value() == reference.get_max_value()


def test_hdr_merge_of_shards_is_exact() -> None:
    rng = np.random.default_rng(3)
    values = rng.lognormal(15, 1.5, 50_000).astype(np.int64)
    whole = latency_histogram(values)
    shards = [encode_histogram(latency_histogram(part)) for part in np.array_split(values, 3)]
    merged = decode_histograms(shards)
    assert merged.get_total_count() == whole.get_total_count() == len(values)
    assert list(merged.counts) == list(whole.counts)
    for p in (50, 90, 99, 99.9, 99.99, 100):
        assert merged.get_value_at_percentile(p) == whole.get_value_at_percentile(p)
    assert merged.get_max_value() == whole.get_max_value()
    # HDR is within 0.1 % of the exact value (3 significant figures)
    exact = latency_stats(values).p99_ns
    assert merged.get_value_at_percentile(99) == pytest.approx(exact, rel=2e-3)


def test_out_of_range_values_are_clamped_and_counted() -> None:
    values = np.array([-5, 0, 500, 60_000_000_000, 61_000_000_000, 70_000_000_000])
    assert count_out_of_range(values) == 3
    histogram = latency_histogram(values)
    assert histogram.get_total_count() == 6  # nothing dropped: ranks stay right
    assert histogram.get_max_value() == pytest.approx(HDR_HIGHEST_NS, rel=1e-3)
    assert histogram.get_value_at_percentile(100) == histogram.get_max_value()


def test_summary_carries_a_decodable_histogram(records: Records) -> None:
    s = summarize(records)
    assert s.latency_hdr is not None
    decoded = decode_histograms([s.latency_hdr])
    assert decoded.get_total_count() == s.completed_ok == 8
    assert s.latency_hdr_out_of_range == 0
    assert summarize(records, histogram=False).latency_hdr is None


# --- timeline ----------------------------------------------------------------------------------


def test_timeline_buckets(records: Records) -> None:
    tl = timeline(records, bucket_ns=5 * MS)
    # events reach 16.5 ms: buckets [0,5) [5,10) [10,15) [15,20) ms
    assert len(tl) == 4
    assert tl.start_ns.tolist() == [0, 5 * MS, 10 * MS, 15 * MS]
    assert tl.scheduled.tolist() == [5, 5, 0, 0]
    assert tl.issued.tolist() == [5, 4, 1, 0]  # rows 5..8 (8 sent at 8.5), row 9 at 11
    assert tl.completed.tolist() == [2, 3, 2, 1]  # ok completions at 4,4 | 5,6,9 | 10,11 | 16.5
    assert tl.errors.tolist() == [0, 1, 0, 0]  # row 7 failed at 8 ms
    # p99 of latencies completing in each bucket: [1,3] -> 3; [2,5,7] -> 7; [4,6] -> 6; [8.5]
    assert tl.p99_latency_ns.tolist() == [3 * MS, 7 * MS, 6 * MS, 8_500_000]
    lag = tl.max_send_lag_ns
    assert lag[:3].tolist() == [0.0, 500_000.0, 2 * MS] and math.isnan(lag[3])
    # in flight at 5 ms: 5 sent, 2 done; 10 ms: 9 sent, 6 done; 15 ms: 10 / 8; 20 ms: 10 / 9
    assert tl.in_flight.tolist() == [3, 3, 2, 1]
    d = tl.to_dict()
    assert d["max_send_lag_ns"][3] is None
    json.dumps(d)


def test_timeline_nan_where_no_completion() -> None:
    r = make_records([0, 3 * MS], [0, 3 * MS], [MS, 3_500_000], [OK, OK])
    tl = timeline(r, bucket_ns=MS)
    assert tl.completed.tolist() == [0, 1, 0, 1]
    assert math.isnan(tl.p99_latency_ns[0]) and math.isnan(tl.p99_latency_ns[2])
    assert tl.p99_latency_ns[3] == 500_000
    assert len(timeline(make_records([], [], [], []))) == 0


def test_latency_counts_in_batches_equal_one_histogram_of_every_value() -> None:
    """The parts log's gap counts: batches, zeros counted apart and values out of range give
    bucket for bucket what latency_histogram of all the values gives."""
    rng = np.random.default_rng(5)
    values = rng.integers(-10, HDR_HIGHEST_NS + 10**9, 10_000)
    values[:50] = 0
    values[50:60] = rng.integers(0, 1000, 10)  # below the 1 µs floor
    counts = LatencyCounts()
    for start in range(0, len(values), 4096):
        counts.add(values[start : start + 4096])
    counts.add_zeros(17)
    counts.add(np.empty(0, dtype=np.int64))
    every = latency_histogram(np.concatenate([values, np.zeros(17, dtype=np.int64)]))
    assert encode_histogram(counts.histogram()) == encode_histogram(every)
    assert counts.histogram().get_total_count() == len(values) + 17
