"""The arrival seam (core/arrivals.py): laws bound once from the settings, a given list of
timestamps played and sharded exactly, pickling, and the sends judged against the schedule's
own law rather than against Poisson's CV of 1."""

from __future__ import annotations

import asyncio
import json
import math
import pickle

import numpy as np
import pytest

from loadtest.core.arrivals import (
    CONSTANT,
    LAWS,
    MAX_GAMMA_CV,
    POISSON,
    Constant,
    Gamma,
    Poisson,
    Timestamps,
    law_named,
    poisson,
)
from loadtest.core.records import Records
from loadtest.core.schedule import (
    Schedule,
    deal,
    merged_schedule,
    schedule_of,
    server_schedule,
    shard_owners,
    shard_schedule_of,
)
from loadtest.core.settings import ClientSettings, Protocol, ServerSettings, TargetSettings
from loadtest.engine.selfmeasure import gaps_follow_schedule, send_gap_cv
from loadtest.errors import SettingsError
from loadtest.report.results import plain
from loadtest.report.terminal import send_gaps, send_law_warning
from loadtest.scenarios.mlperf.play import Generator, run_server
from loadtest.scenarios.mlperf.registry import entry
from loadtest.shards.merge import client_report, shard_result
from loadtest.shards.plan import ShardPlan
from loadtest.targets.fake import FAKE_MODEL, FakeTarget, ServiceLaw, fake_from_url

NS = 1_000_000_000
MS = 1_000_000

# A trace with ties (several queries due at the same instant, as a ms-resolution log has).
TRACE = np.array([0, 0, 5, 5, 5, 40, 41, 41, 90, 300, 300, 301, 600, 1000], dtype=np.int64) * MS


def _settings(**kwargs) -> ServerSettings:
    return ServerSettings(qps=100, target_latency_ns=50 * MS, **kwargs)


# --- laws bound from the settings ----------------------------------------------------------------


def test_the_settings_bind_poisson_by_default_and_it_is_todays_schedule():
    settings = _settings(min_duration_ns=2 * NS, min_query_count=30, schedule_seed=4)
    assert settings.arrival_law == POISSON
    arrivals = settings.arrivals
    assert arrivals.describe() == "Poisson at 100 QPS" and arrivals.expected_gap_cv == 1.0
    drawn = schedule_of(arrivals, 16, settings.sample_seed)
    before = server_schedule(100, 2 * NS, 30, 16, 4, settings.sample_seed)
    assert np.array_equal(drawn.scheduled_ns, before.scheduled_ns)
    assert np.array_equal(drawn.sample_index, before.sample_index)


def test_a_rescaled_rate_rebinds_the_law():
    """find-peak and mixes `replace` qps: the arrivals follow, the law stays."""
    from dataclasses import replace

    settings = replace(_settings(arrival_law=CONSTANT), qps=250)
    assert settings.arrivals.describe() == "constant-gap at 250 QPS"


def test_constant_gaps_are_exact_and_meet_both_minimums():
    arrivals = CONSTANT.arrivals(200, NS, 1, seed=0)
    times = arrivals.due_ns()
    assert np.all(np.diff(times) == 5 * MS) and times[0] == 5 * MS
    assert times[-1] >= NS and times[-2] < NS  # cut right after the duration is reached
    assert len(CONSTANT.arrivals(200, NS, 500, seed=0).due_ns()) == 500  # the count rule
    assert arrivals.expected_gap_cv == 0.0 and send_gap_cv(times) == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize("law", [POISSON, CONSTANT], ids=["poisson", "constant"])
def test_a_long_schedule_shows_its_laws_expected_dispersion(law):
    arrivals = law.arrivals(5000, 20 * NS, 1, seed=2)
    assert send_gap_cv(arrivals.due_ns()) == pytest.approx(arrivals.expected_gap_cv, abs=0.02)


def test_laws_by_name_and_an_unknown_name_is_one_clear_error():
    assert law_named("Poisson") is POISSON and law_named("constant") is CONSTANT
    assert set(LAWS) == {"poisson", "constant"}
    with pytest.raises(SettingsError, match=r"unknown arrival law 'weibull'.*poisson, constant"):
        law_named("weibull")
    assert law_named("gamma:2") == Gamma(2) == law_named(" Gamma:CV=2 ")
    assert law_named("gamma:burstiness=0.25") == Gamma(2)  # vLLM's burstiness is the shape


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("gamma", "needs its CV"),
        ("gamma:", "needs its CV"),
        ("gamma:abc", "'abc' is not a number"),
        ("gamma:nan", "not a finite number"),
        ("gamma:inf", "not a finite number"),
        ("gamma:0", r"CV must be in \(0, 10\]"),
        ("gamma:-1", r"CV must be in \(0, 10\]"),
        ("gamma:11", r"CV must be in \(0, 10\]"),
        ("gamma:shape=2", "unknown parameter 'shape'"),
        ("gamma:burstiness=0", "burstiness must be a finite number > 0"),
        ("poisson:2", "poisson takes no parameter"),
    ],
)
def test_a_bad_gamma_law_is_one_clear_line(spec, says):
    with pytest.raises(SettingsError, match=says) as caught:
        law_named(spec)
    assert "\n" not in str(caught.value)


# --- gamma: the asked mean and CV, drawn as drawn ------------------------------------------------


def _gamma_bound(cv: float, n: int, z: float = 5.0) -> tuple[float, float]:
    """z standard errors of a gamma sample's mean gap (relative) and of its sample CV.

    The mean of n gaps has relative standard error cv / √n. The sample CV of a distribution
    with skewness g1 and excess kurtosis g2 has variance ≈ cv² (cv² − cv·g1 + (g2 + 2) / 4) / n
    (delta method); gamma's g1 = 2·cv and g2 = 6·cv² make that cv² (1 + cv²) / (2n).
    z = 5 makes a false failure a one-in-a-million event for any seed."""
    return z * cv / math.sqrt(n), z * cv * math.sqrt((1 + cv * cv) / (2 * n))


@pytest.mark.parametrize("cv", [0.25, 1.0, 2.0, 4.0])
def test_gamma_gaps_have_the_asked_mean_and_cv_within_sampling_error(cv):
    qps = 2000
    times = Gamma(cv).arrivals(qps, 30 * NS, 1, seed=7).due_ns()
    gaps = np.diff(times, prepend=0).astype(float)
    mean_bound, cv_bound = _gamma_bound(cv, len(gaps))
    assert abs(gaps.mean() * qps / NS - 1) < mean_bound
    assert abs(send_gap_cv(times) - cv) < cv_bound + 1e-3  # + rounding to whole ns
    assert Gamma(cv).arrivals(qps, NS, 1, 0).expected_gap_cv == cv


def test_gamma_is_drawn_as_drawn_never_rescaled_to_land_on_n_over_rate():
    """vLLM rescales its gamma schedule so the last arrival is exactly N / rate: we do not. The
    due times are the seeded draws' running sum, nothing else."""
    law, qps = Gamma(2.0), 500
    times = law.arrivals(qps, 2 * NS, 1, seed=3).due_ns()
    mean_gap = NS / qps
    raw = np.random.Generator(np.random.PCG64(3)).gamma(law.shape, mean_gap / law.shape, 10_000)
    assert np.array_equal(times, np.round(np.cumsum(raw)[: len(times)]).astype(np.int64))
    assert times[-1] != round(len(times) * mean_gap)  # not pinned to N / rate
    assert times[-2] < 2 * NS <= times[-1]  # LoadGen's stopping rule, as for every renewal law


def test_gamma_cv_1_is_poisson_in_distribution_and_the_law_describes_itself():
    assert Gamma(1).gap_cv == POISSON.gap_cv and Gamma.from_burstiness(1) == Gamma(1)
    arrivals = _settings(arrival_law=Gamma(2.5), min_duration_ns=NS).arrivals
    assert arrivals.describe() == "gamma (CV 2.5) at 100 QPS"
    assert json.loads(json.dumps(plain(_settings(arrival_law=Gamma(2)))))["arrival_law"] == {
        "cv": 2.0,
        "name": "gamma",
    }
    assert MAX_GAMMA_CV == 10


def test_the_law_is_written_into_result_json_by_name():
    assert json.loads(json.dumps(plain(_settings())))["arrival_law"] == {"name": "poisson"}
    written = json.loads(json.dumps(plain(_settings(arrival_law=Timestamps(TRACE)))))
    assert written["arrival_law"] == {
        "times_ns": TRACE.tolist(),
        "name": "timestamps",
        "rows": None,
        "source": "",
    }


def test_the_headline_names_the_law_it_played():
    describe = entry(_settings().scenario).describe
    summary, verdict, outcome = _judged(_settings())
    rows = {r.label: r.text for r in describe(_settings(), summary, verdict, outcome)}
    assert "(Poisson at 100 QPS, seed 0)" in rows["scheduled rate"]
    traced = _settings(arrival_law=Timestamps(TRACE))
    rows = {r.label: r.text for r in describe(traced, summary, verdict, outcome)}
    assert "Poisson" not in rows["scheduled rate"]
    assert "14 given timestamps over 1 s (mean 14.0 QPS)" in rows["scheduled rate"]


def _judged(settings: ServerSettings):
    from loadtest.engine.runner import RunOutcome
    from loadtest.scenarios.mlperf.interpret import interpret_server

    schedule = schedule_of(settings.arrivals, 4, 1)
    records = Records(scheduled_ns=schedule.scheduled_ns, sample_index=schedule.sample_index)
    outcome = RunOutcome(records, 0, 1, False, "")
    summary, verdict = interpret_server(settings, outcome)
    return summary, verdict, outcome


# --- a given list of timestamps -------------------------------------------------------------------


def test_timestamps_are_played_exactly_as_given():
    arrivals = _settings(arrival_law=Timestamps(TRACE), min_duration_ns=60 * NS).arrivals
    schedule = schedule_of(arrivals, 8, sample_seed=3)
    assert np.array_equal(schedule.scheduled_ns, TRACE)  # rate and minimums do not apply
    assert arrivals.expected_gap_cv is None
    # float seconds-as-ns are rounded, not truncated; the law's own copy cannot be changed
    law = Timestamps(np.array([0.4, 1.6, 2.5]))
    assert law.times_ns.tolist() == [0, 2, 2] and not law.times_ns.flags.writeable


@pytest.mark.parametrize(
    "bad", [[], [5, 3], [-1, 2], [0.0, float("nan")], [[0, 1], [2, 3]]], ids=str
)
def test_timestamps_that_cannot_be_played_are_one_clear_error(bad):
    with pytest.raises(SettingsError, match=r"timestamps"):
        Timestamps(np.array(bad))


@pytest.mark.parametrize("shards", [1, 2, 3, 5])
def test_timestamps_shard_exactly_each_query_keeping_its_index(shards):
    arrivals = _settings(arrival_law=Timestamps(TRACE), schedule_seed=11).arrivals
    whole = schedule_of(arrivals, 8, sample_seed=2)
    owners = shard_owners(len(whole), arrivals.seed, shards)
    parts = [shard_schedule_of(arrivals, 8, 2, k, shards) for k in range(shards)]
    for k, part in enumerate(parts):
        mine = np.flatnonzero(owners == k)  # the whole schedule's indices this shard plays
        assert np.array_equal(part.scheduled_ns, whole.scheduled_ns[mine])
        assert np.array_equal(part.sample_index, whole.sample_index[mine])
    assert sum(len(p) for p in parts) == len(whole)  # every index once: union == whole
    merged = merged_schedule(parts)
    assert np.array_equal(merged.scheduled_ns, whole.scheduled_ns)
    pairs = sorted(zip(merged.scheduled_ns.tolist(), merged.sample_index.tolist(), strict=True))
    expected = zip(whole.scheduled_ns.tolist(), whole.sample_index.tolist(), strict=True)
    assert pairs == sorted(expected)


def test_a_shard_plan_carries_the_timestamps_to_a_worker():
    settings = _settings(arrival_law=Timestamps(TRACE), schedule_seed=5)
    plans = [
        ShardPlan(
            target=TargetSettings(url="fake://", protocol=Protocol.GRPC, model="fake"),
            settings=settings,
            client=ClientSettings(workers=2),
            shard=k,
            shards=2,
            library_size=8,
        )
        for k in range(2)
    ]
    crossed = [pickle.loads(pickle.dumps(p)) for p in plans]  # as to a process or an actor
    assert crossed[0].settings == settings
    whole = schedule_of(settings.arrivals, 8, settings.sample_seed)
    for k, plan in enumerate(crossed):
        assert np.array_equal(plan.schedule().scheduled_ns, deal(whole, 5, k, 2).scheduled_ns)
    assert merged_schedule([p.schedule() for p in crossed]).scheduled_ns.tolist() == (
        TRACE.tolist()
    )


def test_arrivals_and_laws_pickle_and_compare():
    for arrivals in (
        poisson(300, NS, 10, 2),
        CONSTANT.arrivals(300, NS, 10, 2),
        Gamma(3).arrivals(300, NS, 10, 2),
        Timestamps(TRACE).arrivals(1, 1, 1, 9),
    ):
        back = pickle.loads(pickle.dumps(arrivals))
        assert back == arrivals
        assert np.array_equal(back.due_ns(), arrivals.due_ns())
    assert Poisson() == POISSON and Constant() != POISSON
    assert Timestamps(TRACE) == Timestamps(TRACE.copy()) and Timestamps(TRACE) != Timestamps(
        TRACE + 1
    )
    assert hash(_settings(arrival_law=Timestamps(TRACE))) == hash(
        _settings(arrival_law=Timestamps(TRACE.copy()))
    )


def test_a_trace_plays_through_run_server_in_this_process():
    settings = _settings(arrival_law=Timestamps(TRACE))

    async def go():
        target = FakeTarget(ServiceLaw("constant", 1 * MS), servers=8)
        await target.open()
        return await run_server(target, FAKE_MODEL, 8, settings, NS)

    measurement = asyncio.run(go())
    records = measurement.outcome.records
    assert np.array_equal(records.scheduled_ns, TRACE) and records.ok.all()
    client = measurement.client
    assert client is not None
    assert client.scheduled_gap_cv == pytest.approx(send_gap_cv(TRACE))
    written = client.to_dict()
    assert written["scheduled_gap_cv"] == round(send_gap_cv(TRACE), 4)
    assert isinstance(written["send_gaps_follow_schedule"], bool)


def test_a_trace_plays_sharded_over_two_worker_processes():
    trace = np.sort(np.random.default_rng(1).integers(0, NS, size=300)).astype(np.int64)
    settings = _settings(arrival_law=Timestamps(trace), schedule_seed=3)
    url = "fake://?servers=64&law=constant&service_ms=1"

    async def go():
        target = fake_from_url(url)
        model = await target.open()
        generator = Generator(
            ClientSettings(workers=2, cpu_count=4),
            TargetSettings(url=url, protocol=Protocol.GRPC, model="fake"),
        )
        return await run_server(target, model, 16, settings, 5 * NS, generator=generator)

    measurement = asyncio.run(go())
    assert measurement.client is not None and measurement.client.placement == "processes"
    assert np.array_equal(measurement.outcome.records.scheduled_ns, trace)
    whole = schedule_of(settings.arrivals, 16, settings.sample_seed)
    assert sorted(measurement.outcome.records.sample_index.tolist()) == sorted(
        whole.sample_index.tolist()
    )


# --- the sends judged against the schedule's own law ----------------------------------------------


def _sent(scheduled: np.ndarray, lag_ns: np.ndarray) -> Records:
    records = Records(scheduled_ns=scheduled, sample_index=np.zeros(len(scheduled), dtype=np.int32))
    records.issued_ns[:] = scheduled + lag_ns
    return records


def _report(records: Records):
    from loadtest.engine.runner import RunOutcome

    outcome = RunOutcome(records, 0, int(records.scheduled_ns[-1]), False, "")
    schedule = Schedule(records.scheduled_ns, records.sample_index)
    alone = shard_result(0, schedule, outcome, 0.1, np.zeros(0, np.int64), 0, MS)
    return client_report([alone], "in-process", "asyncio", records)


@pytest.mark.parametrize(
    "arrivals",
    [
        poisson(5000, 2 * NS, 1, 1),  # high rate
        poisson(2, NS, 12, 1),  # low rate, a dozen queries: the schedule's own CV is far from 1
        CONSTANT.arrivals(1000, NS, 1, 0),  # the schedule's own CV is 0
        Timestamps(TRACE).arrivals(1, 1, 1, 0),
    ],
    ids=["poisson 5000", "poisson 2 x 12", "constant 1000", "trace"],
)
def test_a_sender_that_keeps_its_schedule_follows_the_schedules_own_law(arrivals):
    scheduled = arrivals.due_ns()
    jitter = np.random.default_rng(0).uniform(0, 5_000, size=len(scheduled)).astype(np.int64)
    client = _report(_sent(scheduled, jitter))  # every send 0-5 µs late
    assert client.scheduled_gap_cv == pytest.approx(send_gap_cv(scheduled))
    assert client.sends_follow_schedule
    assert client.to_dict()["send_gaps_follow_schedule"] is True


def test_the_send_law_check_passes_a_gamma_sender_and_fails_a_poisson_one_claiming_gamma():
    gamma_times = Gamma(3).arrivals(1000, 2 * NS, 1, 5).due_ns()
    poisson_times = poisson(1000, 2 * NS, 1, 5).due_ns()
    n = min(len(gamma_times), len(poisson_times))
    jitter = np.random.default_rng(1).uniform(0, 5_000, size=n).astype(np.int64)
    on_time = _report(_sent(gamma_times[:n], jitter))
    assert on_time.sends_follow_schedule
    assert abs(on_time.scheduled_gap_cv - 3) < _gamma_bound(3, n)[1]
    # The schedule says gamma CV 3, but the sender paced its queries as Poisson.
    claims_gamma = _report(_sent(gamma_times[:n], poisson_times[:n] - gamma_times[:n]))
    assert not claims_gamma.sends_follow_schedule
    assert send_law_warning(claims_gamma).startswith("sends evened out against the schedule")


def test_a_small_poisson_run_passes_where_cv_1_would_not():
    """Twelve Poisson queries: their own CV is far from 1, yet sent on time they follow it."""
    scheduled = poisson(2, NS, 12, 1).due_ns()
    own = send_gap_cv(scheduled)
    assert abs(own - 1) > 0.05  # the old yardstick (CV within 1 ± 0.05) would call this unclean
    assert gaps_follow_schedule(send_gap_cv(scheduled + 1000), own)


def test_sends_that_follow_another_law_than_the_schedules_fail():
    poisson_times = poisson(1000, 2 * NS, 1, 3).due_ns()
    constant_times = CONSTANT.arrivals(1000, 2 * NS, 1, 0).due_ns()
    n = min(len(poisson_times), len(constant_times))
    # A constant-gap schedule sent with Poisson gaps, and a Poisson schedule sent evenly.
    bursty = _report(_sent(constant_times[:n], poisson_times[:n] - constant_times[:n]))
    assert not bursty.sends_follow_schedule
    evened = _report(_sent(poisson_times[:n], constant_times[:n] - poisson_times[:n]))
    assert not evened.sends_follow_schedule
    # A Poisson schedule sent on a 1 ms timer tick (clumps): the CV rises above its own.
    ticked = (poisson_times // MS + 1) * MS
    clumped = _report(_sent(poisson_times, ticked - poisson_times))
    assert clumped.send_gap_cv > clumped.scheduled_gap_cv and not clumped.sends_follow_schedule
    # The report says which way they went, against the schedule's own CV
    assert send_law_warning(clumped).startswith("sends clumped against the schedule")
    assert send_law_warning(evened).startswith("sends evened out against the schedule")
    assert "schedule's own" in send_gaps(clumped)


def test_the_rule_has_an_absolute_floor_and_nothing_to_judge_passes():
    assert gaps_follow_schedule(0.04, 0.0) and not gaps_follow_schedule(0.06, 0.0)
    assert gaps_follow_schedule(2.09, 2.0) and not gaps_follow_schedule(2.11, 2.0)
    assert gaps_follow_schedule(float("nan"), 1.0) and gaps_follow_schedule(1.0, float("nan"))


# --- result.json: the schedule's own CV added to `client`; older files still read ----------------


def test_result_json_gains_the_schedules_own_cv_and_older_files_still_read(tmp_path):
    from test_cli import expected_exit_code, loadtest

    out = tmp_path / "new"
    run = loadtest(
        "server", "--url", "fake://?servers=8&service_ms=1", "--qps", "200", "--duration", "1",
        "--target-latency", "50", "--output", str(out),
    )  # fmt: skip
    data = json.loads((out / "result.json").read_text())
    assert run.returncode == expected_exit_code(data), run.stdout + run.stderr
    assert "Server scenario: Poisson at 200 QPS" in run.stderr  # the title
    assert "schedule's own" in run.stdout and "(Poisson at 200 QPS, seed 0)" in run.stdout
    client = data["client"]
    assert data["schema_version"] == 1 and data["settings"]["arrival_law"] == {"name": "poisson"}
    assert 0.5 < client["scheduled_gap_cv"] < 1.5 and "send_gaps_follow_schedule" in client
    # The same file as a loadtest before the seam wrote it: no law, no schedule's own CV.
    for key in ("scheduled_gap_cv", "send_gaps_follow_schedule"):
        del data["client"][key]
    del data["settings"]["arrival_law"]
    old = tmp_path / "old" / "result.json"
    old.parent.mkdir()
    old.write_text(json.dumps(data))
    report = loadtest("report", str(old), str(out / "result.json"), "-o", str(tmp_path / "r.html"))
    assert report.returncode == 0, report.stderr
    diff = loadtest("diff", str(old), str(out / "result.json"))
    assert diff.returncode == 0, diff.stdout + diff.stderr  # the same run: no regression
    export = loadtest("export", str(old), "-o", str(tmp_path / "csv"))
    assert export.returncode == 0, export.stderr
