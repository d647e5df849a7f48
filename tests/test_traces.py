"""Recorded traces (engine/traces/, core/trace.py): each format read in its own units, a
replayed loadtest result reproducing its schedule bit for bit, LoadGen's own trace replayed with
its gaps, every malformed trace one line naming the file and the row, the replay options, and
the per-query rows (trace index, sample, lengths, model) dealt to shards exactly."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from loadtest.core.arrivals import Timestamps
from loadtest.core.schedule import deal, merged_schedule, schedule_of, shard_owners
from loadtest.core.settings import ServerSettings
from loadtest.core.trace import ReplayOptions, Trace, TraceRows
from loadtest.engine.traces import FORMATS, detect_format, load_trace, read_trace
from loadtest.engine.traces.loadtest_result import law_from_written
from loadtest.errors import SettingsError
from loadtest.report.results import plain
from loadtest.scenarios.mlperf.play import run_server
from loadtest.targets.fake import FAKE_MODEL, FakeTarget, ServiceLaw

NS = 1_000_000_000
MS = 1_000_000
DATA = Path(__file__).resolve().parent / "data" / "traces"
LOADGEN_TRACE = DATA / "mlperf_log_trace.json"  # written by mlcommons-loadgen: see README.md

MOONCAKE = (
    '{"timestamp": 0, "input_length": 6955, "output_length": 52, "hash_ids": [0, 1, 2]}\n'
    '{"timestamp": 1500, "input_length": 512, "output_length": 8, "hash_ids": [0]}\n'
    '{"timestamp": 1500, "input_length": 700, "output_length": 1, "hash_ids": [0, 3]}\n'
    '{"timestamp": 2250.5, "input_length": 1, "output_length": 300, "hash_ids": []}\n'
)
AZURE = (
    "TIMESTAMP,ContextTokens,GeneratedTokens\n"
    "2023-11-16 18:15:46.6805900,4808,10\n"
    "2023-11-16 18:15:46.6805901,3180,8\n"
    "2023-11-16 18:16:00.0000000,110,27\n"
    "2023-11-17 00:00:00.1234567,7433,14\n"
)
BURSTGPT = (
    "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
    "5,ChatGPT,472,18,490,Conversation log\n"
    "45,ChatGPT,1087,0,1087,Conversation log\n"
    "110.5,GPT-4,417,505,922,API log\n"
)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _fails(path: Path, says: str, **kwargs: object) -> str:
    with pytest.raises(SettingsError) as caught:
        read_trace(path, **kwargs)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message and str(path) in message, message
    assert says in message, message
    return message


# --- each format in its own units ----------------------------------------------------------------


def test_mooncake_timestamps_are_milliseconds_and_lengths_are_carried(tmp_path):
    path = _write(tmp_path, "conv.jsonl", MOONCAKE)
    trace = read_trace(path)
    assert trace.times_ns.tolist() == [0, 1500 * MS, 1500 * MS, 2250 * MS + 500_000]
    assert trace.rows.input_tokens.tolist() == [6955, 512, 700, 1]
    assert trace.rows.output_tokens.tolist() == [52, 8, 1, 300]
    assert trace.rows.index.tolist() == [0, 1, 2, 3] and trace.rows.sample is None
    assert trace.source == "mooncake trace conv.jsonl"


def test_azure_datetimes_keep_their_100_ns_ticks(tmp_path):
    trace = read_trace(_write(tmp_path, "AzureLLMInferenceTrace_conv.csv", AZURE))
    assert trace.times_ns.tolist() == [
        0,
        100,  # one 100 ns tick: the seventh fractional digit
        13 * NS + 319_410_000,
        (5 * 3600 + 44 * 60 + 13) * NS + 442_866_700,  # across midnight
    ]
    assert trace.rows.input_tokens.tolist() == [4808, 3180, 110, 7433]
    assert trace.rows.output_tokens.tolist() == [10, 8, 27, 14]


def test_burstgpt_timestamps_are_seconds_and_models_are_kept(tmp_path):
    trace = read_trace(_write(tmp_path, "BurstGPT_1.csv", BURSTGPT))
    assert trace.times_ns.tolist() == [0, 40 * NS, 105 * NS + 500 * MS]
    assert trace.rows.input_tokens.tolist() == [472, 1087, 417]
    assert trace.rows.output_tokens.tolist() == [18, 0, 505]
    assert [trace.rows.model_of(i) for i in range(3)] == ["ChatGPT", "ChatGPT", "GPT-4"]


@pytest.mark.parametrize(
    ("name", "text", "unit", "times"),
    [
        ("t.csv", "time_us,model\n10,a\n12.5,b\n1000010,a\n", None, [0, 2500, NS]),
        ("t.csv", "timestamp\n3\n4\n", "s", [0, NS]),
        ("t.csv", "time_ns\n7\n9\n", "ns", [0, 2]),  # the same unit twice is fine
        (
            "t.jsonl",
            '{"time_ms": 1, "sample": 3}\n\n{"time_ms": 2.5, "sample": 0}\n',
            None,
            [0, 1_500_000],
        ),
        ("t.jsonl", '{"time": 0, "input_tokens": 5, "output_tokens": 6}\n', "ms", [0]),
    ],
)
def test_plain_tables_take_the_unit_from_the_header_or_the_caller(
    tmp_path, name, text, unit, times
):
    trace = read_trace(_write(tmp_path, name, text), unit=unit)
    assert trace.times_ns.tolist() == times


def test_plain_tables_carry_model_sample_and_lengths(tmp_path):
    text = (
        "time_ms,model,sample,input_length,output_length\n0,a,3,10,20\n5,b,1,11,21\n5,a,0,12,22\n"
    )
    rows = read_trace(_write(tmp_path, "t.csv", text)).rows
    assert rows.sample.tolist() == [3, 1, 0] and rows.models == ("a", "b")
    assert rows.model_index.tolist() == [0, 1, 0]
    assert rows.input_tokens.tolist() == [10, 11, 12] and rows.output_tokens.tolist() == [
        20,
        21,
        22,
    ]


def test_a_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + AZURE.encode())
    assert detect_format(path) == "azure" and len(read_trace(path)) == 4


def test_the_format_is_told_from_the_content_and_gzip_is_read(tmp_path):
    files = {
        "a.jsonl": MOONCAKE,
        "b.csv": AZURE,
        "c.csv": BURSTGPT,
        "d.csv": "time_s\n1\n",
        "e.jsonl": '{"time_s": 1}\n',
        "f.txt": "time_s\n1\n",
    }
    found = {name: detect_format(_write(tmp_path, name, text)) for name, text in files.items()}
    assert found == {
        "a.jsonl": "mooncake",
        "b.csv": "azure",
        "c.csv": "burstgpt",
        "d.csv": "csv",
        "e.jsonl": "jsonl",
        "f.txt": "csv",
    }
    assert detect_format(LOADGEN_TRACE) == "loadgen"
    packed = tmp_path / "conv.jsonl.gz"
    packed.write_bytes(gzip.compress(MOONCAKE.encode()))
    assert (
        read_trace(packed).times_ns.tolist() == read_trace(tmp_path / "a.jsonl").times_ns.tolist()
    )
    assert set(FORMATS) == {"loadtest", "loadgen", "mooncake", "azure", "burstgpt", "csv", "jsonl"}
    # a named format wins over detection: the mooncake file read as plain JSON lines
    assert read_trace(tmp_path / "a.jsonl", "jsonl", unit="ms").rows.input_tokens is not None


# --- LoadGen's own trace -------------------------------------------------------------------------


def _loadgen_events(path: Path) -> list[dict]:
    """Every event line that parses alone. LoadGen 6.0's file is not valid JSON as a whole: its
    LogDetail events double their quotes ("key":""loadgen_version""), so it is read by lines."""
    events = []
    for line in path.read_text().splitlines()[1:]:
        try:
            events.append(json.loads(line.rstrip(",")))
        except json.JSONDecodeError:
            continue
    return [e for e in events if isinstance(e, dict)]


def _loadgen_schedule(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The Sample begin events' ts (µs, as written) in sample_seq order, read independently."""
    events = _loadgen_events(path)
    begins = sorted(
        (e["args"]["sample_seq"], e["ts"], e["args"]["sample_idx"])
        for e in events
        if e.get("name") == "Sample" and e.get("ph") == "b"
    )
    ts_ns = np.array([round(ts * 1000) for _, ts, _ in begins], dtype=np.int64)
    return ts_ns, np.array([idx for *_, idx in begins])


def test_a_loadgen_trace_is_replayed_with_the_same_gaps():
    ts_ns, samples = _loadgen_schedule(LOADGEN_TRACE)
    trace = read_trace(LOADGEN_TRACE)
    assert len(trace) == 40 and trace.times_ns[0] == 0
    assert np.array_equal(np.diff(trace.times_ns), np.diff(ts_ns))  # to the nanosecond
    assert np.array_equal(trace.rows.sample, samples)
    assert trace.source == "LoadGen trace mlperf_log_trace.json"
    # played: the run's due times have the LoadGen schedule's gaps exactly
    law = Timestamps.of(trace)
    settings = ServerSettings(qps=1, target_latency_ns=50 * MS, arrival_law=law, sample_count=16)
    records = _play(settings)
    assert np.array_equal(np.diff(records.scheduled_ns), np.diff(ts_ns))
    assert np.array_equal(records.sample_index, samples)  # LoadGen's own samples, in order


def test_a_loadgen_trace_written_otherwise_is_read_whole(tmp_path):
    with pytest.raises(json.JSONDecodeError):
        json.loads(LOADGEN_TRACE.read_text())  # as LoadGen wrote it: not valid JSON as a whole
    document = {"traceEvents": _loadgen_events(LOADGEN_TRACE), "displayTimeUnit": "ns"}
    path = tmp_path / "pretty.json"
    path.write_text(json.dumps(document, indent=2))  # no longer one event per line
    assert np.array_equal(read_trace(path, "loadgen").times_ns, read_trace(LOADGEN_TRACE).times_ns)


def _play(settings: ServerSettings):
    async def go():
        target = FakeTarget(ServiceLaw("constant", 1 * MS), servers=64)
        await target.open()
        return await run_server(target, FAKE_MODEL, settings.sample_count, settings, NS)

    return asyncio.run(go()).outcome.records


# --- loadtest's own result.json, bit for bit -----------------------------------------------------


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory) -> Path:
    from test_cli import loadtest

    out = tmp_path_factory.mktemp("run") / "out"
    run = loadtest(
        "server", "--url", "fake://?servers=8&service_ms=1", "--qps", "300", "--duration", "1",
        "--target-latency", "50", "--records", "--seed", "7", "--output", str(out),
    )  # fmt: skip
    assert (out / "result.json").exists(), run.stdout + run.stderr
    return out / "result.json"


def test_a_replayed_loadtest_result_reproduces_its_schedule_bit_for_bit(recorded_run, tmp_path):
    data = json.loads(recorded_run.read_text())
    scheduled = np.array(data["records"]["columns"]["scheduled_ns"], dtype=np.int64)
    samples = np.array(data["records"]["columns"]["sample_index"])
    trace = read_trace(recorded_run)
    assert np.array_equal(trace.times_ns, scheduled)  # the run's origin kept: not from row 0
    law = Timestamps.of(trace)
    settings = ServerSettings(qps=1, target_latency_ns=50 * MS, arrival_law=law)
    replay = schedule_of(settings.arrivals, settings.sample_count, sample_seed=99)
    assert np.array_equal(replay.scheduled_ns, scheduled)
    assert np.array_equal(replay.sample_index, samples)
    records = _play(settings)
    assert np.array_equal(records.scheduled_ns, scheduled) and records.ok.all()
    # Written without --records, the schedule is drawn again from the settings: the same bits.
    del data["records"]
    bare = _write(tmp_path, "result.json", json.dumps(data))
    redrawn = read_trace(bare)
    assert np.array_equal(redrawn.times_ns, scheduled)
    assert np.array_equal(redrawn.rows.sample, samples)
    assert "drawn again from its settings" in redrawn.source


def test_every_law_reads_back_from_result_json_as_written(tmp_path):
    from loadtest.core.arrivals import CONSTANT, POISSON, Gamma
    from loadtest.core.stages import Staged, parse_stages

    text = "time_ms,model,sample\n0,a,1\n5,b,2\n"
    laws = [
        POISSON,
        CONSTANT,
        Gamma(2.5),
        Staged(Gamma(1.5), parse_stages("10s:5,20s:5->50,1s:->0")),
        load_trace(_write(tmp_path, "t.csv", text)),
    ]
    for law in laws:
        assert law_from_written(json.loads(json.dumps(plain(law)))) == law
    assert law_from_written(None) == POISSON  # a file from before the arrival seam
    with pytest.raises(ValueError, match="unknown arrival law 'weibull'"):
        law_from_written({"name": "weibull"})


def test_a_replayed_replay_is_the_same_trace(tmp_path):
    """result.json writes a trace's law (with its rows), and reading it back redraws it."""
    trace = read_trace(_write(tmp_path, "conv.jsonl", MOONCAKE))
    law = Timestamps.of(trace)
    written = json.loads(json.dumps(plain(law)))
    assert law_from_written(written) == law
    settings = ServerSettings(qps=1, target_latency_ns=MS, arrival_law=law)
    data = {
        "schema": "loadtest.result",
        "schema_version": 1,
        "scenario": "Server",
        "settings": json.loads(json.dumps(plain(settings))),
    }
    again = read_trace(_write(tmp_path, "result.json", json.dumps(data)))
    assert np.array_equal(again.times_ns, trace.times_ns)


# --- malformed traces: one line, the file and the row --------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("m.jsonl", MOONCAKE.replace('1500, "input_length": 7', '900, "input_length": 7'),
         "line 3: timestamp goes back in time (a negative gap of 600 ms after line 2)"),
        ("m.jsonl", MOONCAKE.replace(', "output_length": 8', ""), "line 2: no 'output_length'"),
        ("m.jsonl", '{"timestamp": 0, "hash_ids": [1]}\n', "line 1: no 'input_length'"),
        ("m.jsonl", MOONCAKE.replace('"timestamp": 2250.5', '"timestamp": NaN'),
         "line 4: timestamp nan is not a finite number"),
        ("m.jsonl", MOONCAKE.replace('"timestamp": 2250.5', '"timestamp": "soon"'),
         "line 4: timestamp 'soon' is not a number"),
        ("m.jsonl", MOONCAKE + "{not json\n", "line 5: not a JSON object"),
        ("m.jsonl", MOONCAKE.replace('"input_length": 512', '"input_length": -3'),
         "line 2: input_length -3 is not a whole number ≥ 0"),
        ("m.jsonl", MOONCAKE.replace('"timestamp": 2250.5', '"timestamp": 1e300'),
         "line 4: timestamp is absurdly far"),
        ("a.csv", AZURE.replace("2023-11-16 18:16:00.0000000", "yesterday"),
         "line 4: TIMESTAMP 'yesterday' is not a date and time"),
        ("a.csv", AZURE.replace("2023-11-16 18:16:00.0000000", "2023-11-16 18:10:00.0000000"),
         "line 4: TIMESTAMP goes back in time"),
        ("a.csv", AZURE.replace(",GeneratedTokens", ""), "line 1: no column 'GeneratedTokens'"),
        ("a.csv", AZURE.replace("3180,8", "3180,8.5"), "line 3: GeneratedTokens '8.5' is not"),
        ("a.csv", AZURE.replace("3180,8", "3180"), "line 3: 2 fields where the header has 3"),
        ("a.csv", AZURE.replace("110,27", "110,nan"), "line 4: GeneratedTokens 'nan' is not a"),
        ("b.csv", BURSTGPT.replace("\n110.5,", "\n44.9,"), "line 4: Timestamp goes back in time"),
        ("b.csv", BURSTGPT.replace("\n45,", "\ninf,"), "line 3: Timestamp 'inf' is not a finite"),
        ("t.csv", "time\n1\n2\n", "line 1: the time column 'time' has no unit"),
        ("t.csv", "when_ms\n1\n", "line 1: no time column"),
        ("t.csv", "time_s,time_ms\n1,2\n", "line 1: several time columns"),
        ("t.csv", "time_s\n1\nabc\n", "line 3: time_s 'abc' is not a number"),
        ("t.csv", "time_s\n1\n-0.5\n", "line 3: time_s goes back in time"),
        ("t.csv", "time_s,sample\n1,2\n2,-1\n", "line 3: sample '-1' is not a whole number"),
        ("t.csv", "time_s\n", "holds no rows"),
        ("t.csv", "", "is empty"),
        ("t.jsonl", '{"time_ms": 1}\n{"time": 3}\n', "line 2: no 'time_ms', which the first"),
        ("t.jsonl", '[1, 2]\n', "no time column"),
    ],
)  # fmt: skip
def test_a_malformed_trace_is_one_line_naming_the_row(tmp_path, name, text, says):
    _fails(_write(tmp_path, name, text), says)


def test_a_malformed_loadgen_trace_names_the_line(tmp_path):
    lines = LOADGEN_TRACE.read_text().splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if '"Sample"' in line and '"ph":"b"' in line]
    third = begins[2]
    moved = lines.copy()
    moved[third] = moved[third].replace('"ts":', '"ts":1.0,"was":', 1)  # scheduled before #2
    _fails(_write(tmp_path, "lg.json", "".join(moved)), f"line {third + 1}: the scheduled time")
    broken = lines.copy()
    broken[third] = broken[third][:40] + "\n"
    _fails(_write(tmp_path, "lg2.json", "".join(broken)), f"line {third + 1}: not a trace event")
    no_samples = [line for line in lines if '"Sample"' not in line]
    _fails(_write(tmp_path, "lg3.json", "".join(no_samples)), 'no LoadGen "Sample" events')
    twice = [*lines[: third + 1], lines[third], *lines[third + 1 :]]
    _fails(_write(tmp_path, "lg4.json", "".join(twice)), f"line {third + 2}: sample_seq")
    # written as one JSON document, the errors name the event
    events = _loadgen_events(LOADGEN_TRACE)
    first = next(i for i, e in enumerate(events) if e.get("name") == "Sample")
    events[first]["ts"] = "soon"
    whole = _write(tmp_path, "lg5.json", json.dumps({"traceEvents": events}))
    _fails(whole, f"event {first}: a Sample event whose ts 'soon' is not a number")


def test_a_malformed_loadtest_result_is_one_line(recorded_run, tmp_path):
    data = json.loads(recorded_run.read_text())
    unsorted = json.loads(json.dumps(data))
    times = unsorted["records"]["columns"]["scheduled_ns"]
    times[5], times[6] = times[6], times[5] + 0
    times[5] = times[4] - 1
    _fails(_write(tmp_path, "r1.json", json.dumps(unsorted)), "query 5: scheduled before")
    offline = dict(data, scenario="Offline")
    _fails(_write(tmp_path, "r2.json", json.dumps(offline)), "a Offline run has no open-loop")
    _fails(
        _write(tmp_path, "r3.json", json.dumps(dict(data, schema_version=2))), "schema_version 2"
    )
    _fails(
        _write(tmp_path, "r4.json", recorded_run.read_text()[:500]),
        "not valid JSON",
        format="loadtest",
    )
    bad_law = json.loads(json.dumps(data))
    del bad_law["records"]
    bad_law["settings"]["arrival_law"] = {"name": "weibull"}
    _fails(_write(tmp_path, "r5.json", json.dumps(bad_law)), "malformed settings")


def test_wrong_format_unit_or_file_is_one_line(tmp_path):
    path = _write(tmp_path, "conv.jsonl", MOONCAKE)
    _fails(path, "unknown trace format 'parquet'", format="parquet")
    _fails(path, "has its own time unit", unit="ms")
    _fails(
        _write(tmp_path, "t.csv", "time\n1\n"), "unknown time unit 'fortnights'", unit="fortnights"
    )
    _fails(_write(tmp_path, "u.csv", "time_ms\n1\n"), "says ms, but s was given", unit="s")
    _fails(tmp_path / "missing.csv", "no such trace file")
    _fails(tmp_path, "is a directory")
    _fails(_write(tmp_path, "x.json", '{"what": 1}'), "no known trace format")


# --- replay options ------------------------------------------------------------------------------


def _trace(times_ms: list[int]) -> Trace:
    times = np.array(times_ms, dtype=np.int64) * MS
    return Trace(times, TraceRows(np.arange(len(times))), "t")


def test_window_speedup_and_idle_cap_apply_in_order():
    trace = _trace([0, 100, 200, 10_000, 10_050, 20_000])
    assert trace.replayed(ReplayOptions()) is trace  # nothing asked: untouched
    window = trace.replayed(ReplayOptions(start_ns=150 * MS, end_ns=20_000 * MS))
    assert window.times_ns.tolist() == [50 * MS, 9850 * MS, 9900 * MS]  # from the window's start
    assert window.rows.index.tolist() == [2, 3, 4]  # each query keeps its trace index
    fast = trace.replayed(ReplayOptions(speedup=4))
    assert fast.times_ns.tolist() == [0, 25 * MS, 50 * MS, 2500 * MS, 2512500000, 5000 * MS]
    capped = trace.replayed(ReplayOptions(speedup=2, max_gap_ns=1 * NS))
    assert capped.times_ns.tolist() == [0, 50 * MS, 100 * MS, 1100 * MS, 1125 * MS, 2125 * MS]
    assert "speed-up ×2, gaps capped at 1 s" in capped.source


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"speedup": 0}, "--speedup must be in"),
        ({"speedup": float("nan")}, "--speedup must be a finite number"),
        ({"speedup": float("inf")}, "--speedup must be a finite number"),
        ({"max_gap_ns": 0}, "idle-gap cap must be > 0"),
        ({"start_ns": -1}, "start must be ≥ 0"),
        ({"start_ns": 5, "end_ns": 5}, "end must be after its start"),
    ],
)
def test_bad_replay_options_are_one_line(options, says):
    with pytest.raises(SettingsError, match=says):
        ReplayOptions(**options)


def test_a_window_with_no_rows_is_one_line():
    with pytest.raises(
        SettingsError, match=r"t: the window window 50 s-end holds none of its 3 rows"
    ):
        _trace([0, 1, 2]).replayed(ReplayOptions(start_ns=50 * NS))


def test_load_trace_is_read_then_replayed(tmp_path):
    path = _write(tmp_path, "conv.jsonl", MOONCAKE)
    law = load_trace(path, options=ReplayOptions(speedup=2))
    assert law.times_ns.tolist() == [0, 750 * MS, 750 * MS, 1125 * MS + 250_000]
    assert law.rows is not None and law.rows.input_tokens.tolist() == [6955, 512, 700, 1]
    arrivals = ServerSettings(qps=1, target_latency_ns=MS, arrival_law=law).arrivals
    assert arrivals.describe().startswith("mooncake trace conv.jsonl (speed-up ×2): 4 queries")


# --- the rows travel with the queries ------------------------------------------------------------


@pytest.mark.parametrize("shards", [1, 2, 3, 7])
def test_shards_of_a_trace_union_to_the_whole_with_indices_kept(tmp_path, shards):
    rng = np.random.default_rng(3)
    times = np.sort(rng.integers(0, 10_000, size=500))
    lines = ["time_ms,model,input_tokens,output_tokens"] + [
        f"{t},{'ab'[i % 2]},{i},{2 * i}" for i, t in enumerate(times)
    ]
    law = load_trace(_write(tmp_path, "t.csv", "\n".join(lines) + "\n"))
    arrivals = ServerSettings(
        qps=1, target_latency_ns=MS, arrival_law=law, schedule_seed=5
    ).arrivals
    whole = schedule_of(arrivals, 16, 1)
    assert whole.rows is not None and whole.rows.index.tolist() == list(range(500))
    owners = shard_owners(len(whole), arrivals.seed, shards)
    parts = [deal(whole, arrivals.seed, k, shards) for k in range(shards)]
    for k, part in enumerate(parts):
        mine = np.flatnonzero(owners == k)
        assert part.rows is not None and part.rows.index.tolist() == mine.tolist()
        assert np.array_equal(part.rows.input_tokens, mine)  # each row's lengths stay with it
        assert np.array_equal(part.rows.output_tokens, 2 * mine)
        assert [part.rows.model_of(i) for i in range(len(part))] == ["ab"[i % 2] for i in mine]
    merged = merged_schedule(parts)
    assert np.array_equal(merged.scheduled_ns, whole.scheduled_ns)
    assert sorted(merged.rows.index.tolist()) == list(range(500))
    order = np.argsort(merged.rows.index, kind="stable")
    assert np.array_equal(merged.scheduled_ns[order], whole.scheduled_ns)
    assert np.array_equal(merged.sample_index[order], whole.sample_index)


def test_a_shard_plan_carries_the_trace_rows_to_each_worker(tmp_path):
    from loadtest.core.settings import ClientSettings, Protocol, TargetSettings
    from loadtest.shards.plan import ShardPlan

    lines = [
        json.dumps({"timestamp": 7 * k, "input_length": k, "output_length": 1, "hash_ids": []})
        for k in range(200)
    ]
    law = load_trace(_write(tmp_path, "conv.jsonl", "\n".join(lines) + "\n"))
    settings = ServerSettings(qps=1, target_latency_ns=MS, arrival_law=law, schedule_seed=2)
    target = TargetSettings(url="fake://", protocol=Protocol.GRPC, model="fake")
    client = ClientSettings(workers=3, cpu_count=4)
    plans = [
        ShardPlan(target, settings, client, shard=k, shards=3, library_size=8) for k in range(3)
    ]
    crossed = [pickle.loads(pickle.dumps(plan)) for plan in plans]  # as to a process or actor
    parts = [plan.schedule() for plan in crossed]
    assert all(part.rows is not None for part in parts)
    indices = sorted(i for part in parts for i in part.rows.index.tolist())
    assert indices == list(range(len(law.times_ns)))  # every trace row once, by its index
    for part in parts:
        assert np.array_equal(part.scheduled_ns, law.times_ns[part.rows.index])
        assert np.array_equal(part.rows.input_tokens, law.rows.input_tokens[part.rows.index])


def test_a_staged_run_on_the_fake_target_shows_each_stages_own_rate():
    """Each query's stage is recovered from the records' due times by the stage boundaries, so
    a report can judge each stage alone."""
    from loadtest.core.arrivals import POISSON
    from loadtest.core.stages import Staged, parse_stages

    profile = parse_stages("1s:100,1s:400,1s:0,1s:200")
    law = Staged(POISSON, profile)
    settings = ServerSettings(
        qps=profile.mean_qps, target_latency_ns=50 * MS, arrival_law=law, schedule_seed=3
    )
    records = _play(settings)
    assert records.ok.all()
    stage = settings.arrivals.stage_index(records.scheduled_ns)
    counts = np.bincount(stage, minlength=4)
    for count, rate in zip(counts, (100, 400, 0, 200), strict=True):
        assert abs(count - rate) <= 5 * np.sqrt(max(rate, 1)), (counts, rate)
    latency = records.completed_ns - records.scheduled_ns
    assert all(np.percentile(latency[stage == k], 99) < 50 * MS for k in (0, 1, 3))


def test_a_trace_law_pickles_compares_and_checks_its_samples(tmp_path):
    text = "time_ms,sample\n0,3\n5,20\n"
    law = load_trace(_write(tmp_path, "t.csv", text))
    back = pickle.loads(pickle.dumps(law))
    assert back == law and hash(back) == hash(law) and back.rows == law.rows
    assert law != dataclasses.replace(law, rows=None)
    assert not law.rows.index.flags.writeable  # frozen through and through
    settings = ServerSettings(qps=1, target_latency_ns=MS, arrival_law=law, sample_count=8)
    with pytest.raises(SettingsError, match=r"names samples 3-20 but the sample library holds 8"):
        schedule_of(settings.arrivals, 8, 1)
    assert schedule_of(settings.arrivals, 21, 1).sample_index.tolist() == [3, 20]
