"""Sharded generation: the arrival law of the merged shards, exact merges, worker processes."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from scipy import stats as scipy_stats
from typer.testing import CliRunner

from loadtest.cli import app
from loadtest.core.records import Records, Status
from loadtest.core.schedule import merged_schedule, server_schedule, shard_schedule
from loadtest.core.settings import ClientSettings, Protocol, ServerSettings, TargetSettings
from loadtest.engine.selfmeasure import send_gap_cv
from loadtest.errors import SettingsError
from loadtest.rules.stats import decode_histograms, encode_histogram, latency_histogram
from loadtest.scenarios.mlperf.interpret import interpret_server
from loadtest.scenarios.mlperf.play import Generator, run_server
from loadtest.shards.merge import merge_records
from loadtest.shards.plan import auto_worker_count
from loadtest.targets.fake import fake_from_url

NS = 1_000_000_000


def _merged(qps: float, shards: int, seconds: float = 20.0, seed: int = 3):
    return merged_schedule(
        [shard_schedule(qps, int(seconds * NS), 1, 16, seed, 1, k, shards) for k in range(shards)]
    )


@pytest.mark.parametrize("shards", [2, 4, 7])
def test_merged_shards_are_poisson_at_the_full_rate(shards):
    qps, seconds = 2000.0, 20.0
    times = _merged(qps, shards, seconds).scheduled_ns
    # Rate: the count of a Poisson process over T has sd sqrt(qps·T); allow 4 sd.
    expected = qps * seconds
    assert abs(len(times) - expected) < 4 * np.sqrt(expected)
    # Gaps: exponential with mean 1/qps (Kolmogorov–Smirnov), coefficient of variation 1.
    gaps = np.diff(times) / NS
    assert scipy_stats.kstest(gaps, "expon", args=(0, 1 / qps)).pvalue > 1e-3
    assert abs(gaps.std() / gaps.mean() - 1) < 0.03
    # Dispersion: counts per 100 ms window have variance ≈ mean (index of dispersion 1).
    counts = np.bincount((times // (NS // 10)).astype(int))[: int(seconds * 10)]
    assert abs(counts.var() / counts.mean() - 1) < 0.25


def test_shards_are_independent_streams_and_one_shard_is_the_plain_schedule():
    a = shard_schedule(1000, 5 * NS, 1, 16, 0, 1, 0, 2).scheduled_ns
    b = shard_schedule(1000, 5 * NS, 1, 16, 0, 1, 1, 2).scheduled_ns
    n = min(len(a), len(b))
    assert not np.array_equal(a[:n], b[:n])
    assert abs(np.corrcoef(np.diff(a[:n]), np.diff(b[:n]))[0, 1]) < 0.05
    # Each shard alone is Poisson at qps / shards (thinning): exponential gaps, mean 2 ms.
    assert scipy_stats.kstest(np.diff(a) / NS, "expon", args=(0, 2 / 1000)).pvalue > 1e-3
    one = shard_schedule(1000, 5 * NS, 100, 16, 0, 1, 0, 1)
    plain = server_schedule(1000, 5 * NS, 100, 16, 0, 1)
    assert np.array_equal(one.scheduled_ns, plain.scheduled_ns)
    assert np.array_equal(one.sample_index, plain.sample_index)


@pytest.mark.parametrize("shards", [2, 3, 7])
def test_the_same_seed_gives_the_same_arrivals_whatever_the_worker_count(shards):
    """A run's arrivals do not depend on how many processes play them (issue #13)."""
    plain = server_schedule(100, 15 * NS, 100, 16, 0, 1)
    merged = merged_schedule(
        [shard_schedule(100, 15 * NS, 100, 16, 0, 1, k, shards) for k in range(shards)]
    )
    assert np.array_equal(merged.scheduled_ns, plain.scheduled_ns)
    assert np.array_equal(merged.sample_index, plain.sample_index)


def test_shards_share_the_minimum_query_count():
    total = sum(len(shard_schedule(10, NS // 100, 1001, 4, 0, 1, k, 4)) for k in range(4))
    assert total == 1001


def test_hdr_merge_of_shards_equals_the_histogram_of_all_values():
    rng = np.random.default_rng(5)
    shards = [rng.lognormal(14, 1.2, size=n).astype(np.int64) for n in (5000, 7000, 1)]
    merged = decode_histograms(encode_histogram(latency_histogram(s)) for s in shards)
    whole = latency_histogram(np.concatenate(shards))
    assert merged.get_total_count() == whole.get_total_count() == 12001
    assert list(merged.counts) == list(whole.counts)
    for p in (50, 90, 99, 99.9, 100):
        assert merged.get_value_at_percentile(p) == whole.get_value_at_percentile(p)


def _records(scheduled, status, errors, kinds):
    records = Records(np.asarray(scheduled, np.int64), np.zeros(len(scheduled), np.int32))
    records.error_kinds = list(kinds)
    records.issued_ns[:] = records.scheduled_ns + 10
    records.completed_ns[:] = records.scheduled_ns + 100
    records.status[:] = status
    records.error_code[:] = errors
    return records


def test_merge_records_orders_by_due_time_and_renumbers_error_kinds():
    ok, err = Status.OK, Status.ERROR
    a = _records([0, 20, 40], [ok, err, err], [-1, 0, 1], ["timeout", "http 500: x"])
    b = _records([10, 30], [err, ok], [0, -1], ["http 500: x"])
    merged = merge_records([a, b])
    assert merged.scheduled_ns.tolist() == [0, 10, 20, 30, 40]
    assert merged.error_kinds == ["timeout", "http 500: x"]
    kinds = [merged.error_kinds[c] if c >= 0 else None for c in merged.error_code]
    assert kinds == [None, "http 500: x", "timeout", None, "http 500: x"]


def _fake_generator(url: str, workers: int) -> Generator:
    return Generator(
        ClientSettings(workers=workers, cpu_count=4),
        TargetSettings(url=url, protocol=Protocol.GRPC, model="fake"),
    )


def _run(url: str, qps: float, seconds: float, workers: int):
    settings = ServerSettings(
        qps=qps, target_latency_ns=50_000_000, min_duration_ns=int(seconds * NS)
    )

    async def play():
        target = fake_from_url(url)
        model = await target.open()
        return await run_server(
            target, model, 16, settings, 5 * NS, generator=_fake_generator(url, workers)
        )

    measurement = asyncio.run(play())
    return settings, measurement


def test_two_worker_processes_play_the_merged_schedule():
    settings, measurement = _run("fake://?servers=64&law=constant&service_ms=1", 400, 2.0, 2)
    records = measurement.outcome.records
    expected = merged_schedule([shard_schedule(400, 2 * NS, 100, 16, 0, 1, k, 2) for k in range(2)])
    assert np.array_equal(records.scheduled_ns, expected.scheduled_ns)
    assert records.ok.all()
    client = measurement.client
    assert client is not None and client.placement == "processes"
    assert [w.shard for w in client.workers] == [0, 1]
    assert len({w.pid for w in client.workers}) == 2
    assert sum(w.issued for w in client.workers) == len(records)
    assert all(w.loop_lag.probes > 0 for w in client.workers)
    # Client CPU counts every generator process: both workers and the coordinating parent.
    assert client.parent_cpu_s > 0
    workers_cpu_s = sum(w.cpu_s for w in client.workers)
    assert measurement.client_cpu_s == pytest.approx(workers_cpu_s + client.parent_cpu_s)
    # The merged HDR histogram holds every successful query.
    merged = decode_histograms([client.histograms["latency_from_scheduled"]])
    assert merged.get_total_count() == int(records.ok.sum())
    # A common start: both workers' first sends sit near their first due times.
    assert np.percentile(records.send_lag_ns(), 99) < 50_000_000
    summary, _ = interpret_server(settings, measurement.outcome)
    assert summary.scheduled == len(records)


def test_answers_in_parts_merge_exactly_across_worker_processes():
    url = "fake://?servers=64&law=constant&service_ms=1&parts=4&part_ms=1"
    _, measurement = _run(url, 300, 1.0, 2)
    records, client = measurement.outcome.records, measurement.client
    assert client is not None and len(client.workers) == 2
    ok = records.ok
    assert ok.sum() > 200
    assert (records.parts[ok] == 4).all() and (records.final_count[ok] == 4).all()
    assert (records.first_part_ns[ok] > records.issued_ns[ok]).all()
    # Each worker's gap histogram holds its own answers' gaps; the merge holds all of them.
    gaps = decode_histograms([client.histograms["part_gap"]])
    assert gaps.get_total_count() == 3 * int(ok.sum())
    assert measurement.outcome.part_gaps == client.histograms["part_gap"]
    first = decode_histograms([client.histograms["first_part_from_scheduled"]])
    assert first.get_total_count() == int(ok.sum())
    ttft = records.first_part_from_scheduled_ns()
    assert first.values_are_equivalent(first.get_max_value(), int(ttft.max()))


def test_workers_that_block_their_loop_are_flagged_client_bound():
    # Each query blocks its worker's loop for 4 ms against 2 ms mean gaps per worker.
    url = "fake://?servers=64&law=constant&service_ms=1&loop_block_ms=4"
    settings, measurement = _run(url, 1000, 1.0, 2)
    summary, verdict = interpret_server(settings, measurement.outcome)
    assert not summary.client_kept_up
    assert not verdict.valid
    assert measurement.client is not None
    assert not any(w.kept_up for w in measurement.client.workers)


def test_send_gap_cv_of_a_poisson_schedule_is_one_and_of_clumps_is_higher():
    times = server_schedule(5000, 10 * NS, 1, 4, 0, 1).scheduled_ns
    assert abs(send_gap_cv(times) - 1) < 0.03
    ticked = (times // 1_000_000) * 1_000_000  # a 1 ms timer tick, as uvloop's
    assert send_gap_cv(ticked) > 1.5


def test_automatic_worker_count_follows_the_rate_and_the_cores():
    assert auto_worker_count(100, "grpc", 8) == 1
    assert auto_worker_count(3000, "grpc", 8) == 1  # half of one worker's 6000
    assert auto_worker_count(3001, "grpc", 8) == 2
    assert auto_worker_count(20000, "grpc", 8) == 7
    assert auto_worker_count(20000, "grpc", 2) == 2
    assert auto_worker_count(30000, "http", 16) == 10


def test_more_workers_than_cores_is_refused():
    with pytest.raises(SettingsError, match="more than this machine's 2 CPU cores"):
        ClientSettings(workers=3, cpu_count=2)
    ClientSettings(workers=3, cpu_count=2, ray_address="auto")  # a cluster has its own cores


def test_cli_refuses_too_many_workers_in_one_line():
    result = CliRunner().invoke(
        app, ["server", "--url", "fake://", "--target-latency", "10", "--workers", "100000"]
    )
    assert result.exit_code == 1
    assert "CPU cores" in str(result.exception) or "CPU cores" in result.output


def test_ray_without_the_extra_is_one_clear_line():
    try:
        import ray  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("ray is installed here: tests/test_ray.py covers it")
    result = CliRunner().invoke(
        app,
        ["server", "--url", "fake://", "--target-latency", "10", "--ray", "auto", "--workers", "2"],
    )
    assert result.exit_code == 1
    assert "needs Ray" in str(result.exception) + result.output


def test_automatic_workers_leave_a_core_to_a_server_on_this_machine():
    local = Generator(ClientSettings(cpu_count=2), TargetSettings(url="127.0.0.1:8001"))
    remote = Generator(ClientSettings(cpu_count=2), TargetSettings(url="triton.example:8001"))
    assert local.worker_count(8000) == 1
    assert remote.worker_count(8000) == 2
    assert Generator(ClientSettings(workers=2, cpu_count=2), local.target).worker_count(10) == 2
