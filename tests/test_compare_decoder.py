"""`loadtest compare` on the suite decoder, without a server: the overhead arithmetic on known
differences, the refusals, and the whole comparison path played by two in-process decoder loops.
(tests/test_decoder_triton.py plays it against the real embedded Triton.)"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from decoder_compare import NAME, decoder_setup, play_in_process
from test_cli import loadtest

from loadtest.analysis.compare import NO_DIFFERENCE
from loadtest.analysis.token_overhead import figure_overhead
from loadtest.core.settings import Protocol
from loadtest.errors import ExitCode, SettingsError
from loadtest.models import build_repository
from loadtest.report.compare_report import compare_json
from loadtest.report.compare_token_report import token_overheads
from loadtest.rules.tokens import SERVER_COUNT

MS = 1_000_000


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("decoder_compare")
    build_repository(repository, [NAME])  # ~1 s
    return repository


def test_a_known_overhead_comes_out_exactly_with_an_interval_around_it():
    rng = np.random.default_rng(3)
    native = rng.integers(4 * MS, 12 * MS, size=400)
    triton = native + 5 * MS  # every query 5 ms later: the same law, shifted
    figure = figure_overhead("ttft", triton, native, seed=0)
    assert figure is not None
    assert figure.p50_overhead_ns == figure.p99_overhead_ns == 5 * MS
    assert figure.p99_ratio == pytest.approx(figure.triton_p99_ns / figure.native_p99_ns)
    low, high = figure.p99_overhead_interval
    assert low <= 5 * MS <= high
    r_low, r_high = figure.p99_ratio_interval
    assert r_low <= figure.p99_ratio <= r_high
    # p99 ≈ 12 ms against ≈ 17 ms: each side's interval is narrow beside 5 ms, so they differ
    assert figure.verdict == "Triton higher"
    same = figure_overhead("ttft", native, native, seed=0)
    assert same is not None and same.p99_overhead_ns == 0 and same.verdict == NO_DIFFERENCE
    assert figure_overhead("tpot", triton, native[:0], seed=0) is None


def test_the_intervals_are_seeded():
    a = np.arange(1, 301) * MS
    b = a * 2
    one, two = figure_overhead("tpot", b, a, seed=4), figure_overhead("tpot", b, a, seed=4)
    assert one == two


def test_a_decoder_is_refused_where_compare_cannot_measure_it(repository: Path):
    setup = decoder_setup(repository, "127.0.0.1:1", 2, 1)
    with pytest.raises(SettingsError, match="grpc-stream"):
        type(setup)(
            flags=type(setup.flags)(**{**setup.flags.__dict__, "protocol": Protocol.GRPC}),
            targets=("triton-grpc", "native"),
            runs=setup.runs,
        )
    with pytest.raises(SettingsError, match=r"model\.py.s settings"):
        type(setup)(
            flags=setup.flags,
            targets=setup.targets,
            runs=setup.runs,
            native_overrides={"intra_op_threads": 2},
        )
    with pytest.raises(SettingsError, match="do not mix"):
        type(setup)(
            flags=setup.flags, targets=("triton-grpc-stream", "triton-grpc"), runs=setup.runs
        )
    # on the command line: one line and exit 1 (settings), before any server is looked for
    for extra in ([], ["--qps", "2", "--peak"], ["--qps", "2"]):
        result = loadtest(
            "compare", "--model", NAME, "--protocol", "grpc-stream", "--repository",
            str(repository), "--embedded", "never", *extra,
        )  # fmt: skip
        assert result.returncode == ExitCode.ERROR, result.stderr + result.stdout
        assert "Traceback" not in result.stderr
    assert "--target-latency" in result.stderr + result.stdout


def test_two_in_process_loops_compare_end_to_end(repository: Path):
    """The comparison path without Triton: every answer as long as asked on both sides, the
    overhead of a loop against itself small, every field finite, compare.json written."""
    played = play_in_process(decoder_setup(repository, "in-process", 4, 1.5))
    result = played.result
    assert [run.target for run in result.runs] == ["triton-grpc-stream", "native"]
    assert result.agreement == {"triton-grpc-stream": 0.0}  # same prompt, same token count
    for run in result.runs:
        records = run.measurement.outcome.records
        ok = records.ok
        assert ok.sum() == records.issued.sum() >= 4
        wanted = played.max_tokens[records.sample_index[ok]]
        assert (records.final_count[ok] == wanted).all()
    (row,) = token_overheads(result)
    assert (
        row.triton.tokens
        == row.native.tokens
        == sum(
            played.max_tokens[r] for r in result.runs[1].measurement.outcome.records.sample_index
        )
    )
    for figure in (row.ttft, row.tpot):
        assert figure is not None
        values = (
            figure.p50_overhead_ns,
            figure.p99_overhead_ns,
            figure.p50_ratio,
            figure.p99_ratio,
            *figure.p99_overhead_interval,
            *figure.p99_ratio_interval,
        )
        assert all(math.isfinite(v) for v in values)
    assert math.isfinite(row.tokens_per_s_ratio) and row.triton.completed_tokens_per_s > 0
    data = json.loads(
        json.dumps(compare_json(played.setup, played.session, result, {}, 0.0), allow_nan=False)
    )
    overhead = data["token_overhead"]
    assert overhead["definitions"]["ttft"].startswith("from the scheduled time")
    (entry,) = overhead["rows"]
    assert entry["ttft"]["p99_overhead_interval_ns"][0] is not None
    assert data["rows"][0]["tokens"]["token_source"] == SERVER_COUNT
    assert any("config parity" in line for line in data["compared"])
