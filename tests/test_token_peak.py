"""find-peak and plan under LoadGen's token bounds (--ttft-bound, --tpot-bound, --mlperf-model).

The ratio the search reads is checked on hand-made records (percentiles over every issued query,
failures and one-token answers at +∞, TTFT from the schedule or from the send); the search runs
on the fake target, whose capacity and TPOT are known, and `plan` reads what it wrote.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_tokens import _records
from typer.testing import CliRunner

from loadtest.cli import app
from loadtest.core.records import NO_COUNT, Status
from loadtest.core.settings import PeakSettings
from loadtest.core.slos import parse_slo
from loadtest.core.units import NS_PER_MS
from loadtest.errors import SettingsError
from loadtest.rules.output_lengths import NO_MAX_TOKENS, output_lengths
from loadtest.rules.tokens import TokenBounds, fastest_ratio, token_ratio

MS = NS_PER_MS


def _ten() -> object:
    # TTFT from the schedule 10..100 ms (sent 5 ms late); 5 tokens, TPOT 1..10 ms
    scheduled = [0] * 10
    first = [(k + 1) * 10 * MS for k in range(10)]
    completed = [f + 4 * (k + 1) * MS for k, f in enumerate(first)]
    return _records(scheduled, [5 * MS] * 10, first, completed, [5] * 10, [5] * 10)


def test_the_ratio_is_the_worse_percentile_over_its_bound():
    records = _ten()
    # p90 of 10 = sorted[9]: TTFT 100 ms, TPOT 10 ms
    assert token_ratio(records, TokenBounds(200 * MS, 0, 0.9), 0) == 0.5
    assert token_ratio(records, TokenBounds(200 * MS, 5 * MS, 0.9), 0) == 2.0
    assert token_ratio(records, TokenBounds(0, 20 * MS, 0.5), 0) == 6 * MS / (20 * MS)
    # from the send: 5 ms less on TTFT, nothing off TPOT
    assert token_ratio(records, TokenBounds(200 * MS, 0, 0.9), 0, from_send=True) == 95 / 200
    # failures sit at +∞: p50 of 10 answers + 10 failures is a failure
    assert math.isinf(token_ratio(records, TokenBounds(200 * MS, 0, 0.5), 10))
    assert token_ratio(records, TokenBounds(200 * MS, 0, 0.5), 1) == 60 / 200
    # fastest answers: least TTFT from the send 5 ms, least TPOT 1 ms
    assert fastest_ratio(records, TokenBounds(10 * MS, 0)) == 0.5
    assert fastest_ratio(records, TokenBounds(10 * MS, MS // 2)) == 2.0


def test_one_token_answers_have_no_tpot_and_count_against_it():
    records = _ten()
    records.final_count[:5] = 1
    # TPOT of the 5 answers with 5 tokens (6..10 ms) + 5 at +∞: p50 = sorted[5] = ∞
    assert math.isinf(token_ratio(records, TokenBounds(0, 20 * MS, 0.5), 0))
    assert token_ratio(records, TokenBounds(0, 20 * MS, 0.4), 0) == 10 / 20


def test_peak_settings_hold_one_rule_and_say_it():
    settings = PeakSettings(
        target_latency_ns=50 * MS, ttft_bound_ns=500 * MS, tpot_bound_ns=50 * MS,
        token_bounds_source="MLPerf x",
    )  # fmt: skip
    assert settings.token_rule and not settings.goodput_rule
    assert "p99 TTFT ≤ 500 ms and p99 TPOT ≤ 50 ms" in settings.rule_text()
    probe = settings.probe(10.0, 100)
    assert (probe.ttft_bound_ns, probe.tpot_bound_ns) == (500 * MS, 50 * MS)
    with pytest.raises(SettingsError, match="one rule"):
        PeakSettings(target_latency_ns=MS, ttft_bound_ns=MS, goodput_target=0.9,
                     slos=(parse_slo("e2e:5"),))  # fmt: skip


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtest.cli", *args, "--no-live"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


URL = "fake://?servers=4&law=constant&service_ms=20&parts=3&part_ms=10"


def _find_peak(out: Path) -> subprocess.CompletedProcess[str]:
    # p90 keeps probes short (early stopping needs 58 queries at p90 ×1.3)
    return _cli("find-peak", "--url", URL, "--ttft-bound", "60", "--tpot-bound", "50",
                "--percentile", "90", "--start-qps", "70", "--probe-duration", "0.6",
                "--budget", "20", "--resolution", "0.15", "--late-threshold", "20",
                "--output", str(out), "--force")  # fmt: skip


@pytest.mark.solo
def test_find_peak_holds_the_token_bounds_near_the_known_capacity_and_plan_reads_it(
    tmp_path: Path,
):
    # 4 servers, each request holds one for 20 ms + 2 × 10 ms: capacity 100 QPS. TTFT is 20 ms
    # unloaded and TPOT 10 ms at any load, so TTFT's bound (60 ms) is the one that breaks, near
    # capacity (short probes overshoot it, as in test_goodput's search).
    capacity = 100.0
    out = tmp_path / "peak"
    done = _find_peak(out)
    data = json.loads((out / "find-peak.json").read_text())
    if data["upper_qps"] is None and "client fell behind" in data["conclusion"]:
        done = _find_peak(out)  # the shared machine stalled the generator: once more
        data = json.loads((out / "find-peak.json").read_text())
    assert done.returncode == 0, done.stdout + done.stderr
    rule = data["rule"]
    assert rule["name"] == "mlperf-tokens" and rule["percentile"] == 0.9
    assert (rule["ttft_bound_ns"], rule["tpot_bound_ns"]) == (60 * MS, 50 * MS)
    peak, upper = data["peak_qps"], data["upper_qps"]
    assert peak is not None and upper is not None, data["conclusion"]
    assert 0.6 * capacity <= peak <= 1.1 * capacity and upper > peak, data["conclusion"]
    held = next(p for p in data["probes"] if p["qps"] == peak)
    assert held["token_ratio"] <= 1 and held["ttft_ns"] <= 60 * MS
    assert 9 * MS <= held["tpot_ns"] <= 15 * MS  # the fake's 10 ms apart
    missed = next(p for p in data["probes"] if p["qps"] == upper)
    assert not missed["valid"] and any(
        "TTFT" in r for r in missed["reasons"]
    )  # p90 or its early stopping
    assert "p90 TTFT ≤ 60 ms and p90 TPOT ≤ 50 ms" in done.stdout

    planned = CliRunner().invoke(
        app, ["plan", "--target-qps", str(10 * peak), "--from", str(out / "find-peak.json"),
              "--output", str(tmp_path / "plan.json")],
    )  # fmt: skip
    assert planned.exit_code == 0, planned.output
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["rule"].startswith("find-peak's token rule")
    assert plan["slo"] == "p90 TTFT ≤ 60 ms and p90 TPOT ≤ 50 ms"
    assert plan["replicas"] == 13  # ceil(10 × peak / (0.8 × peak))
    refused = CliRunner().invoke(
        app, ["plan", "--target-qps", "10", "--from", str(out / "find-peak.json"),
              "--target-latency", "20"],
    )  # fmt: skip
    assert refused.exit_code == 1 and "token bounds" in str(refused.exception)


def test_a_tpot_bound_below_the_token_gap_is_unreachable_after_one_probe(tmp_path: Path):
    # every answer's tokens are 10 ms apart: a 5 ms TPOT bound holds at no rate
    done = _cli("find-peak", "--url", URL, "--tpot-bound", "5", "--percentile", "50",
                "--start-qps", "20", "--probe-duration", "0.3", "--budget", "20",
                "--output", str(tmp_path), "--force")  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    data = json.loads((tmp_path / "find-peak.json").read_text())
    assert data["status"] == "bound-unreachable" and len(data["probes"]) == 1
    assert "no rate can meet them" in data["conclusion"]
    assert data["rule"]["ttft_bound_ns"] == 0 and data["rule"]["tpot_bound_ns"] == 5 * MS


@pytest.mark.parametrize(
    "args, words",
    [
        (["find-peak", "--url", URL, "--mlperf-model", "llama2-70b", "--target-latency", "9"],
         "end-to-end bound"),
        (["find-peak", "--url", URL, "--ttft-bound", "9", "--slo", "e2e:5",
          "--goodput-target", "90"], "one rule"),
        (["find-peak", "--url", "fake://?servers=2", "--ttft-bound", "9", "--start-qps", "5"],
         "answers whole"),
        (["offline", "--url", URL, "--ttft-bound", "9"], "Offline"),
        (["single-stream", "--url", URL, "--mlperf-model", "llama2-70b"], "SingleStream"),
    ],
)  # fmt: skip
def test_token_bounds_where_they_do_not_apply_are_one_line(args: list[str], words: str):
    done = CliRunner().invoke(app, [*args, "--no-live"])
    assert done.exit_code == 1, done.output
    assert isinstance(done.exception, SettingsError)
    message = str(done.exception)
    assert "\n" not in message and words in message


def test_output_lengths_count_shorter_and_longer_answers_against_max_tokens():
    records = _ten()  # 10 answers of 5 tokens, samples 0
    records.sample_index[:] = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    records.final_count[9] = NO_COUNT  # no server count: not compared
    asked = np.array([5, 8, NO_MAX_TOKENS, 4])  # sample 1 asks more, 3 fewer, 2 nothing
    lengths = output_lengths(records, asked, ignore_eos=True)
    assert lengths is not None
    # compared: samples 0 (×3, equal), 1 (×2 with a count: shorter), 3 (×2: longer)
    assert (lengths.compared, lengths.shorter, lengths.longer) == (7, 2, 2)
    assert lengths.not_compared == 3 and lengths.mismatch_share == 4 / 7
    assert (lengths.requested_tokens, lengths.achieved_tokens) == (15 + 16 + 8, 35)
    text = lengths.text()
    assert "4 of 7 answers differ" in text and "not honouring it" in text and "server bug" in text
    assert "end-of-sequence" in output_lengths(records, asked).text()  # without ignore_eos
    assert output_lengths(records, np.full(4, NO_MAX_TOKENS)).compared == 0
    records.status[:] = Status.PENDING  # nothing answered: no comparison
    assert output_lengths(records, asked) is None
