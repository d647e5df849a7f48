"""The Server schedule is a seeded Poisson process that meets LoadGen's stopping rule."""

import hashlib

import numpy as np
import pytest
from scipy import stats

from loadtest.core.arrivals import poisson
from loadtest.core.mix_schedule import Stream, entry_seed, mix_schedule, shard_of
from loadtest.core.schedule import (
    NS_PER_S,
    poisson_arrivals_ns,
    schedule_of,
    server_schedule,
    shard_schedule,
    shard_schedule_of,
    uniform_sample_indices,
)
from loadtest.core.settings import ServerSettings


def test_same_seed_same_schedule_and_different_seed_differs():
    a = server_schedule(500, 10 * NS_PER_S, 100, 64, schedule_seed=7, sample_seed=3)
    b = server_schedule(500, 10 * NS_PER_S, 100, 64, schedule_seed=7, sample_seed=3)
    c = server_schedule(500, 10 * NS_PER_S, 100, 64, schedule_seed=8, sample_seed=3)
    assert np.array_equal(a.scheduled_ns, b.scheduled_ns)
    assert np.array_equal(a.sample_index, b.sample_index)
    assert not np.array_equal(a.scheduled_ns[:100], c.scheduled_ns[:100])


def test_stopping_rule_duration_and_count():
    times = poisson_arrivals_ns(100, 20 * NS_PER_S, 10, seed=1)
    assert times[-1] >= 20 * NS_PER_S  # reaches the minimum duration ...
    assert times[-2] < 20 * NS_PER_S  # ... and stops right there
    many = poisson_arrivals_ns(100, 1 * NS_PER_S, 5000, seed=1)
    assert len(many) == 5000  # the query-count minimum dominates
    assert np.all(np.diff(many) >= 0)


def test_rate_gaps_are_exponential_and_counts_poisson():
    qps = 2000.0
    times = poisson_arrivals_ns(qps, 60 * NS_PER_S, 1, seed=42)
    gaps_s = np.diff(times) / NS_PER_S
    # rate: within 1 % (n ≈ 120k, so the standard error is ~0.3 %)
    assert abs(len(times) / (times[-1] / NS_PER_S) - qps) / qps < 0.01
    # exponential gaps: coefficient of variation 1 and a Kolmogorov–Smirnov fit
    assert abs(gaps_s.std() / gaps_s.mean() - 1) < 0.02
    assert stats.kstest(gaps_s, "expon", args=(0, 1 / qps)).pvalue > 0.001
    # counts per 100 ms window are Poisson: index of dispersion (var/mean) ≈ 1
    counts = np.bincount((times // (NS_PER_S // 10)).astype(int))[:-1]
    assert abs(counts.var() / counts.mean() - 1) < 0.1


def test_sample_indices_uniform_over_library():
    idx = uniform_sample_indices(64_000, 64, seed=5)
    assert idx.min() == 0 and idx.max() == 63
    assert stats.chisquare(np.bincount(idx, minlength=64)).pvalue > 0.001


def test_chunked_generation_is_prefix_stable():
    short = poisson_arrivals_ns(300, 1 * NS_PER_S, 1, seed=9)
    long = poisson_arrivals_ns(300, 30 * NS_PER_S, 1, seed=9)
    assert np.array_equal(short, long[: len(short)])


@pytest.mark.parametrize("qps", [0, -1])
def test_rejects_nonpositive_rate(qps):
    with pytest.raises(ValueError):
        poisson_arrivals_ns(qps, NS_PER_S, 1, seed=0)


# Pinned from the code before the arrival seam (a4e3850): the same seeds give the same schedules,
# bit for bit, whether drawn through settings.arrivals, the bare-number helpers, a shard or a mix.
def _digest(schedule) -> str:
    return hashlib.sha256(
        schedule.scheduled_ns.tobytes() + schedule.sample_index.tobytes()
    ).hexdigest()[:16]


def test_poisson_schedules_are_bit_identical_to_before_the_seam():
    settings = ServerSettings(
        qps=500,
        target_latency_ns=10**7,
        min_duration_ns=2 * NS_PER_S,
        min_query_count=100,
        schedule_seed=7,
        sample_seed=3,
    )
    for schedule in (
        schedule_of(settings.arrivals, 64, settings.sample_seed),
        server_schedule(500, 2 * NS_PER_S, 100, 64, 7, 3),
    ):
        assert len(schedule) == 1019 and schedule.scheduled_ns[-1] == 2_000_318_568
        assert schedule.scheduled_ns[:4].tolist() == [1415059, 3465465, 4602563, 6392782]
        assert schedule.sample_index[:6].tolist() == [51, 5, 11, 15, 11, 51]
        assert _digest(schedule) == "9994ce1b75db0627"
    shard = shard_schedule(500, 2 * NS_PER_S, 100, 64, 7, 3, 1, 3)
    assert len(shard) == 333 and _digest(shard) == "9b1bb6f12ac28418"
    assert _digest(shard_schedule_of(settings.arrivals, 64, 3, 1, 3)) == "9b1bb6f12ac28418"
    times = poisson_arrivals_ns(100, NS_PER_S // 10, 1000, 5)
    assert len(times) == 1000 and times[-1] == 9_505_552_445
    assert hashlib.sha256(times.tobytes()).hexdigest()[:16] == "8d3e00379c8b3927"


def test_mix_schedules_are_bit_identical_to_before_the_seam():
    mix = mix_schedule(
        [
            Stream(poisson(300.0, 2 * NS_PER_S, 600, entry_seed(0, 0)), 16, 1),
            Stream(poisson(100.0, 2 * NS_PER_S, 600, entry_seed(0, 1)), 8, 2),
        ]
    )
    assert len(mix.schedule) == 1200 and _digest(mix.schedule) == "660ef3950d13759e"
    dealt = shard_of(mix.schedule, 7, 2, 3)
    assert len(dealt) == 409 and _digest(dealt) == "8e6a13e7ec3c1cad"
