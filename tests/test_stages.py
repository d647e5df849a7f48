"""Load stages (core/stages.py): the parser's one-line errors, each stage's own rate within its
sampling error for every renewal law, ramps, the stage each query belongs to, and the profile
carried through settings, shards and pickling."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest

from loadtest.core.arrivals import CONSTANT, POISSON, Gamma, Timestamps
from loadtest.core.schedule import merged_schedule, schedule_of, shard_schedule_of
from loadtest.core.settings import ServerSettings
from loadtest.core.stages import (
    MAX_PROFILE_NS,
    RateProfile,
    Stage,
    Staged,
    parse_duration_ns,
    parse_stages,
)
from loadtest.errors import SettingsError
from loadtest.report.results import plain

NS = 1_000_000_000
MS = 1_000_000
Z = 5.0  # standard errors: a seeded test that could only fail by a one-in-a-million draw


def _arrivals(law, spec: str, seed: int = 0):
    profile = parse_stages(spec)
    return Staged(law, profile).arrivals(profile.mean_qps, 1, 1, seed)


# --- the parser ----------------------------------------------------------------------------------


def test_steps_ramps_and_ramps_from_the_previous_stage_parse():
    profile = parse_stages("30s:100, 60s:100->400 ,1m30s:->0,500ms:7.5")
    assert profile.stages == (
        Stage(30 * NS, 100, 100),
        Stage(60 * NS, 100, 400),
        Stage(90 * NS, 400, 0),
        Stage(500 * MS, 7.5, 7.5),
    )
    assert parse_stages(profile.spec()) == profile  # the written form reads back
    assert profile.bounds_ns.tolist() == [0, 30 * NS, 90 * NS, 180 * NS, 180 * NS + 500 * MS]
    expected = 100 * 30 + 250 * 60 + 200 * 90 + 7.5 * 0.5
    assert profile.expected_count == expected
    assert profile.mean_qps == pytest.approx(expected / 180.5)
    assert parse_duration_ns("1h") == 3600 * NS and parse_duration_ns("0.25s") == 250 * MS


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("", "--stages is empty"),
        ("30s", r"stage 1 '30s': want DURATION:RATE"),
        ("30:100", r"stage 1 '30:100': the duration '30' needs a unit"),
        ("x:1", "is not like 30s"),
        ("10s:5,,10s:5", r"stage 2 '': want DURATION:RATE"),
        ("30s:abc", "the rate 'abc' is not a number"),
        ("30s:nan", "the rate 'nan' is not a finite number"),
        ("30s:inf", "not a finite number"),
        ("30s:10->-inf", "not a finite number"),
        ("30s:-1", "the rate '-1' is negative"),
        ("0s:5", "the duration '0s' is zero"),
        ("0.0000001ms:5,1s:1", r"stage 1 .*is zero"),  # under 1 ns
        ("10s:0,5s:0", "offer no queries"),
        ("30s:->5", "the first stage cannot ramp from a previous one"),
        ("99999999999999999999h:1", "more than a year"),  # would overflow int64 ns
        ("200d:1", "is not like"),
        ("300000h:1,300000h:1", "more than a year"),
        ("1s:1e12", "more than 1e\\+09"),
    ],
)
def test_a_bad_profile_is_one_clear_line(spec, says):
    with pytest.raises(SettingsError, match=says) as caught:
        parse_stages(spec)
    assert "\n" not in str(caught.value)


def test_the_profile_refuses_what_the_parser_would():
    with pytest.raises(SettingsError, match="at least one stage"):
        RateProfile(())
    with pytest.raises(SettingsError, match="duration > 0"):
        RateProfile((Stage(0, 1, 1),))
    with pytest.raises(SettingsError, match="finite and ≥ 0"):
        RateProfile((Stage(NS, math.nan, 1),))
    with pytest.raises(SettingsError, match="more than a year"):
        RateProfile((Stage(MAX_PROFILE_NS + 1, 1, 1),))
    with pytest.raises(SettingsError, match="renewal law"):
        Staged(Timestamps(np.array([0, 1])), parse_stages("1s:1"))  # type: ignore[arg-type]


# --- each stage's own rate ------------------------------------------------------------------------


@pytest.mark.parametrize("law", [POISSON, Gamma(2.0), Gamma(0.5), CONSTANT], ids=str)
def test_each_step_stage_plays_its_own_rate_within_sampling_error(law):
    arrivals = _arrivals(law, "20s:100,20s:800,20s:50,10s:0,20s:300", seed=4)
    due = arrivals.due_ns()
    assert np.all(np.diff(due) >= 0) and due[0] >= 0 and due[-1] <= 90 * NS
    counts = np.bincount(arrivals.stage_index(due), minlength=5)
    for count, stage in zip(counts, arrivals.profile.stages, strict=True):
        expected = stage.expected_count
        # A renewal count over a span has variance ≈ expected · CV² (+ one gap at each edge).
        sd = math.sqrt(expected * law.gap_cv**2 + 4)
        assert abs(count - expected) <= Z * sd, (count, expected)
    assert counts[3] == 0  # a pause is a pause


def test_within_a_step_the_law_keeps_its_own_gap_cv():
    arrivals = _arrivals(Gamma(2.0), "30s:200,30s:2000", seed=1)
    due = arrivals.due_ns()
    stage = arrivals.stage_index(due)
    for k, qps in enumerate((200, 2000)):
        gaps = np.diff(due[stage == k]).astype(float)
        n = len(gaps)
        assert abs(gaps.mean() * qps / NS - 1) < Z * 2 / math.sqrt(n)
        assert abs(gaps.std() / gaps.mean() - 2) < Z * 2 * math.sqrt((1 + 4) / (2 * n))


def test_a_ramp_rises_linearly_and_its_halves_hold_their_expected_counts():
    arrivals = _arrivals(POISSON, "40s:0->1000", seed=2)
    due = arrivals.due_ns()
    # Λ(t) = 1000 t² / (2 · 40) over [0, 40 s]: the first half holds a quarter of 20 000
    first, second = int(np.sum(due < 20 * NS)), int(np.sum(due >= 20 * NS))
    assert abs(first - 5000) <= Z * math.sqrt(5000) and abs(second - 15000) <= Z * math.sqrt(15000)
    # each 4 s slice: the rate at its middle × 4 s
    counts = np.bincount(due // (4 * NS), minlength=10)[:10]
    for k, count in enumerate(counts):
        expected = 1000 * (4 * k + 2) / 40 * 4
        assert abs(count - expected) <= Z * math.sqrt(expected), (k, count, expected)
    down = _arrivals(POISSON, "40s:1000->0", seed=2).due_ns()
    assert abs(int(np.sum(down < 20 * NS)) - 15000) <= Z * math.sqrt(15000)


def test_constant_over_a_ramp_is_exactly_lambda_inverse_of_the_integers():
    arrivals = _arrivals(CONSTANT, "10s:0->20", seed=0)
    due = arrivals.due_ns()
    assert len(due) == 100  # Λ(10 s) = 100: queries at Λ = 1, 2, ..., 100
    expected = np.round(np.sqrt(np.arange(1, 101) * 2 * 10 / 20) * NS).astype(np.int64)
    assert np.abs(due - expected).max() <= 1
    assert due[-1] == 10 * NS


def test_the_rate_scales_the_shape_and_the_profile_is_the_whole_run():
    profile = parse_stages("10s:100,10s:300")
    assert profile.mean_qps == 200
    settings = ServerSettings(
        qps=400, target_latency_ns=50 * MS, arrival_law=Staged(POISSON, profile)
    )
    arrivals = settings.arrivals  # min duration (600 s by default) does not apply
    assert arrivals.profile.stages == (Stage(10 * NS, 200, 200), Stage(10 * NS, 600, 600))
    assert arrivals.describe() == "Poisson over 2 stages 10s:200,10s:600 ×2 (mean 400 QPS)"
    due = arrivals.due_ns()
    assert due[-1] <= 20 * NS and abs(len(due) - 8000) <= Z * math.sqrt(8000)
    as_written = Staged(POISSON, profile).arrivals(200, 1, 1, 0)
    assert as_written.factor == 1 and as_written.profile is profile
    assert as_written.describe() == "Poisson over 2 stages 10s:100,10s:300 (mean 200 QPS)"


def test_stage_boundaries_and_indices():
    arrivals = _arrivals(POISSON, "1s:10,1s:0,1s:10")
    bounds = arrivals.stage_bounds_ns
    assert bounds.tolist() == [0, NS, 2 * NS, 3 * NS]
    probe = np.array([0, 1, NS, NS + 1, 2 * NS, 2 * NS + 1, 3 * NS])
    assert arrivals.stage_index(probe).tolist() == [0, 0, 0, 1, 1, 2, 2]  # (start, end]
    assert arrivals.expected_gap_cv is None
    assert _arrivals(Gamma(3), "5s:10").expected_gap_cv == 3


def test_staged_schedules_are_seeded_shard_exactly_pickle_and_are_written_by_fields():
    law = Staged(Gamma(1.5), parse_stages("2s:100,2s:100->500"))
    arrivals = law.arrivals(law.profile.mean_qps, 1, 1, 9)
    assert np.array_equal(arrivals.due_ns(), law.arrivals(law.profile.mean_qps, 1, 1, 9).due_ns())
    assert not np.array_equal(
        arrivals.due_ns(), law.arrivals(law.profile.mean_qps, 1, 1, 8).due_ns()
    )
    whole = schedule_of(arrivals, 8, 1)
    parts = [shard_schedule_of(arrivals, 8, 1, k, 3) for k in range(3)]
    assert np.array_equal(merged_schedule(parts).scheduled_ns, whole.scheduled_ns)
    back = pickle.loads(pickle.dumps(arrivals))
    assert back == arrivals and np.array_equal(back.due_ns(), arrivals.due_ns())
    settings = ServerSettings(qps=200, target_latency_ns=MS, arrival_law=law)
    written = json.loads(json.dumps(plain(settings)))["arrival_law"]
    assert written == {
        "law": {"cv": 1.5, "name": "gamma"},
        "profile": {
            "stages": [
                {"duration_ns": 2 * NS, "start_qps": 100.0, "end_qps": 100.0},
                {"duration_ns": 2 * NS, "start_qps": 100.0, "end_qps": 500.0},
            ]
        },
        "name": "staged",
    }
