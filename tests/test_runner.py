"""The open-loop runner against the in-process fake target with a known service-time law."""

import asyncio

import numpy as np

from loadtest.core.records import Status
from loadtest.core.schedule import NS_PER_S, Schedule, server_schedule
from loadtest.engine.runner import Runner
from loadtest.targets.fake import FakeTarget, ServiceLaw, Stall

MS = 1_000_000


async def _play(schedule, target, **kwargs):
    await target.open()
    return await Runner(schedule, target, **kwargs).run(handle_sigint=False)


def test_latency_from_scheduled_time_includes_queueing():
    # Ten queries due at once on one server of 20 ms: the k-th waits for k-1 before it.
    schedule = Schedule(np.zeros(10, dtype=np.int64), np.zeros(10, dtype=np.int32))
    target = FakeTarget(ServiceLaw("constant", 20 * MS), servers=1)
    outcome = asyncio.run(_play(schedule, target))
    latency = np.sort(outcome.records.latency_from_scheduled_ns())
    assert outcome.records.ok.all()
    # The last query completes after ~10 services: ≥ 200 ms from its scheduled time.
    assert latency[-1] >= 200 * MS
    assert latency[0] < 60 * MS
    # Every query was issued on time (open loop: issuing does not wait for completions).
    assert np.all(outcome.records.send_lag_ns() < 20 * MS)


def test_one_second_stall_shows_in_p99():
    schedule = server_schedule(200, 3 * NS_PER_S, 1, 8, schedule_seed=1, sample_seed=2)
    target = FakeTarget(
        ServiceLaw("exponential", 1 * MS),
        servers=4,
        stall=Stall(at_ns=1 * NS_PER_S, length_ns=NS_PER_S),
    )
    outcome = asyncio.run(_play(schedule, target))
    latency = outcome.records.latency_from_scheduled_ns()
    p50, p99 = np.percentile(latency, [50, 99])
    assert p50 < 50 * MS  # most queries are unaffected
    assert p99 > 800 * MS  # queries due early in the stall wait ~1 s: the tail shows it
    # The issuer did not stall with the server: open loop keeps sending during the stall.
    assert np.percentile(outcome.records.send_lag_ns(), 99) < 20 * MS


def test_every_query_issued_close_to_schedule():
    schedule = server_schedule(300, 2 * NS_PER_S, 1, 8, schedule_seed=3, sample_seed=4)
    outcome = asyncio.run(_play(schedule, FakeTarget(ServiceLaw("constant", 1 * MS), servers=8)))
    lag = outcome.records.send_lag_ns()
    assert outcome.records.issued.all()
    assert np.all(lag >= 0)  # never early
    assert np.median(lag) < 1 * MS


def test_errors_are_records_not_exceptions():
    schedule = server_schedule(200, NS_PER_S // 2, 20, 8, schedule_seed=5, sample_seed=6)
    target = FakeTarget(ServiceLaw("constant", 1 * MS), servers=4, fail_every=5)
    outcome = asyncio.run(_play(schedule, target))
    records = outcome.records
    assert records.errored.sum() == len(records) // 5
    assert records.error_kinds == ["fake injected failure"]
    assert set(np.unique(records.error_code[records.errored])) == {0}
    assert not outcome.interrupted


def test_stop_keeps_what_was_measured_and_marks_partial():
    schedule = server_schedule(100, 10 * NS_PER_S, 1, 8, schedule_seed=7, sample_seed=8)
    target = FakeTarget(ServiceLaw("constant", 1 * MS), servers=2)

    async def play_then_stop():
        await target.open()
        runner = Runner(schedule, target)
        asyncio.get_running_loop().call_later(0.5, runner.stop, "interrupted (Ctrl-C)")
        return await runner.run(handle_sigint=False)

    outcome = asyncio.run(play_then_stop())
    records = outcome.records
    assert outcome.interrupted and outcome.stop_reason == "interrupted (Ctrl-C)"
    assert 10 < records.issued.sum() < len(records)
    assert (records.status[records.issued] == Status.OK).all()
    assert outcome.duration_ns < 2 * NS_PER_S


def test_unanswered_queries_stay_pending_after_drain_timeout():
    schedule = Schedule(np.zeros(3, dtype=np.int64), np.zeros(3, dtype=np.int32))
    target = FakeTarget(ServiceLaw("constant", 5 * NS_PER_S), servers=1)
    outcome = asyncio.run(_play(schedule, target, drain_timeout_ns=200 * MS))
    assert outcome.records.pending.all()
    assert "unanswered" in outcome.stop_reason


def test_max_duration_stops_issuing():
    schedule = server_schedule(100, 10 * NS_PER_S, 1, 8, schedule_seed=1, sample_seed=1)
    target = FakeTarget(ServiceLaw("constant", 1 * MS), servers=2)
    outcome = asyncio.run(_play(schedule, target, max_duration_ns=300 * MS))
    assert not outcome.interrupted and "max duration" in outcome.stop_reason
    issued_at = outcome.records.issued_ns[outcome.records.issued]
    assert issued_at.max() <= 300 * MS + 5 * MS


def test_client_falling_behind_shows_as_send_lag():
    # Each query blocks the event loop for 5 ms at 400 QPS (2.5 ms apart): the client cannot
    # keep up, and the send lag (not the server) must say so.
    schedule = server_schedule(400, NS_PER_S, 1, 8, schedule_seed=2, sample_seed=2)
    target = FakeTarget(ServiceLaw("constant", 1 * MS), servers=8, loop_block_ns=5 * MS)
    outcome = asyncio.run(_play(schedule, target))
    lag = outcome.records.send_lag_ns()
    assert np.percentile(lag, 99) > 100 * MS


def test_stop_during_a_long_gap_is_prompt():
    # Two queries 30 s apart: a stop 0.3 s in must not wait for the second one's due time.
    schedule = Schedule(np.array([0, 30 * NS_PER_S], dtype=np.int64), np.zeros(2, dtype=np.int32))
    target = FakeTarget(ServiceLaw("constant", 1 * MS), servers=1)

    async def play_then_stop():
        await target.open()
        runner = Runner(schedule, target)
        asyncio.get_running_loop().call_later(0.3, runner.stop, "interrupted (Ctrl-C)")
        started = asyncio.get_running_loop().time()
        outcome = await runner.run(handle_sigint=False)
        return outcome, asyncio.get_running_loop().time() - started

    outcome, elapsed = asyncio.run(play_then_stop())
    assert outcome.interrupted and elapsed < 5
    assert outcome.records.issued.sum() == 1


def test_the_issuer_sleeps_on_its_timer_and_spins_at_most_a_share_of_each_gap():
    """The spin window is capped at SPIN_GAP_SHARE of the mean gap: the issuer keeps sleeping on
    its timer (so it keeps measuring oversleeps), and spinning costs at most about that share of
    the time. Uncapped, a 2 ms start window at 1000 QPS spun through nearly every gap."""
    from loadtest.engine import runner as runner_module

    schedule = server_schedule(1000, 1 * NS_PER_S, 1, 8, schedule_seed=3, sample_seed=4)
    target = FakeTarget(ServiceLaw("constant", 1 * MS), servers=64)

    async def play():
        await target.open()
        runner = Runner(schedule, target)
        await runner.run(handle_sigint=False)
        return runner.counters

    counters = asyncio.run(play())
    n = len(schedule.scheduled_ns)
    assert counters.sent_by_issuer + counters.sent_by_completions == n
    assert counters.timer_sleeps > n // 4
    mean_gap_ns = NS_PER_S / 1000
    # Generous (a shared CI machine preempts spins too): uncapped it was ~the whole gap.
    assert runner_module.SPIN_GAP_SHARE <= 0.25
    assert counters.spin_ns / n < 0.5 * mean_gap_ns


def test_the_spin_window_is_uncapped_only_where_a_timer_cannot_place_sends():
    """Above 5000 QPS per worker the timer's lateness is most of a gap: the window may cover it
    (sends would clump otherwise); below, it stays capped at SPIN_GAP_SHARE of the gap."""
    from loadtest.engine.runner import (
        FULL_SPIN_GAP_NS,
        MAX_SPIN_WINDOW_NS,
        SPIN_GAP_SHARE,
        spin_window_cap,
    )

    assert FULL_SPIN_GAP_NS == 200_000
    assert spin_window_cap(NS_PER_S / 1000) == int(SPIN_GAP_SHARE * NS_PER_S / 1000)
    assert spin_window_cap(FULL_SPIN_GAP_NS) == int(SPIN_GAP_SHARE * FULL_SPIN_GAP_NS)
    assert spin_window_cap(NS_PER_S / 8000) == MAX_SPIN_WINDOW_NS
    assert spin_window_cap(NS_PER_S / 0.01) == MAX_SPIN_WINDOW_NS  # a very slow schedule
