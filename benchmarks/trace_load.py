"""How long a recorded trace takes to load: read, replayed and made into a run's schedule.

For each format (engine/traces/) a trace of `--rows` queries (a 60 s Poisson log at rows / 60
QPS, with lengths and models where the format has them) is written to a temporary file, then
timed from the file to the schedule a run plays: `load_trace` (read, checked, replayed with a
speed-up of 1.5) and `schedule_of` (the whole schedule with the trace's rows). The issue's goal
is a 100 000-row trace ready in well under 2 s; this prints the figure instead of asserting it.

    python benchmarks/trace_load.py [--rows 100000] [--repeats 3] [--formats mooncake,azure]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from results_file import Output, add_output_arguments, claim_output, footer, header

from loadtest.core.schedule import schedule_of
from loadtest.core.settings import ServerSettings
from loadtest.core.trace import ReplayOptions
from loadtest.engine.traces import FORMATS, load_trace


def _times_s(rows: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    return np.cumsum(rng.exponential(60 / rows, size=rows))


def _lengths(rows: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    return rng.integers(1, 8000, size=rows), rng.integers(1, 1000, size=rows)


def write_mooncake(path: Path, rows: int) -> Path:
    times, (inputs, outputs) = _times_s(rows), _lengths(rows)
    with path.open("w") as out:
        for t, i, o in zip(times * 1000, inputs, outputs, strict=True):
            blocks = list(range(int(i) // 512 + 1))
            record = {"timestamp": int(t), "input_length": int(i), "output_length": int(o)}
            out.write(json.dumps({**record, "hash_ids": blocks}) + "\n")
    return path


def write_azure(path: Path, rows: int) -> Path:
    start = np.datetime64("2023-11-16T18:15:46", "ns")
    stamps = start + np.round(_times_s(rows) * 1e7).astype(np.int64) * 100
    inputs, outputs = _lengths(rows)
    with path.open("w") as out:
        out.write("TIMESTAMP,ContextTokens,GeneratedTokens\n")
        for stamp, i, o in zip(stamps, inputs, outputs, strict=True):
            text = str(stamp).replace("T", " ")[:27]  # 7 fractional digits, as Azure writes
            out.write(f"{text},{i},{o}\n")
    return path


def write_burstgpt(path: Path, rows: int) -> Path:
    times, (inputs, outputs) = _times_s(rows) + 86_400 * 30, _lengths(rows)
    with path.open("w") as out:
        out.write("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n")
        for k, (t, i, o) in enumerate(zip(times, inputs, outputs, strict=True)):
            model = "GPT-4" if k % 5 == 0 else "ChatGPT"
            out.write(f"{t:.0f},{model},{i},{o},{i + o},Conversation log\n")
    return path


def write_csv(path: Path, rows: int) -> Path:
    times, (inputs, outputs) = _times_s(rows), _lengths(rows)
    with path.open("w") as out:
        out.write("time_ms,model,input_tokens,output_tokens\n")
        for k, (t, i, o) in enumerate(zip(times * 1000, inputs, outputs, strict=True)):
            out.write(f"{t:.3f},{'ab'[k % 2]},{i},{o}\n")
    return path


def write_jsonl(path: Path, rows: int) -> Path:
    times = _times_s(rows)
    with path.open("w") as out:
        for t in times * 1e9:
            out.write(json.dumps({"time_ns": int(t)}) + "\n")
    return path


def write_loadgen(path: Path, rows: int) -> Path:
    """LoadGen's layout (tests/data/traces/mlperf_log_trace.json): per sample a counter, a
    begin, an end and a completion event, one per line, ts in µs with 3 decimals."""
    times_us = _times_s(rows) * 1e6
    with path.open("w") as out:
        out.write('{"traceEvents":[\n')
        for k, ts in enumerate(times_us):
            out.write(f'{{"name":"Latency","ph": "C","pid":1,"ts":{ts:.3f},"args":{{ '
                      f'"issue_delay":80,"issue_to_done":18000}}}},\n')  # fmt: skip
            out.write(f'{{"name":"Sample","cat":"default","ph":"b","pid":1,"id":{k},'
                      f'"ts":{ts:.3f},"args":{{"sample_seq":{k},"query_seq":{k},'
                      f'"sample_idx":{k % 1024},"issue_start_ns":80,'
                      '"complete_ns":18080}},\n')  # fmt: skip
            out.write(f'{{"name":"Sample","cat":"default","ph":"e", "pid":1,"id":{k},'
                      f'"ts":{ts + 18.08:.3f}}},\n')  # fmt: skip
            out.write(f'{{"name":"QuerySamplesComplete","ph":"X","pid":1,"tid":1,'
                      f'"ts":{ts + 18.1:.3f},"dur":2.183,"args":{{}}}},\n')  # fmt: skip
        out.write('{"name":"LastTrace"}\n],\n"displayTimeUnit":"ns",\n"otherData":{}\n}\n')
    return path


def write_loadtest(path: Path, rows: int) -> Path:
    scheduled = np.round(_times_s(rows) * 1e9).astype(np.int64)
    columns = {
        "scheduled_ns": scheduled.tolist(),
        "sample_index": (np.arange(rows) % 64).tolist(),
        "issued_ns": (scheduled + 1000).tolist(),
        "completed_ns": (scheduled + 2_000_000).tolist(),
        "status": [1] * rows,
        "error_code": [0] * rows,
    }
    data = {
        "schema": "loadtest.result",
        "schema_version": 1,
        "scenario": "Server",
        "records": {"error_kinds": [], "samples_per_query": 1, "columns": columns},
    }
    path.write_text(json.dumps(data, indent=1))
    return path


WRITERS: dict[str, tuple[str, Callable[[Path, int], Path]]] = {
    "loadtest": ("result.json", write_loadtest),
    "loadgen": ("mlperf_log_trace.json", write_loadgen),
    "mooncake": ("trace.jsonl", write_mooncake),
    "azure": ("AzureLLMInferenceTrace_conv.csv", write_azure),
    "burstgpt": ("BurstGPT_1.csv", write_burstgpt),
    "csv": ("times.csv", write_csv),
    "jsonl": ("times.jsonl", write_jsonl),
}


def time_one(path: Path, repeats: int) -> tuple[float, float, int]:
    """Best-of-`repeats` seconds for load_trace and for load_trace + schedule_of, and the rows."""
    best_load = best_total = float("inf")
    count = 0
    for _ in range(repeats):
        start = time.perf_counter()
        law = load_trace(path, options=ReplayOptions(speedup=1.5))
        loaded = time.perf_counter()
        settings = ServerSettings(
            qps=1, target_latency_ns=10**8, arrival_law=law, sample_count=1024
        )
        schedule = schedule_of(settings.arrivals, settings.sample_count, settings.sample_seed)
        done = time.perf_counter()
        best_load, best_total = min(best_load, loaded - start), min(best_total, done - start)
        count = len(schedule)
    return best_load, best_total, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many loads")
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated")
    add_output_arguments(parser, "trace-load")
    args = parser.parse_args()
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if not formats or set(formats) - set(WRITERS):
        parser.error(f"--formats takes {', '.join(WRITERS)}")
    if args.rows < 2 or args.repeats < 1:
        parser.error("--rows must be ≥ 2 and --repeats ≥ 1")
    output = claim_output(parser, args.output, args.force, "trace-load")
    out = Output()
    header(out, "trace_load.py", len(os.sched_getaffinity(0)))
    out(f"{args.rows:,}-row traces (60 s at {args.rows / 60:,.0f} QPS), best of {args.repeats};")
    out("load = read + check + replay (speed-up 1.5) -> Timestamps; +schedule = schedule_of too")
    out("format     file MB   load s  +schedule s  queries")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in formats:
                file_name, write = WRITERS[name]
                path = write(Path(tmp) / file_name, args.rows)
                load_s, total_s, count = time_one(path, args.repeats)
                size_mb = path.stat().st_size / 1e6
                out(f"{name:9} {size_mb:8.1f} {load_s:8.3f} {total_s:12.3f}  {count:,}")
    finally:
        footer(out)
        out.write(output)


if __name__ == "__main__":
    main()
