"""Records -> Summary: counts, exact latency percentiles, send lag, throughput, errors; pure.

Why exact: the raw per-query arrays are all in memory, so every percentile in a Summary is read
straight off the sorted array with LoadGen's rule, `sorted[floor(n·p)]` (results.cc:
`sample_latencies[sample_count * percentile]`, a double truncated to an index). No interpolation, no
histogram rounding: the numbers match what LoadGen would print for the same latencies. The HDR
histogram (1 µs–60 s, 3 significant figures) is only carried along so results from several client
processes can be merged exactly later (never average percentiles).

Two latency origins are summarised. Latency from the *scheduled* time is the MLPerf Server
definition: any lag of the client, its event loop or the server is charged to the query, so the
numbers are free of coordinated omission. Latency from the *actual send* is what perf_analyzer and
most tools report; it is kept so a report can show how much a coordinated-omission tool would hide.

The send lag (actual send − scheduled time) tells whether the load generator kept up with its own
schedule. If it did not, the latencies measure the client's queue as much as the server; validity.py
turns `client_kept_up` into an INVALID ("client-bound") verdict. How much lag is allowed depends on
the latency bound (allowed_send_lag_ns).

Failed and unanswered queries have no latency in the percentile tables, which describe successes
only; the Summary says how many it leaves out (left_out_of_latency), how long failures took to fail
(failure_latency) and when the first one happened (first_failure_ns). The verdict (validity.py)
counts them as over the bound.

Pure: no clock, no I/O. Times are integer nanoseconds from the run's start.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

from loadtest.core.records import NOT_SET_NS, Records
from loadtest.core.settings import DEFAULT_CLIENT_LAG_FRACTION
from loadtest.core.units import LATE_THRESHOLD_NS, NS_PER_S, NS_PER_US

PERCENTILE_METHOD = "exact, sorted[floor(n·p)] (LoadGen)"
# The percentiles LoadGen prints in mlperf_log_summary.txt (as doubles, exactly as it uses them).
LOADGEN_PERCENTILES = (0.5, 0.9, 0.95, 0.97, 0.99, 0.999)

# The generator "kept up" when its send-lag p99 is within the threshold and at most this share of
# queries was late. 1 % is perf_analyzer's warning level for delayed requests.
MAX_LATE_SHARE = 0.01

# HDR histogram range, in ns: 1 µs to 60 s at 3 significant figures (≈ 0.1 % value resolution).
HDR_LOWEST_NS = 1 * NS_PER_US
HDR_HIGHEST_NS = 60 * NS_PER_S
HDR_SIGNIFICANT_FIGURES = 3


# --- exact percentiles -------------------------------------------------------------------------


def percentile_index(count: int, percentile: float) -> int:
    """LoadGen's index for a percentile of `count` sorted values: floor(count·p), at most count − 1.

    The product is taken in double precision exactly as LoadGen does (`size_t(n * p)`), so e.g.
    n = 100, p = 0.29 gives 28 (100·0.29 = 28.999…), the same as LoadGen.
    """
    if count <= 0:
        raise ValueError("no values")
    if not 0.0 <= percentile < 1.0:
        raise ValueError(f"percentile must be in [0, 1), got {percentile}")
    return min(count - 1, int(count * percentile))


def exact_percentile(sorted_ns: np.ndarray, percentile: float) -> int:
    """The value at LoadGen's percentile index of an ascending array."""
    return int(sorted_ns[percentile_index(len(sorted_ns), percentile)])


def exact_percentile_with_failures(
    sorted_ns: np.ndarray, failed: int, percentile: float
) -> int | None:
    """LoadGen's percentile over len(sorted_ns) + failed queries, the failed ones placed at +∞.

    None means +∞: the percentile's rank falls among the failed queries. With failed = 0 this is
    exact_percentile. A failed or unanswered query certainly missed any latency bound, so this is
    the honest percentile of everything issued; raises ValueError when there is nothing at all.
    """
    if failed < 0:
        raise ValueError("failed must be ≥ 0")
    index = percentile_index(len(sorted_ns) + failed, percentile)
    return int(sorted_ns[index]) if index < len(sorted_ns) else None


def _truncated_mean(values: np.ndarray) -> int:
    """Integer mean truncated toward zero, as LoadGen's `accumulated / count` on int64 latencies."""
    total = int(values.sum(dtype=np.int64))
    count = len(values)
    return total // count if total >= 0 else -((-total) // count)


@dataclass(frozen=True)
class LatencyStats:
    """Latency distribution in ns. All values are 0 when count == 0 (as LoadGen prints them).

    mean_ns is truncated to an integer like LoadGen's; the percentiles use `method`.
    """

    count: int
    min_ns: int
    mean_ns: int
    max_ns: int
    p50_ns: int
    p90_ns: int
    p95_ns: int
    p97_ns: int
    p99_ns: int
    p999_ns: int
    method: str = PERCENTILE_METHOD

    def percentiles(self) -> dict[float, int]:
        """{0.5: p50_ns, …, 0.999: p999_ns}, in LoadGen's order."""
        values = (self.p50_ns, self.p90_ns, self.p95_ns, self.p97_ns, self.p99_ns, self.p999_ns)
        return dict(zip(LOADGEN_PERCENTILES, values, strict=True))


def latency_stats(values_ns: np.ndarray) -> LatencyStats:
    """Exact stats of any latency array (order does not matter; the input is not modified)."""
    values = np.sort(np.asarray(values_ns, dtype=np.int64))
    n = len(values)
    if n == 0:
        return LatencyStats(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    p50, p90, p95, p97, p99, p999 = (exact_percentile(values, p) for p in LOADGEN_PERCENTILES)
    return LatencyStats(
        count=n,
        min_ns=int(values[0]),
        mean_ns=_truncated_mean(values),
        max_ns=int(values[-1]),
        p50_ns=p50,
        p90_ns=p90,
        p95_ns=p95,
        p97_ns=p97,
        p99_ns=p99,
        p999_ns=p999,
    )


# --- send lag ----------------------------------------------------------------------------------


def allowed_send_lag_ns(
    late_threshold_ns: int,
    bound_ns: int = 0,
    fraction: float = DEFAULT_CLIENT_LAG_FRACTION,
) -> int:
    """The send lag a client may show and still count as keeping up with its schedule:
    max(late_threshold_ns, fraction × bound_ns); just late_threshold_ns without a bound (0).

    Why relative to the bound. Latency is measured from the *scheduled* time, so the send lag is
    part of every latency: lag can only make the measured latencies worse, never better. A VALID
    verdict (measured percentile ≤ bound) therefore stays true, conservatively, whatever the lag:
    the server's own percentile is lower still. What lag can do is push a server that meets the
    bound over it (a false INVALID) and thin or bunch the arrivals the server sees. Lag of at most
    fraction × bound can shift the measured percentile by at most that much, upward. So the lag
    that matters is lag that is large *against the bound*, not lag above a fixed 1 ms.

    Why 5 %. It is small against the bound (a server at 95 % of its bound can still pass) and it
    keeps today's rule where the rule is already about right: at MLPerf's 15 ms ResNet bound
    5 % is 0.75 ms, under the 1 ms floor, so the allowance stays 1 ms; at BERT's 130 ms it is
    6.5 ms; at a 1 s bound, 50 ms, where a 1 ms rule would call a run client-bound over lag far
    below anything that could change its verdict. The floor keeps the allowance from shrinking
    below what an asyncio client resolves (timer slack alone is up to ~1–2 ms).

    The share of late queries (≤ 1 %, MAX_LATE_SHARE) is counted against the same allowance: a
    stricter threshold there (1 ms at a 1 s bound) would bring the absolute rule back by the back
    door, failing runs over lag that cannot move their verdict. With one threshold the two
    conditions say the same thing two ways: the p99 of the lag reads a rank, the share counts
    exactly, so no more than 1 % of the queries carry more lag than the allowance.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    return (
        max(int(late_threshold_ns), int(fraction * bound_ns)) if bound_ns > 0 else late_threshold_ns
    )


@dataclass(frozen=True)
class SendLagStats:
    """How far behind its schedule the client sent (actual send − scheduled time, ns).

    `kept_up` is the "generator fell behind" flag: p99_ns ≤ allowed_lag_ns and over_allowed_share
    ≤ 1 % (MAX_LATE_SHARE), where over_allowed_share = queries issued more than allowed_lag_ns after
    their scheduled time / queries issued. allowed_lag_ns = allowed_send_lag_ns(late_threshold_ns,
    bound_ns, lag_fraction): the late threshold itself when there is no bound (bound_ns = 0).
    late_count / late_share count against late_threshold_ns, for display. An empty run (nothing
    scheduled) counts as kept up; a run that scheduled queries but issued none does not.
    """

    count: int
    p50_ns: int
    p99_ns: int
    p999_ns: int
    max_ns: int
    late_threshold_ns: int
    late_count: int
    late_share: float
    kept_up: bool
    method: str = PERCENTILE_METHOD
    allowed_lag_ns: int = LATE_THRESHOLD_NS  # what kept_up compares against
    over_allowed_count: int = 0
    over_allowed_share: float = 0.0
    bound_ns: int = 0  # the latency bound the allowance was taken from; 0 = none
    lag_fraction: float = DEFAULT_CLIENT_LAG_FRACTION


def send_lag_stats(
    lag_ns: np.ndarray,
    scheduled: int,
    late_threshold_ns: int = LATE_THRESHOLD_NS,
    bound_ns: int = 0,
    lag_fraction: float = DEFAULT_CLIENT_LAG_FRACTION,
) -> SendLagStats:
    """Stats of the send lags of the issued queries, out of `scheduled` queries in all.

    `bound_ns` (the latency bound; 0 = none) and `lag_fraction` set the allowed lag (see
    allowed_send_lag_ns); without a bound the rule is the absolute one, lag ≤ late_threshold_ns.
    """
    allowed = allowed_send_lag_ns(late_threshold_ns, bound_ns, lag_fraction)
    lag = np.sort(np.asarray(lag_ns, dtype=np.int64))
    n = len(lag)
    if n == 0:
        return SendLagStats(
            0,
            0,
            0,
            0,
            0,
            late_threshold_ns,
            0,
            0.0,
            kept_up=scheduled == 0,
            allowed_lag_ns=allowed,
            bound_ns=bound_ns,
            lag_fraction=lag_fraction,
        )
    p50, p99, p999 = (exact_percentile(lag, p) for p in (0.5, 0.99, 0.999))
    late = int(n - np.searchsorted(lag, late_threshold_ns, side="right"))
    over = int(n - np.searchsorted(lag, allowed, side="right"))
    return SendLagStats(
        count=n,
        p50_ns=p50,
        p99_ns=p99,
        p999_ns=p999,
        max_ns=int(lag[-1]),
        late_threshold_ns=late_threshold_ns,
        late_count=late,
        late_share=late / n,
        kept_up=p99 <= allowed and over / n <= MAX_LATE_SHARE,
        allowed_lag_ns=allowed,
        over_allowed_count=over,
        over_allowed_share=over / n,
        bound_ns=bound_ns,
        lag_fraction=lag_fraction,
    )


# --- HDR histograms ----------------------------------------------------------------------------


def new_latency_histogram() -> HdrHistogram:
    """An empty histogram with the project's fixed range, so any two of them merge exactly."""
    return HdrHistogram(HDR_LOWEST_NS, HDR_HIGHEST_NS, HDR_SIGNIFICANT_FIGURES)


def count_out_of_range(values_ns: np.ndarray) -> int:
    """How many values fall outside [0, HDR_HIGHEST_NS] and get clamped by latency_histogram."""
    values = np.asarray(values_ns, dtype=np.int64)
    return int(np.count_nonzero((values < 0) | (values > HDR_HIGHEST_NS)))


def _counts_indices(histogram: HdrHistogram, values: np.ndarray) -> np.ndarray:
    """HdrHistogram's counts index for each value, vectorised (hdrh's `_counts_index_for`).

    bucket = bit_length(v | sub_bucket_mask) − unit_magnitude − (half_count_magnitude + 1);
    sub_bucket = v >> (bucket + unit_magnitude); index = (bucket + 1)·half_count + sub_bucket −
    half_count. bit_length is found exactly with a search over powers of two (no float log2).
    """
    unit = histogram.unit_magnitude
    half_mag = histogram.sub_bucket_half_count_magnitude
    powers = np.left_shift(np.int64(1), np.arange(63, dtype=np.int64))
    bit_length = np.searchsorted(powers, values | histogram.sub_bucket_mask, side="right")
    bucket = bit_length.astype(np.int64) - unit - (half_mag + 1)
    sub_bucket = np.right_shift(values, bucket + unit)
    return np.left_shift(bucket + 1, half_mag) + sub_bucket - histogram.sub_bucket_half_count


class LatencyCounts:
    """A latency histogram's counts as a numpy array (the project's fixed range), for adding
    values in bulk on the hot path: a batch costs one vectorised index and one bincount. Merging
    an HdrHistogram per batch instead walks every bucket (about 1 ms whatever the batch), a
    stall the issuer's sends feel. `histogram()` is exactly what recording every value, clamped
    to [0, 60 s], would give: each distinct bucket recorded once with its count."""

    def __init__(self) -> None:
        self._shape = new_latency_histogram()  # only its layout: the index arithmetic
        self.counts = np.zeros(self._shape.counts_len, dtype=np.int64)
        self._zero_index = int(_counts_indices(self._shape, np.zeros(1, dtype=np.int64))[0])

    def add(self, values_ns: np.ndarray) -> None:
        values = np.clip(np.asarray(values_ns, dtype=np.int64), 0, HDR_HIGHEST_NS)
        if len(values):
            indices = _counts_indices(self._shape, values)
            self.counts += np.bincount(indices, minlength=len(self.counts))

    def add_zeros(self, count: int) -> None:
        self.counts[self._zero_index] += count

    def histogram(self) -> HdrHistogram:
        histogram = new_latency_histogram()
        for index in np.flatnonzero(self.counts).tolist():
            histogram.record_value(histogram.get_value_from_index(index), int(self.counts[index]))
        return histogram


def latency_histogram(values_ns: np.ndarray) -> HdrHistogram:
    """An HDR histogram (ns, 1 µs–60 s, 3 significant figures) of the values.

    Values outside [0, 60 s] are clamped to the nearest edge rather than dropped, so counts and
    ranks stay right and a merged total equals the raw count; the top percentiles are then lower
    bounds. Count them with count_out_of_range (record_value would silently refuse them).
    Recording is vectorised: each distinct bucket is recorded once with its count, which is
    exactly what recording every value would give.
    """
    counts = LatencyCounts()
    counts.add(values_ns)
    return counts.histogram()


def encode_histogram(histogram: HdrHistogram) -> str:
    """The histogram as a compressed base64 string (HdrHistogram V2 'HISTF…' format)."""
    encoded: bytes = histogram.encode()
    return encoded.decode("ascii")


def decode_histograms(encoded: Iterable[str]) -> HdrHistogram:
    """Decode and add any number of encoded histograms into one: an exact merge of the shards."""
    merged = new_latency_histogram()
    for text in encoded:
        merged.decode_and_add(text)
    return merged


# --- the summary -------------------------------------------------------------------------------


def _rate(events: int, span_ns: int) -> float:
    return events * NS_PER_S / span_ns if span_ns > 0 and events > 0 else 0.0


@dataclass(frozen=True)
class Summary:
    """The interpreted result of one run's records (no verdict: that is validity.py's job).

    Counts: every scheduled query is exactly one of completed_ok, errors or pending (never
    completed; that includes the never issued, scheduled − issued). Of the pending, `unanswered`
    were issued and never answered, `not_issued` never left the client. The latency tables hold
    the completed_ok queries only; `left_out_of_latency` (= errors + pending) says how many they
    leave out, and `failure_latency` describes the failed ones (completion − scheduled time: the
    time it took to fail). first_failure_ns: the earliest failure (an error's completion, or an
    unanswered query's send, whichever is earlier); NOT_SET_NS (−1) when nothing failed.

    Times (ns from the run's start):
    - first_scheduled_ns: the earliest scheduled time;
    - final_scheduled_ns: the scheduled time of the last *issued* query (LoadGen's
      final_query_scheduled_time, which Server's min-duration rule reads);
    - final_issued_ns: the last actual send (LoadGen's final_query_issued_time, used by the
      SingleStream/MultiStream min-duration rule);
    - final_completed_ns: the last completion of any query, successful or not;
    - final_ok_completed_ns: the last successful completion;
    - duration_ns: the run's measured duration as given to summarize(), else the last issue or
      completion, whichever is later.

    Throughput (all guarded: 0.0 when the span or the count is zero):
    - scheduled_qps = (scheduled − 1) / (last scheduled − first scheduled): n due times span
      n − 1 gaps (LoadGen subtracts 1 for the same [begin, end) reason). With fewer than two
      distinct due times it falls back to scheduled / duration_ns.
    - completed_qps = (completed_ok − 1) / (final_ok_completed − first_scheduled): LoadGen's
      "Completed samples per second" (it divides by the last completion), with our origin at the
      first due time so that a perfect run gives completed_qps ≈ scheduled_qps.
    - throughput_samples_per_s = completed_ok · samples_per_query / (final_ok_completed −
      first_scheduled): the Offline "Samples per second" (samples / time to last completion).
    - *_samples_per_s = the matching QPS × samples_per_query.
    """

    scheduled: int
    issued: int
    completed_ok: int
    errors: int
    pending: int
    samples_per_query: int
    duration_ns: int
    first_scheduled_ns: int
    final_scheduled_ns: int
    final_issued_ns: int
    final_completed_ns: int
    final_ok_completed_ns: int
    latency: LatencyStats  # completion − scheduled time, successful queries (MLPerf Server)
    latency_from_issue: LatencyStats  # completion − actual send (what a CO-prone tool reports)
    send_lag: SendLagStats
    scheduled_qps: float
    completed_qps: float
    scheduled_samples_per_s: float
    completed_samples_per_s: float
    throughput_samples_per_s: float
    errors_by_kind: dict[str, int]
    latency_hdr: str | None = None  # encode_histogram of `latency`, for exact cross-process merges
    latency_hdr_out_of_range: int = 0  # values clamped into the HDR range
    # completion − scheduled time of the failed queries (time to error), apart from successes
    failure_latency: LatencyStats = dataclasses.field(
        default_factory=lambda: latency_stats(np.zeros(0, dtype=np.int64))
    )
    first_failure_ns: int = NOT_SET_NS

    @property
    def client_kept_up(self) -> bool:
        return self.send_lag.kept_up

    @property
    def not_issued(self) -> int:
        return self.scheduled - self.issued

    @property
    def unanswered(self) -> int:
        """Issued and never answered (pending minus never issued)."""
        return self.pending - self.not_issued

    @property
    def failed(self) -> int:
        """Issued queries that did not succeed: errors + unanswered."""
        return self.errors + self.unanswered

    @property
    def left_out_of_latency(self) -> int:
        """Scheduled queries the latency tables leave out: errors + pending."""
        return self.scheduled - self.completed_ok

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; times stay integer ns (the report layer converts for display)."""
        result = dataclasses.asdict(self)
        result["client_kept_up"] = self.client_kept_up
        result["not_issued"] = self.not_issued
        result["unanswered"] = self.unanswered
        result["failed"] = self.failed
        result["left_out_of_latency"] = self.left_out_of_latency
        return result


def _errors_by_kind(records: Records) -> dict[str, int]:
    codes = records.error_code[records.errored].astype(np.int64)
    counts: dict[str, int] = {}
    unknown = int(np.count_nonzero(codes < 0))
    if unknown:
        counts["unknown"] = unknown
    known = codes[codes >= 0]
    if len(known):
        for code, count in enumerate(np.bincount(known).tolist()):
            if count:
                kind = records.error_kinds[code] if code < len(records.error_kinds) else f"#{code}"
                counts[kind] = counts.get(kind, 0) + count
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _max_or(values: np.ndarray, default: int) -> int:
    return int(values.max()) if len(values) else default


def _min_or(values: np.ndarray, default: int) -> int:
    return int(values.min()) if len(values) else default


def first_failure_ns(records: Records) -> int:
    """When the first failure happened (ns from the run's start); NOT_SET_NS when none did.

    An error counts at its completion (when the answer said it failed); an issued query that was
    never answered counts at its send, the last moment it is known to have been fine.
    """
    errored = records.errored & (records.completed_ns != NOT_SET_NS)
    unanswered = records.pending & records.issued
    times = [
        _min_or(records.completed_ns[errored], NOT_SET_NS),
        _min_or(records.issued_ns[unanswered], NOT_SET_NS),
    ]
    known = [t for t in times if t != NOT_SET_NS]
    return min(known) if known else NOT_SET_NS


def summarize(
    records: Records,
    duration_ns: int | None = None,
    late_threshold_ns: int = LATE_THRESHOLD_NS,
    histogram: bool = True,
    bound_ns: int = 0,
    client_lag_fraction: float = DEFAULT_CLIENT_LAG_FRACTION,
) -> Summary:
    """Interpret a run's records. `duration_ns` is the run's measured duration (run start -> end).

    Set `histogram=False` to skip the HDR encoding (a few ms per million queries). `bound_ns`
    (the scenario's latency bound; 0 = none) and `client_lag_fraction` set the send lag the client
    may show and still keep up (allowed_send_lag_ns); without a bound it is late_threshold_ns.
    """
    n = len(records)
    ok, errored, pending, issued = records.ok, records.errored, records.pending, records.issued
    scheduled_ns = records.scheduled_ns
    completed_ns = records.completed_ns
    done = completed_ns != NOT_SET_NS

    latency = records.latency_from_scheduled_ns()
    first_scheduled = int(scheduled_ns.min()) if n else 0
    last_scheduled = _max_or(scheduled_ns, 0)
    final_issued = _max_or(records.issued_ns[issued], 0)
    final_completed = _max_or(completed_ns[done], 0)
    final_ok_completed = _max_or(completed_ns[ok], 0)
    measured = duration_ns if duration_ns is not None else max(final_issued, final_completed)

    completed_ok = int(ok.sum())
    spq = records.samples_per_query
    schedule_span = last_scheduled - first_scheduled
    scheduled_qps = (
        _rate(n - 1, schedule_span) if n >= 2 and schedule_span > 0 else _rate(n, measured)
    )
    to_last_ok = final_ok_completed - first_scheduled
    completed_qps = _rate(completed_ok - 1, to_last_ok)

    hdr = latency_histogram(latency) if histogram else None
    return Summary(
        scheduled=n,
        issued=int(issued.sum()),
        completed_ok=completed_ok,
        errors=int(errored.sum()),
        pending=int(pending.sum()),
        samples_per_query=spq,
        duration_ns=int(measured),
        first_scheduled_ns=first_scheduled,
        final_scheduled_ns=_max_or(scheduled_ns[issued], 0),
        final_issued_ns=final_issued,
        final_completed_ns=final_completed,
        final_ok_completed_ns=final_ok_completed,
        latency=latency_stats(latency),
        latency_from_issue=latency_stats(records.latency_from_issue_ns()),
        send_lag=send_lag_stats(
            records.send_lag_ns(), n, late_threshold_ns, bound_ns, client_lag_fraction
        ),
        scheduled_qps=scheduled_qps,
        completed_qps=completed_qps,
        scheduled_samples_per_s=scheduled_qps * spq,
        completed_samples_per_s=completed_qps * spq,
        throughput_samples_per_s=_rate(completed_ok * spq, to_last_ok),
        errors_by_kind=_errors_by_kind(records),
        latency_hdr=encode_histogram(hdr) if hdr is not None else None,
        latency_hdr_out_of_range=count_out_of_range(latency) if histogram else 0,
        failure_latency=latency_stats(
            records.completed_ns[errored & done] - scheduled_ns[errored & done]
        ),
        first_failure_ns=first_failure_ns(records),
    )


# --- per-second timeline -----------------------------------------------------------------------


@dataclass(frozen=True)
class Timeline:
    """Per-bucket series over [k·bucket_ns, (k+1)·bucket_ns), k = 0 … len − 1, for live/HTML views
    and result.json's `timeline` (every run, with or without --records).

    - scheduled / issued: queries due / actually sent in the bucket;
    - completed / errors: successful / failed completions in the bucket; errors_by_kind splits
      errors by kind (kinds without a failure left out);
    - p50_latency_ns / p99_latency_ns: exact percentiles (LoadGen rule) of the latency from
      scheduled time of the successful queries completing in the bucket; NaN where none completed;
    - p99_send_lag_ns / max_send_lag_ns: among the queries sent in the bucket; NaN where none;
    - in_flight: queries sent before the bucket's end and not completed by then.
    Events before t = 0 count in the first bucket.
    """

    bucket_ns: int
    start_ns: np.ndarray  # int64
    scheduled: np.ndarray  # int64
    issued: np.ndarray  # int64
    completed: np.ndarray  # int64
    errors: np.ndarray  # int64
    p99_latency_ns: np.ndarray  # float64, NaN = no completion
    max_send_lag_ns: np.ndarray  # float64, NaN = no send
    in_flight: np.ndarray  # int64
    p50_latency_ns: np.ndarray  # float64, NaN = no completion
    p99_send_lag_ns: np.ndarray  # float64, NaN = no send
    errors_by_kind: dict[str, np.ndarray]  # int64 each

    def __len__(self) -> int:
        return len(self.start_ns)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able columns, one list per field; nanoseconds as integers, NaN as None."""

        def ns(values: np.ndarray) -> list[int | None]:
            return [None if np.isnan(v) else round(v) for v in values.tolist()]

        return {
            "bucket_ns": self.bucket_ns,
            "start_ns": self.start_ns.tolist(),
            "scheduled": self.scheduled.tolist(),
            "issued": self.issued.tolist(),
            "completed": self.completed.tolist(),
            "errors": self.errors.tolist(),
            "errors_by_kind": {k: v.tolist() for k, v in self.errors_by_kind.items()},
            "p50_latency_ns": ns(self.p50_latency_ns),
            "p99_latency_ns": ns(self.p99_latency_ns),
            "p99_send_lag_ns": ns(self.p99_send_lag_ns),
            "max_send_lag_ns": ns(self.max_send_lag_ns),
            "in_flight": self.in_flight.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Timeline:
        """What to_dict wrote (result.json's `timeline`); a missing column reads as empty/NaN."""
        start = np.asarray(data.get("start_ns", []), dtype=np.int64)

        def ints(name: str) -> np.ndarray:
            values = data.get(name)
            if values is None:
                return np.zeros(len(start), dtype=np.int64)
            return np.asarray(values, dtype=np.int64)

        def ns(name: str) -> np.ndarray:
            values = data.get(name)
            if values is None:
                return np.full(len(start), np.nan)
            return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)

        kinds = data.get("errors_by_kind") or {}
        return cls(
            bucket_ns=int(data.get("bucket_ns", NS_PER_S)),
            start_ns=start,
            scheduled=ints("scheduled"),
            issued=ints("issued"),
            completed=ints("completed"),
            errors=ints("errors"),
            p99_latency_ns=ns("p99_latency_ns"),
            max_send_lag_ns=ns("max_send_lag_ns"),
            in_flight=ints("in_flight"),
            p50_latency_ns=ns("p50_latency_ns"),
            p99_send_lag_ns=ns("p99_send_lag_ns"),
            errors_by_kind={str(k): np.asarray(v, dtype=np.int64) for k, v in kinds.items()},
        )


def _failure_times(records: Records) -> tuple[np.ndarray, np.ndarray]:
    """Completion times and error codes of the failed queries that got an answer."""
    done = records.errored & (records.completed_ns != NOT_SET_NS)
    return records.completed_ns[done], records.error_code[done].astype(np.int64)


def _bucket_counts(times: np.ndarray, bucket_ns: int, buckets: int) -> np.ndarray:
    if buckets <= 0:
        return np.zeros(0, dtype=np.int64)
    index = np.clip(times // bucket_ns, 0, buckets - 1).astype(np.int64)
    return np.bincount(index, minlength=buckets).astype(np.int64)


def _bucket_count_for(times: np.ndarray, bucket_ns: int, buckets: int | None) -> int:
    if bucket_ns <= 0:
        raise ValueError("bucket_ns must be positive")
    if buckets is not None:
        return buckets
    return int(times.max() // bucket_ns + 1) if len(times) else 0


def failures_per_bucket(
    records: Records, bucket_ns: int = NS_PER_S, buckets: int | None = None
) -> np.ndarray:
    """Failed queries per time bucket [k·bucket_ns, (k+1)·bucket_ns), by completion time (int64).

    `buckets` fixes the length (later failures count in the last bucket, earlier ones in the
    first); None = up to the last failure. Unanswered queries have no completion and are not
    counted (the Summary's `unanswered` and first_failure_ns cover them).
    """
    times, _ = _failure_times(records)
    return _bucket_counts(times, bucket_ns, _bucket_count_for(times, bucket_ns, buckets))


def failures_per_bucket_by_kind(
    records: Records, bucket_ns: int = NS_PER_S, buckets: int | None = None
) -> dict[str, np.ndarray]:
    """failures_per_bucket split by error kind ("unknown" when none was recorded), every array of
    the same length; kinds without a failure are left out. The arrays add up to
    failures_per_bucket."""
    times, codes = _failure_times(records)
    count = _bucket_count_for(times, bucket_ns, buckets)
    result: dict[str, np.ndarray] = {}
    for code in sorted(set(codes.tolist())):
        if code < 0:
            kind = "unknown"
        elif code < len(records.error_kinds):
            kind = records.error_kinds[code]
        else:
            kind = f"#{code}"
        counts = _bucket_counts(times[codes == code], bucket_ns, count)
        result[kind] = result[kind] + counts if kind in result else counts
    return result


def _bucket_percentiles(
    bucket: np.ndarray, values: np.ndarray, buckets: int, percentiles: tuple[float, ...]
) -> list[np.ndarray]:
    """Exact percentiles (LoadGen's sorted[floor(n·p)]) of `values` within each bucket: sort by
    (bucket, value), then pick the rank within each bucket's run. NaN where a bucket is empty."""
    counts = np.bincount(bucket, minlength=buckets).astype(np.int64)
    ordered = values[np.lexsort((values, bucket))]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    has = counts > 0
    found = []
    for percentile in percentiles:
        column = np.full(buckets, np.nan)
        rank = np.minimum(counts[has] - 1, np.floor(counts[has] * percentile).astype(np.int64))
        column[has] = ordered[starts[has] + rank]
        found.append(column)
    return found


def timeline(records: Records, bucket_ns: int = NS_PER_S, percentile: float = 0.99) -> Timeline:
    """Bucket the records by time (see Timeline). `percentile` selects the latency column's rank."""
    if bucket_ns <= 0:
        raise ValueError("bucket_ns must be positive")
    bucket_ns = int(bucket_ns)
    issued_mask = records.issued
    done = records.completed_ns != NOT_SET_NS
    ok = records.ok
    last = max(
        _max_or(records.scheduled_ns, -1),
        _max_or(records.issued_ns[issued_mask], -1),
        _max_or(records.completed_ns[done], -1),
    )
    buckets = last // bucket_ns + 1 if last >= 0 else (1 if len(records) else 0)

    def bucket_of(times: np.ndarray) -> np.ndarray:
        return np.clip(times // bucket_ns, 0, max(buckets - 1, 0)).astype(np.int64)

    def per_bucket(times: np.ndarray) -> np.ndarray:
        return np.bincount(bucket_of(times), minlength=buckets).astype(np.int64)

    issued_ns = records.issued_ns[issued_mask]
    ok_done_ns = records.completed_ns[ok]
    completed_count = per_bucket(ok_done_ns)

    p99 = np.full(buckets, np.nan)
    p50 = np.full(buckets, np.nan)
    if len(ok_done_ns):
        latency = ok_done_ns - records.scheduled_ns[ok]
        p50, p99 = _bucket_percentiles(bucket_of(ok_done_ns), latency, buckets, (0.5, percentile))

    max_lag = np.full(buckets, -np.inf)
    lag_p99 = np.full(buckets, np.nan)
    if len(issued_ns):
        lag = issued_ns - records.scheduled_ns[issued_mask]
        issue_bucket = bucket_of(issued_ns)
        np.maximum.at(max_lag, issue_bucket, lag.astype(np.float64))
        (lag_p99,) = _bucket_percentiles(issue_bucket, lag, buckets, (0.99,))
    max_lag[np.isneginf(max_lag)] = np.nan

    ends = (np.arange(buckets, dtype=np.int64) + 1) * bucket_ns
    sent_before = np.searchsorted(np.sort(issued_ns), ends, side="left")
    done_ns = np.sort(records.completed_ns[done & issued_mask])
    done_before = np.searchsorted(done_ns, ends, side="left")
    return Timeline(
        bucket_ns=bucket_ns,
        start_ns=ends - bucket_ns,
        scheduled=per_bucket(records.scheduled_ns),
        issued=per_bucket(issued_ns),
        completed=completed_count,
        errors=failures_per_bucket(records, bucket_ns, buckets),
        p99_latency_ns=p99,
        max_send_lag_ns=max_lag,
        in_flight=(sent_before - done_before).astype(np.int64),
        p50_latency_ns=p50,
        p99_send_lag_ns=lag_p99,
        errors_by_kind=failures_per_bucket_by_kind(records, bucket_ns, buckets),
    )
