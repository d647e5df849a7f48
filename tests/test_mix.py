"""`loadtest mix` (#16): the superposed schedule, per-entry verdicts, interference, the mix file,
find-peak --mix and plan, bad input. Fake targets with known service laws; the real embedded
Triton is in test_mix_triton.py."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from loadtest.analysis.interference import RunSide, interference_row
from loadtest.core.arrivals import poisson
from loadtest.core.mix_schedule import Stream, entry_seed, mix_schedule, shard_of
from loadtest.core.records import Records, Status
from loadtest.core.settings import NS_PER_MS, NS_PER_S, ServerSettings
from loadtest.engine.runner import RunOutcome
from loadtest.errors import SettingsError
from loadtest.scenarios.experiments.mix_play import split_outcome
from loadtest.scenarios.experiments.mix_spec import MixDefaults, build_mix, parse_model_flag
from loadtest.scenarios.mlperf.interpret import interpret_server

STREAMS = (
    Stream(poisson(300.0, 2 * NS_PER_S, 600, entry_seed(0, 0)), 16, 1),
    Stream(poisson(100.0, 2 * NS_PER_S, 600, entry_seed(0, 1)), 8, 2),
    Stream(poisson(50.0, 2 * NS_PER_S, 10, entry_seed(0, 2)), 4, 3),
)


def _main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The CLI in this process (as `loadtest ...`): exit code, stdout, stderr."""
    from loadtest import cli

    argv = sys.argv
    sys.argv = ["loadtest", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err


# --- the superposed schedule -------------------------------------------------------------------


def test_the_mix_is_exactly_the_union_of_each_entrys_own_schedule():
    mix = mix_schedule(STREAMS)
    times = mix.schedule.scheduled_ns
    assert np.all(np.diff(times) >= 0)
    assert len(mix.schedule) == sum(len(s.schedule()) for s in STREAMS)
    entry = mix.entry
    for k, stream in enumerate(STREAMS):
        own = stream.schedule()  # what the entry plays alone
        mine = entry == k
        assert np.array_equal(times[mine], own.scheduled_ns)
        assert np.array_equal(mix.schedule.sample_index[mine] - mix.offsets[k], own.sample_index)
        assert np.array_equal(mix.entries[k].scheduled_ns, own.scheduled_ns)
    assert list(mix.offsets) == [0, 16, 24, 28]


def test_shards_split_the_mix_as_they_split_one_model():
    mix = mix_schedule(STREAMS).schedule
    shards = [shard_of(mix, 7, k, 3) for k in range(3)]
    assert sum(len(s) for s in shards) == len(mix)
    rows = sorted(
        (int(t), int(i))
        for s in shards
        for t, i in zip(s.scheduled_ns, s.sample_index, strict=True)
    )
    assert rows == sorted(zip(mix.scheduled_ns.tolist(), mix.sample_index.tolist(), strict=True))
    assert shard_of(mix, 7, 0, 1) is mix
    assert min(len(s) for s in shards) > len(mix) / 3 * 0.8  # each shard a fair share


def test_entry_seeds_are_stable_and_distinct():
    seeds = [entry_seed(5, k) for k in range(4)]
    assert seeds == [entry_seed(5, k) for k in range(4)]
    assert len(set(seeds)) == 4 and entry_seed(6, 0) != seeds[0]


# --- per-entry verdicts, exact on records with known service times -----------------------------


def _served(mix_streams: tuple[Stream, ...], service_ns: list[int]) -> RunOutcome:
    """Records as a server with a constant service time per entry and no queueing answers."""
    mix = mix_schedule(mix_streams)
    records = Records(mix.schedule.scheduled_ns.copy(), mix.schedule.sample_index.copy())
    records.issued_ns[:] = records.scheduled_ns
    records.completed_ns[:] = records.scheduled_ns + np.asarray(service_ns)[mix.entry]
    records.status[:] = Status.OK
    return RunOutcome(records, 0, int(records.completed_ns.max()), False, "")


def test_each_entry_is_judged_by_its_own_bound_exactly():
    streams = STREAMS[:2]
    outcome = _served(streams, [2 * NS_PER_MS, 40 * NS_PER_MS])
    parts = split_outcome(outcome, mix_schedule(streams), ["fast", "slow"])
    fast = ServerSettings(300.0, 10 * NS_PER_MS, min_duration_ns=2 * NS_PER_S, min_query_count=600)
    slow = ServerSettings(100.0, 20 * NS_PER_MS, min_duration_ns=2 * NS_PER_S, min_query_count=600)
    fast_summary, fast_verdict = interpret_server(fast, parts["fast"])
    slow_summary, slow_verdict = interpret_server(slow, parts["slow"])
    assert fast_summary.scheduled == len(streams[0].schedule())
    assert fast_summary.latency.p99_ns == 2 * NS_PER_MS and fast_verdict.valid
    assert slow_summary.latency.p99_ns == 40 * NS_PER_MS and not slow_verdict.valid
    assert slow_verdict.passed("performance constraint") is False
    # each part's duration is its own last completion, as a run of it alone
    assert parts["fast"].duration_ns == int(parts["fast"].records.completed_ns.max())


def test_interference_ratios_are_exact_on_known_latencies():
    def side(latency_ms: float) -> RunSide:
        times = np.arange(0, 4 * NS_PER_S, 10 * NS_PER_MS, dtype=np.int64)
        records = Records(times, np.zeros(len(times), dtype=np.int32))
        records.issued_ns[:] = times
        records.completed_ns[:] = times + int(latency_ms * NS_PER_MS)
        records.status[:] = Status.OK
        return RunSide(records, 100.0, 0, int(records.completed_ns.max()))

    row = interference_row("m", "Server", 0.99, side(10), side(25))
    assert row.latency_ratio.value == pytest.approx(2.5)
    assert row.latency_ratio.low == pytest.approx(2.5) and row.latency_ratio.high == pytest.approx(
        2.5
    )
    assert row.throughput_ratio.value == pytest.approx(1.0)
    assert row.throughput_ratio.low <= 1.0 <= row.throughput_ratio.high


# --- the mix file and the --model flags ---------------------------------------------------------


def _build(document: dict, flags: list[str] = (), **defaults: object):
    return build_mix(
        document, [parse_model_flag(f) for f in flags], MixDefaults(**defaults), "MIX.toml"
    )


def test_weights_split_the_total_and_rates_stand_as_given():
    spec = _build(
        {
            "total_qps": 100,
            "model": [
                {"model": "tiny", "weight": 3},
                {"name": "b2", "model": "bert_l4_h256", "weight": 1, "bound_ms": 200},
                {"model": "dlrm_small", "scenario": "Offline", "max_in_flight": 4},
            ],
        }
    )
    tiny, bert, dlrm = spec.entries
    assert tiny.settings.qps == pytest.approx(75) and bert.settings.qps == pytest.approx(25)
    assert tiny.settings.target_latency_ns == 10 * NS_PER_MS  # the suite's MLPerf bound
    assert bert.settings.target_latency_ns == 200 * NS_PER_MS
    assert dlrm.scenario.value == "Offline" and dlrm.settings.max_in_flight == 4
    assert spec.shares() == pytest.approx({"tiny": 0.75, "b2": 0.25})
    assert spec.at_total(200).entries[0].settings.qps == pytest.approx(150)
    assert tiny.settings.schedule_seed != bert.settings.schedule_seed
    shaped = _build({"model": [{"model": "bert_l4_h256", "qps": 1, "shape": ["x:1,8", "y:2"]}]})
    assert shaped.entries[0].flags.shapes == {"x": (1, 8), "y": (2,)}
    rates = _build({}, ["tiny:40", "resnet50@127.0.0.1:8001:5:30", "dlrm_small:offline"])
    assert [e.settings.scenario.value for e in rates.entries] == ["Server", "Server", "Offline"]
    assert rates.entries[1].flags.url == "127.0.0.1:8001"
    assert rates.entries[1].settings.target_latency_ns == 30 * NS_PER_MS


@pytest.mark.parametrize(
    ("document", "flags", "says"),
    [
        ({"model": [{"model": "tiny", "qps": 5}, {"model": "tiny", "qps": 5}]}, [], "'tiny'"),
        (
            {
                "total_qps": 9,
                "model": [{"model": "tiny", "qps": 5}, {"model": "resnet50", "weight": 1}],
            },
            [],
            "mix entry 'resnet50': weights and rates are mixed",
        ),
        ({"model": [{"model": "tiny", "weight": 1}]}, [], "mix entry 'tiny': weights need a total"),
        ({"model": [{"model": "mine", "qps": 5}]}, [], "mix entry 'mine': model 'mine' is not in"),
        (
            {"model": [{"model": "tiny", "qps": 5, "colour": 1}]},
            [],
            "mix entry 'tiny': unknown key",
        ),
        ({"model": [{"model": "tiny", "scenario": "Offline", "qps": 5}]}, [], "'tiny': an Offline"),
        ({"model": [{"model": "tiny", "qps": -1}]}, [], "mix entry 'tiny': qps must be > 0"),
        ({"model": [{"qps": 1}]}, [], "mix entry #1: 'model'"),
        ({}, [], "no entries"),
    ],
)
def test_a_bad_mix_is_one_line_naming_the_entry(document, flags, says):
    with pytest.raises(SettingsError) as error:
        _build(document, flags)
    assert says in str(error.value) and "\n" not in str(error.value)


# --- bad input through the command line: one line, nothing runs ---------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bad_input_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "never"
    port = _free_port()
    bad = tmp_path / "bad.toml"
    bad.write_text("[[model]\nmodel = 'tiny'\n")
    cases = [
        (["mix", str(bad)], 1, f"mix file {bad}: not valid TOML"),
        (["mix", str(tmp_path / "none.toml")], 1, "no such file"),
        (["mix", "--model", "tiny:fast"], 2, "Invalid value for '--model'"),
        (["mix", "--model", "tiny@somewhere:5"], 2, "Invalid value for '--model'"),
        (["mix", "--model", "tiny:5", "--model", "tiny:6"], 1, "mix entry 'tiny': the name is"),
        (
            [
                "mix",
                "--model",
                "tiny@fake://?service_ms=1:5",
                "--model",
                f"resnet50@127.0.0.1:{port}:5",
            ],
            1,
            f"mix entry 'resnet50': nothing answers at 127.0.0.1:{port} (grpc)",
        ),
        (
            [
                "mix",
                "--model",
                "nosuch:5:50",
                "--repository",
                str(tmp_path),
                "--embedded",
                "always",
            ],
            1,
            "mix entry 'nosuch': model 'nosuch' is not in",
        ),
    ]
    for args, code, says in cases:
        got, stdout, stderr = _main([*args, "--output", str(out), "--duration", "1"], capsys)
        assert got == code, (args, stdout, stderr)
        assert "Traceback" not in stdout + stderr
        assert says in stderr, (args, stderr)
        if code == 1:
            assert len([line for line in stderr.splitlines() if line.strip()]) == 1, stderr
        assert not out.exists()  # nothing ran, nothing written


# --- end to end on fake targets ------------------------------------------------------------------


def _write_mix(path: Path, entries: list[dict], **top: object) -> Path:
    lines = [f"{k} = {json.dumps(v)}" for k, v in top.items()]
    for entry in entries:
        lines.append("[[model]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in entry.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


FAST = "fake://?law=constant&service_ms=2&servers=4"
SLOW = "fake://?law=constant&service_ms=40&servers=8"


def test_a_mix_on_fakes_judges_each_entry_and_writes_every_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    mix = _write_mix(
        tmp_path / "mix.toml",
        [
            {"name": "fast", "model": "tiny", "url": FAST, "qps": 60, "bound_ms": 500},
            {"name": "slow", "model": "tiny", "url": SLOW, "qps": 30, "bound_ms": 10},
            {
                "name": "batch",
                "model": "tiny",
                "url": "fake://?law=constant&service_ms=5&servers=1",
                "scenario": "Offline",
                "expected_qps": 300,
                "max_in_flight": 4,
            },
        ],
        duration=1,
        seed=4,
        percentile=90,
        min_queries=50,
    )
    out = tmp_path / "run"
    code, stdout, stderr = _main(
        ["mix", str(mix), "--output", str(out), "--records", "--late-threshold", "100",
         "--html", str(tmp_path / "mix.html")],
        capsys,
    )  # fmt: skip
    assert code == 3, stdout + stderr  # "slow" cannot meet 10 ms
    data = json.loads((out / "result.json").read_text())
    assert data["kind"] == "mix" and data["verdict"]["invalid_entries"] == ["slow"]
    entries = {e["name"]: e for e in data["entries"]}
    fast, slow = entries["fast"]["together"], entries["slow"]["together"]
    checks = {c["name"]: c["passed"] for c in slow["verdict"]["checks"]}
    assert checks["performance constraint"] is False
    assert {c["name"]: c["passed"] for c in fast["verdict"]["checks"]}["performance constraint"]
    assert slow["summary"]["latency"]["min_ns"] >= 40 * NS_PER_MS
    # every entry played exactly its own schedule, alone and together
    spec = data["settings"]
    assert [e["name"] for e in spec["entries"]] == ["fast", "slow", "batch"]
    for k, name in enumerate(("fast", "slow")):
        own = Stream(
            poisson(entries[name]["together"]["settings"]["qps"], 1 * NS_PER_S, 50,
                    entry_seed(4, k)), 64, 1,
        ).schedule()  # fmt: skip
        for run in ("together", "alone"):
            columns = entries[name][run]["records"]["columns"]
            assert columns["scheduled_ns"] == own.scheduled_ns.tolist(), (name, run)
            assert columns["sample_index"] == own.sample_index.tolist(), (name, run)
    batch = entries["batch"]["together"]
    assert batch["scenario"] == "Offline" and batch["summary"]["scheduled"] == 330
    assert entries["batch"]["alone"]["summary"]["scheduled"] == 330  # the same query alone
    assert {r["name"] for r in data["interference"]} == {"fast", "slow", "batch"}
    rows = {r["name"]: r for r in data["interference"]}
    assert rows["batch"]["client_kept_up_alone"] is True  # Offline: nothing scheduled to keep up
    assert rows["batch"]["latency_origin"].startswith("completion − actual send")
    assert (out / "mlperf_log_summary-slow.txt").exists()
    assert "Interference" in (tmp_path / "mix.html").read_text()
    assert "Mix of 3: " in stdout and "Interference: together ÷ alone" in stdout


def test_a_model_slowed_by_anothers_load_shows_as_interference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    # Two fakes share one worker (pool "gpu"), 20 ms a query: "light" alone uses 20 % of it, with
    # "heavy" beside it 80 %, so its queries queue behind heavy's (an M/D/1 queue at ρ = 0.8).
    shared = "fake://?law=constant&service_ms=20&servers=1&pool=gpu"
    mix = _write_mix(
        tmp_path / "mix.toml",
        [
            {"name": "light", "model": "tiny", "url": shared, "qps": 10, "bound_ms": 1000},
            {"name": "heavy", "model": "tiny", "url": shared, "qps": 30, "bound_ms": 1000},
        ],
        duration=3,
        percentile=90,
        min_queries=20,  # both streams then last 3 s: they overlap throughout
    )
    out = tmp_path / "run"
    _main(["mix", str(mix), "--output", str(out), "--late-threshold", "100"], capsys)
    rows = {r["name"]: r for r in json.loads((out / "result.json").read_text())["interference"]}
    light = rows["light"]["latency_ratio"]
    assert light["value"] > 1.5 and light["low"] > 1.0, rows["light"]
    assert rows["light"]["throughput_ratio"]["value"] == pytest.approx(1.0, abs=0.2)


@pytest.mark.parametrize(
    "placement",
    ["processes", pytest.param("ray local", marks=pytest.mark.ray)],
)
def test_two_workers_split_the_superposed_schedule(
    placement: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    ray = ["--ray", "local"] if placement.startswith("ray") else []
    if ray:
        pytest.importorskip("ray")
    out = tmp_path / "run"
    code, stdout, stderr = _main(
        ["mix", "--model", f"tiny@{FAST}:80:500", "--model", f"resnet50@{FAST}:40:500",
         "--no-isolated", "--workers", "2", "--duration", "2", "--records",
         "--late-threshold", "100", "--output", str(out), "--seed", "9", *ray],
        capsys,
    )  # fmt: skip
    assert code in (0, 3, 5), stdout + stderr  # judged (150 queries: too few for p99's early stop)
    data = json.loads((out / "result.json").read_text())
    assert data["run"]["placement"] == placement and data["client"]["worker_count"] == 2
    for k, entry in enumerate(data["entries"]):
        qps = entry["together"]["settings"]["qps"]
        own = Stream(poisson(qps, 2 * NS_PER_S, 100, entry_seed(9, k)), 64, 1).schedule()
        columns = entry["together"]["records"]["columns"]
        assert columns["scheduled_ns"] == own.scheduled_ns.tolist()
        assert columns["sample_index"] == own.sample_index.tolist()
        assert entry["alone"] is None
    assert data["interference"] == []


def test_find_peak_mix_names_the_entry_that_breaks_first_and_plan_takes_the_peak(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    # One shared worker, exponential 10 ms: both entries see the same M/M/1 queue (p50 sojourn
    # ln 2 / (100/s − λ)); "tight" has half the bound of "loose", so at any rate it is twice as
    # far over: it breaks first, near 88 QPS total. p50 keeps probes short (10 queries suffice).
    shared = "fake://?law=exponential&service_ms=10&servers=1&pool=gpu"
    mix = _write_mix(
        tmp_path / "mix.toml",
        [
            {"name": "loose", "model": "tiny", "url": shared, "weight": 1, "bound_ms": 120},
            {"name": "tight", "model": "tiny", "url": shared, "weight": 1, "bound_ms": 60},
        ],
        total_qps=40,
        percentile=50,
    )
    out = tmp_path / "peak"
    code, stdout, stderr = _main(
        ["find-peak", "--mix", str(mix), "--probe-duration", "1", "--budget", "25",
         "--resolution", "0.3", "--late-threshold", "100", "--max-qps", "110",
         "--output", str(out)],
        capsys,
    )  # fmt: skip
    data = json.loads((out / "find-peak.json").read_text())
    assert code == 0 and data["peak_qps"] is not None, stdout + stderr
    assert data["mix"]["breaks_first"] == "tight", stdout
    assert [e["share"] for e in data["mix"]["entries"]] == [0.5, 0.5]
    assert "Mix peak:" in stdout and "Breaks first: tight" in stdout
    code, stdout, stderr = _main(
        ["plan", "--target-qps", str(4 * data["peak_qps"]), "--from", str(out / "find-peak.json")],
        capsys,
    )
    assert code == 0, stderr
    assert "every entry within its own bound" in stdout and "replicas" in stdout


def test_sigterm_writes_the_partial_mix_and_exits_143(tmp_path: Path):
    import signal
    import subprocess

    from test_stopping import _start, _wait_for_heading

    from loadtest.errors import ExitCode

    process = _start(
        "mix", "--model", f"tiny@{FAST}:50:500", "--model", f"resnet50@{FAST}:20:500",
        "--duration", "30", "--output", "out", cwd=tmp_path,
    )  # fmt: skip
    _wait_for_heading(process, "alone: tiny")
    time.sleep(1.5)
    process.send_signal(signal.SIGTERM)
    try:
        stdout, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == ExitCode.TERMINATED, stdout + stderr
    assert "Traceback" not in stderr
    data = json.loads((tmp_path / "out" / "result.json").read_text())
    assert data["verdict"]["partial"] is True and data["verdict"]["valid"] is False
    tiny, resnet = data["entries"]
    assert tiny["alone"]["run"]["stop_reason"] == "terminated (SIGTERM)"
    assert tiny["alone"]["summary"]["issued"] > 0
    assert resnet["alone"] is None and tiny["together"] is None  # never started
    assert "partial result" in stdout
