"""Issue #13, the rules layer: every verdict tells the truth.

Failed queries count against the performance constraint; "run complete" fails for any early stop;
the stream latency bound prints the sign it means; recommendations name what happened; the
client's allowed send lag is relative to the bound; an error budget is stated in the verdict; the
failures' own latency and timeline. (The trailing-window error rate: test_error_budget.py.)
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from loadtest.core.records import NOT_SET_NS, Records, Status
from loadtest.core.settings import (
    DEFAULT_CLIENT_LAG_FRACTION,
    OfflineSettings,
    PeakSettings,
    Scenario,
    ServerSettings,
    StreamSettings,
)
from loadtest.core.target import TargetCapabilities
from loadtest.engine.runner import ClosedLoopRunner, RunOutcome
from loadtest.errors import SettingsError
from loadtest.rules.stats import (
    allowed_send_lag_ns,
    exact_percentile,
    exact_percentile_with_failures,
    failures_per_bucket,
    failures_per_bucket_by_kind,
    summarize,
    timeline,
)
from loadtest.rules.validity import (
    CLIENT_BOUND,
    CLIENT_KEPT_UP,
    EARLY_STOPPING,
    ERROR_BUDGET,
    ERROR_BUDGET_RULES,
    LATENCY_BOUND,
    MIN_DURATION,
    MLPERF_RULES,
    NO_FAILURES,
    PERFORMANCE,
    REDUCE_QPS,
    RUN_COMPLETE,
    SERVER_MIN_DURATION,
    Verdict,
    early_stopping_min_passes,
    judge_multi_stream,
    judge_offline,
    judge_server,
    judge_single_stream,
    run_stopped_early,
)
from loadtest.scenarios.mlperf.interpret import interpret_server, interpret_stream

MS = 1_000_000
S = 1_000_000_000


def run_records(
    n: int,
    gap_ns: int = MS,
    latency_ns: int = 2 * MS,
    fail_from: int | None = None,
    fail_every: int = 1,
    unanswered: int = 0,
    not_issued: int = 0,
    lag_ns: int = 0,
    lagging: int = 0,
    slow: int = 0,
    slow_ns: int = 50 * MS,
    error_kind: str = "timeout",
) -> Records:
    """n queries due every gap_ns from gap_ns on, answered latency_ns after their send.

    From row `fail_from` on, every `fail_every`-th row fails (an answer with an error). The last
    `not_issued` rows were never sent; the `unanswered` rows before them were sent and never
    answered. The first `lagging` rows are sent lag_ns late; the `slow` rows after them take
    slow_ns."""
    scheduled = np.arange(1, n + 1, dtype=np.int64) * gap_ns
    records = Records(scheduled_ns=scheduled, sample_index=np.zeros(n, dtype=np.int32))
    records.issued_ns[:] = scheduled
    records.issued_ns[:lagging] += lag_ns
    records.completed_ns[:] = records.issued_ns + latency_ns
    records.completed_ns[lagging : lagging + slow] = records.issued_ns[lagging : lagging + slow] + (
        slow_ns
    )
    records.status[:] = Status.OK
    if fail_from is not None:
        code = records.error_code_for(error_kind)
        rows = np.arange(fail_from, n, fail_every)
        records.status[rows] = Status.ERROR
        records.error_code[rows] = code
    end = n - not_issued
    records.status[end - unanswered :] = Status.PENDING
    records.completed_ns[end - unanswered :] = NOT_SET_NS
    records.issued_ns[end:] = NOT_SET_NS
    return records


def server_verdict(
    records: Records,
    target_ns: int = 10 * MS,
    bound_for_lag: bool = False,
    duration_ns: int | None = None,
    **kwargs: object,
) -> Verdict:
    summary = summarize(
        records, duration_ns=duration_ns, bound_ns=target_ns if bound_for_lag else 0
    )
    return judge_server(
        summary,
        records.latency_from_scheduled_ns(),
        target_latency_ns=target_ns,
        percentile=0.99,
        min_duration_ns=S // 2,
        min_query_count=100,
        **kwargs,  # type: ignore[arg-type]
    )


def detail(verdict: Verdict, name: str) -> str:
    check = verdict.check(name)
    assert check is not None, name
    return check.detail


def failed_names(verdict: Verdict) -> list[str]:
    return [c.name for c in verdict.checks if not c.passed]


# --- 1. failures count against the performance constraint --------------------------------------


def test_percentile_with_failures_places_them_at_infinity() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        ok = np.sort(rng.integers(1, 1000, rng.integers(0, 50)))
        failed = int(rng.integers(0, 10))
        if len(ok) + failed == 0:
            continue
        p = float(rng.choice([0.5, 0.9, 0.99, 0.999]))
        big = 10**12  # a stand-in for +∞
        reference = exact_percentile(np.concatenate([ok, np.full(failed, big)]), p)
        value = exact_percentile_with_failures(ok, failed, p)
        assert (value is None) == (reference == big)
        if value is not None:
            assert value == reference
    assert exact_percentile_with_failures(np.array([1, 2, 3]), 0, 0.5) == 2
    with pytest.raises(ValueError):
        exact_percentile_with_failures(np.array([1]), -1, 0.5)


def test_server_faults_fail_the_performance_constraint() -> None:
    # 1469 queries, 1017 of them failed: the successes' p99 is 2 ms, but the p99 of what was
    # issued is a failure. Old code: "p99 2 ms ≤ 10 ms target", passed.
    records = run_records(1469, fail_from=1469 - 1017)
    verdict = server_verdict(records)
    assert not verdict.passed(PERFORMANCE)
    assert detail(verdict, PERFORMANCE) == (
        "performance constraint: p99 over 1469 queries (1017 failed counted as over the bound) "
        "= ∞ > 10 ms target"
    )


def test_few_failures_shift_the_percentile_rank() -> None:
    # 995 successes, 6 of them 50 ms slow, 5 failures. Over the successes p99 = sorted[985] = 2 ms
    # (passed before); over all 1000 the rank is 990, which lands on a slow success: 50 ms.
    records = run_records(1000, slow=6, fail_from=995)
    verdict = server_verdict(records)
    assert detail(verdict, PERFORMANCE) == (
        "performance constraint: p99 over 1000 queries (5 failed counted as over the bound) "
        "= 50 ms > 10 ms target"
    )
    performance = verdict.check(PERFORMANCE)
    assert performance is not None and performance.recommendation == REDUCE_QPS


def test_unanswered_queries_count_too() -> None:
    records = run_records(1000, fail_from=990, unanswered=4)
    summary = summarize(records)
    assert (summary.errors, summary.unanswered, summary.failed) == (6, 4, 10)
    verdict = server_verdict(records)
    assert "(6 failed and 4 unanswered counted as over the bound) = ∞ > 10 ms" in detail(
        verdict, PERFORMANCE
    )


def test_no_failures_keeps_loadgen_text() -> None:
    verdict = server_verdict(run_records(1000))
    assert detail(verdict, PERFORMANCE) == "performance constraint: p99 2 ms ≤ 10 ms target"
    assert verdict.valid, verdict.reasons


def test_summary_says_what_the_latency_table_leaves_out() -> None:
    records = run_records(100, fail_from=90, unanswered=3, not_issued=2)
    summary = summarize(records)
    # rows 90..94 failed, 95..97 unanswered, 98..99 never issued
    assert (summary.completed_ok, summary.errors, summary.pending) == (90, 5, 5)
    assert (summary.unanswered, summary.not_issued) == (3, 2)
    assert summary.left_out_of_latency == 10 == summary.scheduled - summary.latency.count
    as_dict = summary.to_dict()
    assert as_dict["left_out_of_latency"] == 10 and as_dict["unanswered"] == 3
    assert as_dict["failed"] == 8
    json.dumps(as_dict)


# --- 2. "run complete" fails for any early stop ------------------------------------------------


def test_max_duration_cut_fails_run_complete() -> None:
    # The schedule was cut: 300 of 1000 queries never issued. Old code: "run completed".
    records = run_records(1000, not_issued=300)
    verdict = server_verdict(
        records, duration_ns=700 * MS, stop_reason="max duration 0.7 s reached"
    )
    assert not verdict.passed(RUN_COMPLETE)
    assert verdict.partial and not verdict.valid
    assert detail(verdict, RUN_COMPLETE) == (
        "run stopped early; partial result (max duration 0.7 s reached; 300 of 1000 scheduled "
        "queries never issued)"
    )
    assert verdict.recommendations[0] == (
        "The run stopped early (max duration 0.7 s reached) after 0.7 s, with 300 of 1000 "
        "scheduled queries never issued; this is a partial result."
    )


def test_stop_reason_alone_fails_run_complete() -> None:
    verdict = server_verdict(run_records(1000), stop_reason="max duration 1 s reached")
    assert failed_names(verdict) == [RUN_COMPLETE]
    assert verdict.partial


def test_never_issued_queries_alone_fail_run_complete() -> None:
    verdict = server_verdict(run_records(1000, not_issued=10))
    assert RUN_COMPLETE in failed_names(verdict)
    assert "10 of 1000 scheduled queries never issued" in detail(verdict, RUN_COMPLETE)
    # never-issued queries are not server failures
    assert verdict.passed(NO_FAILURES)


def test_drain_timeout_fails_run_complete() -> None:
    records = run_records(1000, unanswered=3)
    verdict = server_verdict(
        records, duration_ns=31 * S, stop_reason="3 queries unanswered after the drain timeout"
    )
    assert not verdict.passed(RUN_COMPLETE)
    assert verdict.recommendations[0] == (
        "The run ended after 31 s with 3 queries still unanswered after the drain timeout: the "
        "server stalled or dropped them; this is a partial result."
    )
    # a 30 s silence is the server's doing: the fault advice follows
    assert verdict.recommendations[1].startswith("The server left 3 unanswered of 1000 queries")


def test_interrupted_queries_in_flight_are_not_blamed_on_the_server() -> None:
    # Ctrl-C left 5 queries in flight: they count as over the bound, but the advice does not call
    # it a server fault.
    records = run_records(1000, unanswered=5, not_issued=100)
    verdict = server_verdict(
        records, duration_ns=S, interrupted=True, stop_reason="interrupted (Ctrl-C)"
    )
    assert not verdict.passed(NO_FAILURES)
    assert verdict.recommendations == (
        "The run was interrupted (Ctrl-C) after 1 s; this is a partial result.",
    )


def test_complete_run_is_not_partial() -> None:
    verdict = server_verdict(run_records(1000))
    assert verdict.passed(RUN_COMPLETE) and not verdict.partial
    assert not run_stopped_early(summarize(run_records(10)), False, "")


def test_offline_and_streams_fail_run_complete_when_cut() -> None:
    n = 100
    records = Records(np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int32))
    records.issued_ns[:80] = 0
    records.completed_ns[:80] = np.linspace(S // 100, 2 * S, 80).astype(np.int64)
    records.status[:80] = Status.OK
    offline = judge_offline(summarize(records), min_duration_ns=S, stop_reason="max duration")
    assert failed_names(offline) == [RUN_COMPLETE] and offline.partial
    stream = _stream_records(200)
    single = judge_single_stream(
        summarize(stream),
        stream.latency_from_issue_ns(),
        min_duration_ns=S // 10,
        stop_reason="max duration 0.4 s reached",
    )
    assert failed_names(single) == [RUN_COMPLETE] and single.partial


def test_run_outcome_says_it_stopped_early() -> None:
    records = run_records(10)
    assert RunOutcome(records, 0, 1, False, "max duration 1 s reached").stopped_early
    assert RunOutcome(records, 0, 1, True, "").stopped_early
    assert not RunOutcome(records, 0, 1, False, "").stopped_early


def test_interpret_reports_max_duration_cut() -> None:
    settings = ServerSettings(qps=1000, target_latency_ns=10 * MS, min_duration_ns=S // 2)
    records = run_records(1000, not_issued=400)
    outcome = RunOutcome(records, 0, 600 * MS, False, "max duration 0.6 s reached")
    _, verdict = interpret_server(settings, outcome)
    assert not verdict.passed(RUN_COMPLETE) and verdict.partial


class _Instant:
    """A target that answers at once (the fake clock decides the time)."""

    capabilities = TargetCapabilities()  # nothing beyond `infer`

    async def infer(self, sample: int) -> None:
        return None


def test_stream_ending_as_it_should_past_max_duration_is_not_cut() -> None:
    # A clock that moves 10 ms per reading. Issues at 20, 50, 80, 110 ms; the check after the
    # query issued at 110 ms (≥ the 100 ms minimum) reads 130 ms ≥ the 125 ms max duration.
    # The stream met its minimums: that is its natural end, not a cut.
    ticks = iter(range(0, 10**9, 10 * MS))
    runner = ClosedLoopRunner(
        np.zeros(64, dtype=np.int32),
        _Instant(),  # type: ignore[arg-type]
        workers=1,
        all_due_at_start=False,
        min_duration_ns=100 * MS,
        min_query_count=1,
        max_duration_ns=125 * MS,
        clock=lambda: next(ticks),
    )
    outcome = asyncio.run(runner.run(handle_sigint=False))
    assert int(outcome.records.issued_ns.max()) == 110 * MS
    assert outcome.stop_reason == "" and not outcome.stopped_early


# --- 3. the stream latency bound prints the sign it means --------------------------------------


def _stream_records(n: int, latency_ns: int = MS) -> Records:
    records = Records(np.arange(n, dtype=np.int64) * 2 * MS, np.zeros(n, dtype=np.int32))
    records.issued_ns[:] = records.scheduled_ns
    records.completed_ns[:] = records.scheduled_ns + latency_ns
    records.status[:] = Status.OK
    return records


@pytest.mark.parametrize(
    ("latency_ns", "passed", "text"),
    [
        (12 * MS, False, "early-stopping p90 estimate 12 ms > 10 ms bound"),
        (8 * MS, True, "early-stopping p90 estimate 8 ms ≤ 10 ms bound"),
    ],
)
def test_stream_latency_bound_sign(latency_ns: int, passed: bool, text: str) -> None:
    records = _stream_records(200, latency_ns)
    verdict = judge_single_stream(
        summarize(records),
        records.latency_from_issue_ns(),
        min_duration_ns=S // 10,
        target_latency_ns=10 * MS,
    )
    assert verdict.passed(LATENCY_BOUND) is passed
    assert detail(verdict, LATENCY_BOUND) == text
    assert verdict.valid is passed
    # and through the scenario layer, as the command runs it
    settings = StreamSettings(
        scenario=Scenario.SINGLE_STREAM,
        percentile=0.9,
        min_duration_ns=S // 10,
        target_latency_ns=10 * MS,
    )
    _, interpreted = interpret_stream(settings, RunOutcome(records, 0, 400 * MS, False, ""))
    assert detail(interpreted, LATENCY_BOUND) == text


def test_stream_without_bound_has_no_bound_check() -> None:
    records = _stream_records(200)
    verdict = judge_multi_stream(
        summarize(records), records.latency_from_issue_ns(), min_duration_ns=S // 10
    )
    assert verdict.check(LATENCY_BOUND) is None


# --- 4. recommendations say what happened ------------------------------------------------------


def test_server_fault_advice_replaces_run_more_queries() -> None:
    # Failures from t = 4.5 s on: 1469 queries 4 ms apart, failing from row 1125 (due 4.5 s,
    # answered 2 ms later).
    records = run_records(1469, gap_ns=4 * MS, fail_from=1124, fail_every=1)
    records.status[: 1469 - 1017] = Status.OK  # keep exactly 1017 failures at the end
    records.status[1469 - 1017 :] = Status.ERROR
    records.error_code[1469 - 1017 :] = 0
    first = int(records.completed_ns[1469 - 1017])
    summary = summarize(records)
    assert summary.first_failure_ns == first
    verdict = server_verdict(records)
    advice = (
        f"The server failed 1017 of 1469 queries, from t={first / 1e9:g} s (first failure); "
        "fix the server before judging latency."
    )
    assert verdict.recommendations[0] == advice
    assert not any("more queries" in r for r in verdict.recommendations)
    assert not any(r == REDUCE_QPS for r in verdict.recommendations)
    assert set(failed_names(verdict)) >= {PERFORMANCE, EARLY_STOPPING, NO_FAILURES}


def test_first_failure_at_four_and_a_half_seconds() -> None:
    records = run_records(10, gap_ns=S, fail_from=3, latency_ns=S // 2)
    # row 3 is due at 4 s and answered (with an error) 0.5 s later
    assert summarize(records).first_failure_ns == 4 * S + S // 2
    verdict = server_verdict(records)
    assert "from t=4.5 s (first failure)" in verdict.recommendations[0]


def test_unanswered_first_failure_is_its_send() -> None:
    records = run_records(10, unanswered=2)
    assert summarize(records).first_failure_ns == int(records.issued_ns[8])
    assert summarize(run_records(10)).first_failure_ns == NOT_SET_NS


def test_few_failures_keep_the_early_stopping_advice() -> None:
    # 2 failures in 600: not enough to put p99 at ∞; the run is simply too short for t = 2.
    records = run_records(600, fail_from=598)
    verdict = server_verdict(records)
    assert verdict.passed(PERFORMANCE)
    assert not verdict.passed(EARLY_STOPPING)
    assert verdict.recommendations[0].startswith("The server failed 2 of 600 queries")
    assert any(r.startswith("Run at least") for r in verdict.recommendations)


def test_interruption_advice_replaces_increase_the_qps() -> None:
    # Interrupted after 0.3 s: the schedule spans 0.3 s < 0.5 s and early stopping lacks queries,
    # both consequences of the interruption. Old advice: "Increase the target QPS…".
    records = run_records(1000, not_issued=700)
    verdict = server_verdict(
        records, duration_ns=12_300 * MS, interrupted=True, stop_reason="interrupted (Ctrl-C)"
    )
    assert {MIN_DURATION, EARLY_STOPPING, RUN_COMPLETE} <= set(failed_names(verdict))
    assert verdict.recommendations == (
        "The run was interrupted (Ctrl-C) after 12.3 s; this is a partial result.",
    )
    assert SERVER_MIN_DURATION not in verdict.recommendations
    assert detail(verdict, RUN_COMPLETE).startswith(
        "run interrupted; partial result (interrupted (Ctrl-C); 700 of 1000"
    )


def test_interruption_by_signal_name() -> None:
    verdict = server_verdict(
        run_records(1000), duration_ns=5 * S, interrupted=True, stop_reason="SIGTERM"
    )
    assert verdict.recommendations == (
        "The run was interrupted (SIGTERM) after 5 s; this is a partial result.",
    )


# --- 5. the client-bound rule relative to the bound --------------------------------------------


def test_allowed_send_lag() -> None:
    assert DEFAULT_CLIENT_LAG_FRACTION == 0.05
    assert allowed_send_lag_ns(MS, 15 * MS) == MS  # 0.75 ms < the 1 ms floor
    assert allowed_send_lag_ns(MS, 130 * MS) == 6_500_000
    assert allowed_send_lag_ns(MS, S) == 50 * MS
    assert allowed_send_lag_ns(MS, 0) == MS  # no bound (Offline): the absolute rule
    assert allowed_send_lag_ns(MS, S, fraction=0.0) == MS
    assert allowed_send_lag_ns(2 * MS, S, fraction=0.1) == 100 * MS
    with pytest.raises(ValueError):
        allowed_send_lag_ns(MS, S, fraction=1.0)


def test_lag_small_against_a_one_second_bound_keeps_up() -> None:
    # 5 % of the queries sent 5 ms late, 1 s bound: old rule (1 ms) says client-bound; 5 ms is
    # well under 5 % of 1 s = 50 ms.
    records = run_records(1000, lagging=50, lag_ns=5 * MS)
    verdict = server_verdict(records, target_ns=S, bound_for_lag=True)
    assert verdict.passed(CLIENT_KEPT_UP), verdict.reasons
    assert detail(verdict, CLIENT_KEPT_UP) == (
        "client kept up with its schedule (send-lag p99 5 ms ≤ 50 ms allowed (5 % of the "
        "1000 ms bound), 0.00 % issued more than 50 ms late)"
    )
    summary = summarize(records, bound_ns=S)
    assert summary.send_lag.late_share == pytest.approx(0.05)  # display stat, still vs 1 ms
    assert summary.send_lag.allowed_lag_ns == 50 * MS


def test_lag_large_against_the_bound_is_client_bound() -> None:
    records = run_records(1000, lagging=50, lag_ns=60 * MS)
    verdict = server_verdict(records, target_ns=S, bound_for_lag=True)
    assert failed_names(verdict) == [CLIENT_KEPT_UP]
    assert "send-lag p99 60 ms > 50 ms allowed (5 % of the 1000 ms bound)" in verdict.reasons[0]
    assert "5.00 % issued more than 50 ms late" in verdict.reasons[0]
    assert verdict.recommendations == (CLIENT_BOUND,)


def test_tight_bound_keeps_the_one_ms_floor() -> None:
    records = run_records(1000, lagging=50, lag_ns=5 * MS, latency_ns=MS)
    verdict = server_verdict(records, target_ns=15 * MS, bound_for_lag=True)
    assert failed_names(verdict) == [CLIENT_KEPT_UP]
    assert (
        "send-lag p99 5 ms > 1 ms allowed (the 1 ms floor; 5 % of the 15 ms bound is 0.75 ms)"
        in verdict.reasons[0]
    )


def test_summary_bound_must_match_the_target() -> None:
    records = run_records(100)
    summary = summarize(records, bound_ns=S)
    with pytest.raises(ValueError, match="bound"):
        judge_server(summary, records.latency_from_scheduled_ns(), 10 * MS, 0.99, S, 1)


def test_interpret_uses_the_relative_rule_and_settings_fraction() -> None:
    records = run_records(1000, lagging=50, lag_ns=5 * MS)
    outcome = RunOutcome(records, 0, S, False, "")
    relaxed = ServerSettings(qps=1000, target_latency_ns=S, min_duration_ns=S // 2)
    _, verdict = interpret_server(relaxed, outcome)
    assert verdict.passed(CLIENT_KEPT_UP)
    strict = ServerSettings(
        qps=1000, target_latency_ns=S, min_duration_ns=S // 2, client_lag_fraction=0.0
    )
    _, verdict = interpret_server(strict, outcome)
    assert not verdict.passed(CLIENT_KEPT_UP)
    with pytest.raises(SettingsError):
        ServerSettings(qps=1, target_latency_ns=S, client_lag_fraction=1.5)
    probe = PeakSettings(target_latency_ns=S, client_lag_fraction=0.1).probe(10, 100)
    assert probe.client_lag_fraction == 0.1


# --- 6. the error budget -----------------------------------------------------------------------


def test_error_budget_within() -> None:
    n = 3000
    assert early_stopping_min_passes(4, 0.99) + 4 <= n
    records = run_records(n, fail_from=n - 4)
    mlperf = server_verdict(records)
    assert not mlperf.valid and mlperf.rules == MLPERF_RULES and mlperf.error_budget is None
    assert failed_names(mlperf) == [NO_FAILURES]
    budget = server_verdict(records, error_budget=0.01)
    assert budget.valid, budget.reasons
    assert budget.rules == ERROR_BUDGET_RULES and budget.error_budget == 0.01
    assert budget.check(NO_FAILURES) is None
    assert detail(budget, ERROR_BUDGET) == (
        "errors within budget: 0.133 % ≤ 1 % (4 of 3000 issued queries failed or unanswered "
        "(timeout: 4))"
    )
    # failures still count as over the bound in early stopping
    assert budget.early_stopping is not None and budget.early_stopping.overlatency == 4


def test_error_budget_exceeded() -> None:
    records = run_records(3000, fail_from=2950)
    verdict = server_verdict(records, error_budget=0.01)
    assert ERROR_BUDGET in failed_names(verdict)
    assert detail(verdict, ERROR_BUDGET).startswith("errors over budget: 1.67 % > 1 % (50 of 3000")
    assert verdict.recommendations[0].startswith("The server failed 50 of 3000 queries")


def test_budget_failures_still_count_in_the_percentile() -> None:
    # 30 failures in 1000 are within a 5 % budget, but 3 % failed puts p99 at ∞.
    records = run_records(1000, fail_from=970)
    verdict = server_verdict(records, error_budget=0.05)
    assert verdict.passed(ERROR_BUDGET)
    assert not verdict.passed(PERFORMANCE)
    assert "(30 failed counted as over the bound) = ∞" in detail(verdict, PERFORMANCE)


def test_error_budget_everywhere() -> None:
    n = 100
    records = Records(np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int32))
    records.issued_ns[:] = 0
    records.completed_ns[:] = np.linspace(S // 100, 2 * S, n).astype(np.int64)
    records.status[:] = Status.OK
    records.status[0] = Status.ERROR
    offline = judge_offline(summarize(records), min_duration_ns=S, error_budget=0.02)
    assert offline.valid and offline.rules == ERROR_BUDGET_RULES
    stream = _stream_records(200)
    stream.status[5] = Status.ERROR
    single = judge_single_stream(
        summarize(stream),
        stream.latency_from_issue_ns(),
        min_duration_ns=S // 10,
        error_budget=0.01,
    )
    assert single.valid and single.passed(ERROR_BUDGET)
    with pytest.raises(ValueError):
        server_verdict(run_records(10), error_budget=1.5)
    with pytest.raises(SettingsError):
        OfflineSettings(expected_qps=1, error_budget=-0.1)
    assert StreamSettings(Scenario.SINGLE_STREAM, 0.9, error_budget=0.01).error_budget == 0.01


# --- 7. failures' own latency and timeline -----------------------------------------------------


def test_failure_latency_apart_from_successes() -> None:
    records = run_records(100, fail_from=90, latency_ns=2 * MS)
    records.completed_ns[90:] = records.scheduled_ns[90:] + 30 * MS  # failing takes 30 ms
    summary = summarize(records)
    assert summary.latency.count == 90 and summary.latency.max_ns == 2 * MS
    assert summary.failure_latency.count == 10
    assert summary.failure_latency.min_ns == summary.failure_latency.max_ns == 30 * MS
    assert summarize(run_records(10)).failure_latency.count == 0


def test_failures_per_bucket_by_completion_time() -> None:
    records = run_records(10, gap_ns=300 * MS, fail_from=0, fail_every=3, latency_ns=100 * MS)
    # failing rows 0, 3, 6, 9 complete at 0.4, 1.3, 2.2, 3.1 s
    assert failures_per_bucket(records).tolist() == [1, 1, 1, 1]
    assert failures_per_bucket(records, buckets=2).tolist() == [1, 3]  # later ones clipped
    assert failures_per_bucket(records, bucket_ns=2 * S).tolist() == [2, 2]
    assert failures_per_bucket(run_records(5)).tolist() == []
    records.error_code[3] = records.error_code_for("unavailable")
    by_kind = failures_per_bucket_by_kind(records)
    assert by_kind["timeout"].tolist() == [1, 0, 1, 1]
    assert by_kind["unavailable"].tolist() == [0, 1, 0, 0]
    assert (by_kind["timeout"] + by_kind["unavailable"]).tolist() == [1, 1, 1, 1]
    line = timeline(records)
    assert line.errors.tolist() == failures_per_bucket(records, buckets=len(line)).tolist()
    with pytest.raises(ValueError):
        failures_per_bucket(records, bucket_ns=0)
