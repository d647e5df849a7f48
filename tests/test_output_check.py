"""--check-outputs and --same-sample without a server: the comparison rules, the seeded sampling,
the cache judgement, and a fake target that corrupts 1 % of its answers caught end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_cli import assert_one_clear_error, loadtest

from loadtest.core.schedule import check_mask
from loadtest.rules.cache_check import judge_cache
from loadtest.rules.output_check import (
    DTYPE_MISMATCH,
    MISSING_OUTPUT,
    SHAPE_MISMATCH,
    UNEXPECTED_OUTPUT,
    VALUE_MISMATCH,
    compare,
    detection_probability,
    queries_to_detect,
    tolerance_for,
)

REF = {"OUT": np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)}


def test_compare_names_each_kind_of_mismatch():
    assert compare(REF, {"OUT": REF["OUT"].copy()}) is None
    assert compare(REF, {}) == MISSING_OUTPUT
    assert compare(REF, {"OUT": REF["OUT"].astype(np.float64)}) == DTYPE_MISMATCH
    assert compare(REF, {"OUT": REF["OUT"].reshape(16)}) == SHAPE_MISMATCH
    off = REF["OUT"].copy()
    off[0, 3] += 1e-3
    assert compare(REF, {"OUT": off}) == VALUE_MISMATCH
    extra = {"OUT": REF["OUT"], "MORE": REF["OUT"]}
    assert compare(REF, extra) == UNEXPECTED_OUTPUT


def test_float_tolerance_admits_reordered_sums_and_integers_are_exact():
    close = REF["OUT"] * np.float32(1 + 2e-6)  # a few ULPs: another ORT build's summation order
    assert compare(REF, {"OUT": close}) is None
    ints = {"IDS": np.array([[3, 1, 2]], dtype=np.int64)}
    assert compare(ints, {"IDS": np.array([[3, 2, 1]], dtype=np.int64)}) == VALUE_MISMATCH
    assert tolerance_for("int64").describe() == "exact"
    assert tolerance_for("float32").describe() == "rtol 0.0001, atol 1e-05"


def test_sampling_is_seeded_and_continues_across_blocks():
    whole = check_mask(10_000, 0.01, seed=7)
    blocks = np.concatenate([check_mask(3000, 0.01, 7), check_mask(7000, 0.01, 7, start=3000)])
    assert np.array_equal(whole, blocks)
    assert not np.array_equal(whole, check_mask(10_000, 0.01, seed=8))
    assert 60 < whole.sum() < 140  # ≈ 100: binomial(10 000, 1 %), > 4 sigma either way
    assert not check_mask(100, 0.0, 7).any()


# The fake corrupts 1 % of answers; each query is sampled with probability RATE, independently,
# so each query reveals a corruption with probability RATE × 1 % and a run of QUERIES misses
# every one with probability (1 − RATE × 0.01) ** QUERIES.
RATE = 0.5
CORRUPT = 0.01
QUERIES = 3000


def test_the_stated_run_misses_a_one_percent_corruption_with_probability_below_1e6():
    assert queries_to_detect(RATE, CORRUPT, 1e-6) <= QUERIES
    miss = 1 - detection_probability(RATE, CORRUPT, QUERIES)
    assert miss < 1e-6
    assert math.isclose(miss, (1 - RATE * CORRUPT) ** QUERIES)


def _offline_on_fake(out: Path, corrupt: float) -> dict:
    url = f"fake://?servers=64&law=constant&service_ms=0.05&corrupt={corrupt}"
    # requests = 1.1 × duration × expected QPS = 3000
    result = loadtest(
        "offline", "--url", url, "--model", "fake", "--duration", "0.1",
        "--expected-qps", str(QUERIES / 0.11), "--check-outputs", str(RATE),
        "--output", str(out), "--no-live",
    )  # fmt: skip
    data = json.loads((out / "result.json").read_text())
    assert data["summary"]["completed_ok"] == QUERIES, result.stderr
    assert result.returncode == (0 if data["verdict"]["valid"] else 3), result.stderr
    return data


def test_a_fake_that_corrupts_one_percent_of_answers_is_caught(tmp_path: Path):
    data = _offline_on_fake(tmp_path / "bad", CORRUPT)
    check = data["output_check"]
    assert check["sampled"] == check["checked"] > 0.4 * QUERIES  # every sampled answer compared
    assert check["mismatches_by_kind"].get("value mismatch", 0) >= 1
    assert check["passed"] is False and data["verdict"]["valid"] is False
    names = {c["name"]: c["passed"] for c in data["verdict"]["checks"]}
    assert names["outputs match reference"] is False
    assert data["output_check"]["tolerance"] == {"OUTPUT0": "rtol 0.0001, atol 1e-05"}


def test_a_correct_fake_passes_the_output_check(tmp_path: Path):
    data = _offline_on_fake(tmp_path / "good", 0.0)
    check = data["output_check"]
    assert check["passed"] is True and check["mismatched"] == 0 and check["checked"] > 1000
    names = {c["name"]: c["passed"] for c in data["verdict"]["checks"]}
    assert names["outputs match reference"] is True


def test_single_stream_checks_outputs_past_its_first_block(tmp_path: Path):
    """Streams grow their query arrays as they play; the sampling mask grows with them."""
    out = tmp_path / "stream"
    loadtest(
        "single-stream", "--url", "fake://?law=constant&service_ms=0.01", "--model", "fake",
        "--duration", "0.1", "--min-queries", "2500", "--target-latency", "50",
        "--check-outputs", "0.1", "--output", str(out), "--no-live",
    )  # fmt: skip
    data = json.loads((out / "result.json").read_text())
    assert data["summary"]["completed_ok"] >= 2500
    check = data["output_check"]
    assert check["sampled"] == check["checked"] and check["passed"] is True
    assert 150 < check["checked"] < 350  # ≈ 10 % of ≥ 2500


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--check-outputs", "1.5"], "--check-outputs must be a fraction in [0, 1], got 1.5"),
        (["--check-outputs", "0.1", "--workers", "2"], "--check-outputs compares answers kept"),
    ],
)
def test_bad_check_flags_are_one_clear_line(args: list[str], message: str):
    result = loadtest(
        "server", "--url", "fake://", "--model", "fake", "--target-latency", "10",
        "--duration", "0.2", "--qps", "50", "--no-live", *args,
    )  # fmt: skip
    assert_one_clear_error(result, message)


def test_cache_judgement_flags_a_fast_repeat_and_not_noise():
    rng = np.random.Generator(np.random.PCG64(3))
    unique = rng.normal(600_000, 60_000, 200)
    cached = judge_cache(unique, rng.normal(250_000, 30_000, 200))
    assert cached.possible_cache and cached.ratio_high < 0.5
    alike = judge_cache(unique, rng.normal(590_000, 60_000, 200))  # a CPU-cache-sized gain
    assert not alike.possible_cache
    assert alike.ratio_low < 1 < alike.ratio_high or alike.ratio_high > 0.9


def test_same_sample_on_the_fake_stays_quiet(tmp_path: Path):
    out = tmp_path / "same"
    loadtest(
        "single-stream", "--url", "fake://?law=constant&service_ms=0.3", "--model", "fake",
        "--duration", "0.2", "--min-queries", "10", "--target-latency", "50",
        "--same-sample", "--output", str(out), "--no-live",
    )  # fmt: skip
    data = json.loads((out / "result.json").read_text())
    cache = data["cache_check"]
    assert cache["possible_cache"] is False and cache["pairs"] == 200
    assert cache["server_cache_hits"] is None  # no Triton behind the fake
