"""LoadGen's token figures and checks (rules/tokens.py), on hand-made records and the fake target.

The figures must follow LoadGen's definitions where a plausible meter would not: TTFT from the
scheduled time (not the send), TPOT per query with the first token excluded, n_tokens ≤ 1 an
error, percentiles sorted[floor(n·p)], completed tokens/s = Σ n / the last completion.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from loadtest.commands.common import token_bound_fields
from loadtest.core.records import NO_COUNT, Records, Status
from loadtest.core.schedule import Schedule
from loadtest.core.settings import Protocol
from loadtest.core.units import NS_PER_MS
from loadtest.engine.runner import Runner
from loadtest.errors import SettingsError
from loadtest.rules.tokens import (
    CONTENT_CHUNK_COUNT,
    RESPONSE_COUNT,
    SERVER_COUNT,
    USAGE_COUNT,
    TokenBounds,
    counting_of,
    token_checks,
    token_figures,
)
from loadtest.rules.validity import server_early_stopping
from loadtest.targets.fake import fake_from_url
from loadtest.targets.triton_stream import id_field, token_count
from loadtest.targets.wrapper import TargetWrapper

MS = NS_PER_MS


def _records(scheduled, issued, first, completed, counts, parts) -> Records:
    records = Records(np.asarray(scheduled, np.int64), np.zeros(len(scheduled), np.int32))
    records.issued_ns[:] = issued
    records.first_part_ns[:] = first
    records.completed_ns[:] = completed
    records.final_count[:] = counts
    records.parts[:] = parts
    records.status[:] = Status.OK
    return records


def test_ttft_is_from_the_scheduled_time_and_tpot_excludes_the_first_token():
    # Query 0 left 30 ms late; each: first token 100 ms after its send, 9 more 10 ms apart.
    records = _records(
        scheduled=[0, 1000 * MS],
        issued=[30 * MS, 1000 * MS],
        first=[130 * MS, 1100 * MS],
        completed=[220 * MS, 1190 * MS],
        counts=[10, 10],
        parts=[10, 5],
    )
    figures = token_figures(records)
    assert figures is not None
    assert figures.ttft.max_ns == 130 * MS and figures.ttft.min_ns == 100 * MS  # scheduled
    assert figures.ttft_from_send.max_ns == 100 * MS == figures.ttft_from_send.min_ns
    assert figures.tpot.min_ns == figures.tpot.max_ns == 10 * MS  # (e2e − TTFT)/(n − 1)
    assert figures.tokens == 20 and figures.token_source == SERVER_COUNT
    assert figures.tokens_per_chunk_mean == pytest.approx(20 / 15)
    assert figures.tokens_per_chunk_max == 2
    assert figures.completed_tokens_per_s == pytest.approx(20 / 1.19)
    assert figures.one_token_answers == 0


def test_percentiles_are_loadgens_index_over_queries():
    n = 100
    ttft = np.arange(1, n + 1) * MS  # 1..100 ms, one per query
    records = _records(
        scheduled=np.zeros(n),
        issued=np.zeros(n),
        first=ttft,
        completed=ttft + 9 * MS,
        counts=np.full(n, 10),
        parts=np.full(n, 10),
    )
    bounds = TokenBounds(ttft_ns=100 * MS - 1, tpot_ns=MS)
    checks = {c.name: c for c in token_checks(records, bounds)}
    # sorted[floor(100·0.99)] = the 100th value, 100 ms: over a bound 1 ns below it
    assert not checks["p99 TTFT"].passed and "100.000 ms" in checks["p99 TTFT"].detail
    assert checks["p99 TPOT"].passed  # every TPOT is exactly 1 ms
    assert checks["token counts"].passed
    # early stopping on each array: 100 queries are too few at p99 even with none over
    assert not checks["early stopping TPOT"].passed
    assert "459 needed" in checks["early stopping TPOT"].detail


def test_early_stopping_runs_on_ttft_and_on_tpot_separately():
    n = 500
    ttft = np.full(n, 50 * MS)
    ttft[:3] = 500 * MS  # three TTFTs over the bound, every TPOT under its own
    records = _records(np.zeros(n), np.zeros(n), ttft, ttft + 90 * MS, np.full(n, 10), np.ones(n))
    checks = {c.name: c for c in token_checks(records, TokenBounds(100 * MS, 20 * MS))}
    assert checks["p99 TTFT"].passed  # sorted[495] is 50 ms
    assert not checks["early stopping TTFT"].passed and "3 over" in (
        checks["early stopping TTFT"].detail
    )
    assert checks["early stopping TPOT"].passed


def test_a_one_token_answer_is_flagged_and_has_no_tpot():
    records = _records(
        scheduled=[0, 0],
        issued=[0, 0],
        first=[50 * MS, 50 * MS],
        completed=[50 * MS, 80 * MS],
        counts=[1, 4],
        parts=[1, 4],
    )
    figures = token_figures(records)
    assert figures is not None and figures.one_token_answers == 1 and figures.tpot.count == 1
    checks = {c.name: c for c in token_checks(records, TokenBounds())}
    assert not checks["token counts"].passed and "1 answers of ≤ 1 token" in (
        checks["token counts"].detail
    )


def test_without_a_server_count_the_responses_stand_in_and_say_so():
    records = _records([0], [0], [10 * MS], [40 * MS], [NO_COUNT], [4])
    figures = token_figures(records)
    assert figures is not None
    assert figures.tokens == 4 and figures.token_source == RESPONSE_COUNT


def test_each_api_says_where_its_count_came_from():
    """Over an OpenAI API the server's count is usage.completion_tokens and the stand-in is the
    content chunks; the labels follow the protocol, the arithmetic is the same."""
    counted = _records([0], [0], [10 * MS], [40 * MS], [7], [7])
    uncounted = _records([0], [0], [10 * MS], [40 * MS], [NO_COUNT], [4])
    for protocol, server, fallback in (
        (Protocol.OPENAI_CHAT, USAGE_COUNT, CONTENT_CHUNK_COUNT),
        (Protocol.HTTP_STREAM, SERVER_COUNT, RESPONSE_COUNT),
    ):
        counting = counting_of(protocol)
        with_count = token_figures(counted, counting)
        without = token_figures(uncounted, counting)
        assert with_count is not None and without is not None
        assert (with_count.tokens, with_count.token_source) == (7, server)
        assert (without.tokens, without.token_source) == (4, fallback)
        checks = token_checks(uncounted, TokenBounds(), counting)
        assert fallback in checks[0].detail


def test_no_streamed_query_no_figures():
    records = Records(np.zeros(3, np.int64), np.zeros(3, np.int32))
    records.status[:] = Status.OK
    assert token_figures(records) is None


class LateSend(TargetWrapper):
    """Writes each request `late_s` after the runner asks, stamping the send then (`written`),
    as a client queue would: the schedule's lateness a TTFT from the send cannot see."""

    def __init__(self, inner, late_s: float) -> None:
        super().__init__(inner)
        self.late_s = late_s

    def start_parts(self, sample_index, parts, written=None) -> None:
        def send() -> None:
            if written is not None:
                written()
            self.inner.start_parts(sample_index, parts)

        asyncio.get_running_loop().call_later(self.late_s, send)


def _play(url: str, count: int, gap_ms: float = 0.0, late_s: float = 0.0):
    target = fake_from_url(url)
    played = LateSend(target, late_s) if late_s else target
    due = (np.arange(count) * gap_ms * MS).astype(np.int64)
    schedule = Schedule(due, np.zeros(count, np.int32))

    async def play():
        await played.open()
        return await Runner(schedule, played).run(handle_sigint=False)

    return asyncio.run(play()).records


def test_the_fake_streams_a_known_answer_and_the_figures_find_it():
    # TTFT 40 ms, then 7 more parts 10 ms apart: TPOT 10 ms. Counting the first token in TPOT
    # (e2e / n = 110/8 ≈ 13.8 ms) or a per-part average over the whole answer would miss it.
    records = _play("fake://?servers=64&law=constant&service_ms=40&parts=8&part_ms=10", 20, 20)
    figures = token_figures(records)
    assert figures is not None and figures.queries == 20
    assert (records.final_count[records.ok] == 8).all() and figures.tokens == 160
    assert 10 * MS <= figures.tpot.p50_ns < 11.5 * MS  # asyncio.sleep overshoots a little
    e2e = records.completed_ns - records.scheduled_ns
    first_counted = np.median(e2e / 8)
    assert first_counted > 13 * MS  # the wrong meter is far off
    assert 40 * MS <= figures.ttft.p50_ns < 43 * MS


def test_a_late_send_stays_in_ttft_from_the_schedule_and_cancels_out_of_tpot():
    # Every request leaves 50 ms after it was due (a client queue): TTFT from the schedule
    # carries those 50 ms, TTFT from the send does not, and TPOT is untouched.
    url = "fake://?servers=64&law=constant&service_ms=20&parts=4&part_ms=5"
    records = _play(url, 10, 10, late_s=0.05)
    figures = token_figures(records)
    assert figures is not None
    lag = records.issued_ns - records.scheduled_ns
    assert (lag >= 50 * MS).all()
    assert np.array_equal(
        (records.first_part_ns - records.scheduled_ns)
        - (records.first_part_ns - records.issued_ns),
        lag,
    )
    assert figures.ttft.min_ns >= 70 * MS and figures.ttft_from_send.max_ns < 30 * MS
    assert figures.tpot.max_ns < 8 * MS  # the lateness is not spread over the tokens


def test_one_part_answers_fail_the_token_rule():
    records = _play("fake://?servers=8&law=constant&service_ms=2&parts=1", 5, 5)
    checks = {c.name: c for c in token_checks(records, TokenBounds())}
    assert not checks["token counts"].passed


def test_token_bounds_from_mlperf_and_flags():
    assert token_bound_fields(None, None, None) == {}
    fields = token_bound_fields(None, None, "llama2-70b")
    assert fields["ttft_bound_ns"] == 2000 * MS and fields["tpot_bound_ns"] == 200 * MS
    assert "mlperf.conf" in fields["token_bounds_source"]
    mixed = token_bound_fields(None, 30, "llama3_1-8b-interactive")
    assert mixed["ttft_bound_ns"] == 500 * MS and mixed["tpot_bound_ns"] == 30 * MS
    assert mixed["token_bounds_source"].startswith("--tpot-bound")
    with pytest.raises(SettingsError, match="is not one of"):
        token_bound_fields(None, None, "gpt-5")
    with pytest.raises(SettingsError, match="--ttft-bound must be > 0"):
        token_bound_fields(0, None, None)


def test_the_id_appended_to_a_prebuilt_request_is_the_requests_id():
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name="m")
    request.parameters["triton_enable_empty_final_response"].bool_param = True
    for rid in ("1", "12345", "x" * 300):
        parsed = service_pb2.ModelInferRequest.FromString(
            request.SerializeToString() + id_field(rid)
        )
        assert parsed.id == rid and parsed.model_name == "m"
        assert parsed.parameters["triton_enable_empty_final_response"].bool_param


def test_the_token_count_is_read_from_num_output_tokens():
    from tritonclient.grpc import service_pb2

    response = service_pb2.ModelInferResponse(id="3")
    response.outputs.add(name="text_output", datatype="BYTES", shape=[1])
    response.outputs.add(name="num_output_tokens", datatype="UINT32", shape=[1])
    response.raw_output_contents.extend([b"\x03\x00\x00\x00abc", np.uint32(3).tobytes()])
    assert token_count(response) == 3
    assert token_count(service_pb2.ModelInferResponse(id="3")) is None


def test_token_counts_look_where_the_count_was_and_find_it_when_the_outputs_move():
    from tritonclient.grpc import service_pb2

    from loadtest.targets.triton_stream import TokenCounts

    def response(names: list[str], count: int, datatype: str = "UINT32"):
        made = service_pb2.ModelInferResponse(id="1")
        for name in names:
            kind = datatype if name == "num_output_tokens" else "BYTES"
            made.outputs.add(name=name, datatype=kind, shape=[1])
            width = 8 if kind in ("INT64", "UINT64") else 4
            made.raw_output_contents.append(count.to_bytes(width, "little"))
        return made

    counts = TokenCounts()
    assert counts.of(response(["text_output", "num_output_tokens"], 2)) == 2
    assert counts.at == 1
    assert counts.of(response(["text_output", "num_output_tokens"], 5)) == 5
    assert counts.of(response(["num_output_tokens", "text_output"], 7)) == 7  # moved
    assert counts.at == 0
    assert counts.of(response(["num_output_tokens"], 9, "INT64")) == 9
    assert counts.of(response(["text_output"], 1)) is None
    assert counts.of(response(["num_output_tokens"], 3, "FP32")) is None


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtest.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "160"},
    )


def test_a_streamed_run_reports_and_judges_its_tokens_end_to_end(tmp_path):
    url = "fake://?servers=64&law=constant&service_ms=30&parts=6&part_ms=5"
    result = _cli(
        *("server", "--url", url, "--qps", "50", "--duration", "0.5", "--min-queries", "20"),
        *("--target-latency", "500", "--ttft-bound", "20", "--mlperf-model", "llama2-70b"),
        *("--output", str(tmp_path / "run")),
    )
    assert "TTFT from scheduled" in result.stdout and "completed tokens/s" in result.stdout
    assert "✗ p99 TTFT" in result.stdout and "✓ p99 TPOT" in result.stdout  # 30 ms > 20 ms
    tokens = json.loads((tmp_path / "run" / "result.json").read_text())["tokens"]
    assert tokens["tokens"] == 6 * tokens["queries"] and tokens["token_source"] == SERVER_COUNT
    assert tokens["ttft"]["min_ns"] >= 30 * MS and tokens["itl"]["count"] == 5 * tokens["queries"]
    assert tokens["bounds"]["ttft_ns"] == 20 * MS and tokens["bounds"]["tpot_ns"] == 200 * MS
    assert tokens["bounds"]["source"] == "--ttft-bound, MLPerf llama2-70b, mlperf.conf"
    assert "scheduled" in tokens["origins"]["ttft"]
    assert "num_output_tokens" in tokens["origins"]["tokens"]
    summary = (tmp_path / "run" / "mlperf_log_summary.txt").read_text()
    rate = f"{tokens['completed_tokens_per_s']:.2f}"
    assert any(
        line.startswith("Completed tokens per second") and line.endswith(rate)
        for line in summary.splitlines()
    )
    p99 = str(tokens["ttft"]["p99_ns"])
    assert any(
        "99.00 percentile first token latency (ns)" in line and line.endswith(p99)
        for line in summary.splitlines()
    )
    assert "percentile time to output token (ns)" in summary
    # LoadGen's token rule (results.cc, use_token_latencies): the performance constraint and
    # early stopping are judged on the TTFT and TPOT arrays, each stopping result printed apart
    lines = summary.splitlines()
    assert "  Performance constraints satisfied : NO" in lines  # p99 TTFT 30 ms > 20 ms
    assert "Early Stopping Result:" not in lines
    n = tokens["queries"]
    for name, over in (("TTFT", n), ("TPOT", 0)):  # every TTFT over 20 ms, no TPOT over 200 ms
        at = lines.index(f"{name} Early Stopping Result:")
        more = server_early_stopping(n, over, 0.99).min_queries_needed - n
        assert lines[at + 1 : at + 4] == [
            " * Run unsuccessful.",
            f" * Processed {n} queries.",
            f" * Would need to run at least {more} more queries,",
        ]
    assert "  Early stopping satisfied: NO" in lines


def test_an_unknown_mlperf_model_is_one_line():
    result = _cli(
        *("server", "--url", "fake://?parts=2", "--target-latency", "100"),
        *("--mlperf-model", "nope"),
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output
    assert "--mlperf-model 'nope' is not one of" in output
