"""One worker's streaming client against the stub: tokens/s on schedule, client CPU per token.

Issue #28's goal: one worker streams >= 100 000 tokens/s while keeping its schedule, at <= 10 µs
of client CPU per token. The stub (`loadtest stub`, its gRPC side the lean wire server unless
`--grpc-server grpcio`) serves a copy of llm_known's config with the law zeroed (a = b = c = 0),
so every answer's tokens go out at once: the server as cheap as it gets, the client's roofline.
`--token-ms C` keeps a = b = 0 but spaces each answer's tokens C ms apart, as a real server's
decode steps are: the same tokens/s then
arrive spread over many concurrent answers instead of in one burst per answer (a burst of 256
events holds the loop ~2 ms, which is what makes the zeroed law's sends late).

For each protocol (grpc-stream: one multiplexed ModelStreamInfer stream on the wire client;
grpc-stream-grpcio: the same on grpc.aio, the cross-check; http-stream:
generate_stream SSE; openai / openai-chat: the stub's OpenAI side, /v1/completions and
/v1/chat/completions SSE with a usage chunk and [DONE], issue #29) and each request rate of a
ladder, a constant schedule of requests asking `--tokens` tokens each is played for `--seconds` by
the runner in this process, and the line says:

- tokens/s: Σ server token counts / (last completion − first scheduled time);
- kept: every query ok, and p99 send lag <= 1 ms (the late threshold), the schedule held;
- client µs/token: this process's user+system CPU over the run / tokens;
- stub cores: the stub process's CPU over the run / wall time (the roofline's own cost: on a
  2-core machine a stub near 1 core is the limit, not the client).

    python benchmarks/stream_client.py [--tokens 64] [--seconds 4] [--token-ms 0]
        [--rates 200,400,800,1600] [--grpc-rates 200,400,800,1600] [--grpcio-rates 50,100,200]
        [--grpc-server wire]
        [--protocols http-stream,openai,openai-chat,grpc-stream,grpc-stream-grpcio]

The output goes to a new benchmarks/results/stream-client-<date>-<time>.txt by default.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from results_file import Output, add_output_arguments, claim_output, footer, header

from loadtest.core.schedule import Schedule
from loadtest.core.units import LATE_THRESHOLD_NS, NS_PER_S
from loadtest.engine import timing
from loadtest.engine.runner import Runner
from loadtest.stub.process import running_stub
from loadtest.targets.openai_sse import OpenAiSseTarget
from loadtest.targets.triton_sse import TritonSseTarget
from loadtest.targets.triton_stream import TritonStreamTarget

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def law_repository(root: Path, token_ms: float) -> Path:
    """llm_known's config without its timing parameters (every token at once), or with only
    one token every `token_ms` when that is > 0."""
    lines = (REPO / "model_repository" / "llm_known" / "config.pbtxt").read_text().splitlines()
    kept, skip = [], 0
    for k, line in enumerate(lines):
        if skip:
            skip -= 1
            continue
        if line.startswith("parameters {") and k + 1 < len(lines):
            key = lines[k + 1]
            if any(name in key for name in ("ttft_base_ms", "ttft_per_input", "ms_per_output")):
                skip = 5  # key, value {, string_value, }, }
                continue
        kept.append(line)
    if token_ms > 0:
        kept += ["parameters {", '  key: "ms_per_output_token"', "  value {",
                 f'    string_value: "{token_ms:g}"', "  }", "}"]  # fmt: skip
    (root / "llm_known").mkdir()
    (root / "llm_known" / "config.pbtxt").write_text("\n".join(kept) + "\n")
    return root


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def sample(tokens: int) -> dict[str, np.ndarray]:
    return {
        "text_input": np.array([b"one two three four five six seven eight"], dtype=object),
        "max_tokens": np.array([tokens], dtype=np.int32),
        "stream": np.array([True]),
    }


def one_run(protocol: str, url: str, rate: float, tokens: int, seconds: float, stub_pid: int):
    count = max(int(rate * seconds), 1)

    async def play():
        target: TritonStreamTarget | TritonSseTarget | OpenAiSseTarget
        if protocol.startswith("grpc-stream"):
            client = "grpcio" if protocol == "grpc-stream-grpcio" else "wire"
            target = TritonStreamTarget(url, "llm_known", load_client=client)
        elif protocol in ("openai", "openai-chat"):
            target = OpenAiSseTarget(url, "llm_known", chat=protocol == "openai-chat")
        else:
            target = TritonSseTarget(url, "llm_known")
        await target.open()
        await target.prepare([sample(tokens)])
        due = (np.arange(count) * (NS_PER_S / rate)).astype(np.int64)
        schedule = Schedule(due, np.zeros(count, np.int32))
        try:
            before = resource.getrusage(resource.RUSAGE_SELF)
            stub_before, wall_before = process_cpu_s(stub_pid), time.monotonic()
            outcome = await Runner(schedule, target).run(handle_sigint=False)
            after = resource.getrusage(resource.RUSAGE_SELF)
            stub_cores = (process_cpu_s(stub_pid) - stub_before) / (time.monotonic() - wall_before)
        finally:
            await target.close()
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        return outcome.records, cpu, stub_cores

    records, cpu_s, stub_cores = timing.run(play(), "precise")
    ok = records.ok
    total = int(records.final_count[ok].sum())
    span_ns = int(records.completed_ns[ok].max() - records.scheduled_ns.min()) if ok.any() else 1
    lag = records.send_lag_ns()
    p99_lag = int(np.sort(lag)[int(len(lag) * 0.99)]) if len(lag) else 0
    kept = bool(ok.all()) and p99_lag <= LATE_THRESHOLD_NS
    return {
        "tokens_per_s": total / (span_ns / NS_PER_S),
        "failed": int((~ok).sum()),
        "p99_lag_ms": p99_lag / 1e6,
        "kept": kept,
        "us_per_token": cpu_s / max(total, 1) * 1e6,
        "stub_cores": stub_cores,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=64, help="tokens asked per request")
    parser.add_argument(
        "--token-ms",
        type=float,
        default=0.0,
        help="ms between an answer's tokens (0: every token at once, the roofline)",
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="schedule length per run")
    parser.add_argument(
        "--rates",
        default="200,400,800,1600",
        help="the SSE protocols' requests/s ladder (http-stream, openai, openai-chat)",
    )
    parser.add_argument(
        "--grpc-rates", default="200,400,800,1600", help="grpc-stream's requests/s ladder"
    )
    parser.add_argument(
        "--grpcio-rates",
        default="50,100,200",
        help="grpc-stream-grpcio's ladder (grpc.aio keeps ~10k tokens/s: lower rates)",
    )
    parser.add_argument(
        "--grpc-server",
        choices=("wire", "grpcio"),
        default="wire",
        help="the stub's gRPC side: its lean wire server, or grpc.aio",
    )
    parser.add_argument(
        "--protocols", default="http-stream,openai,grpc-stream", help="which, comma-separated"
    )
    add_output_arguments(parser, "stream-client")
    args = parser.parse_args()
    output = claim_output(parser, args.output, args.force, "stream-client")
    sse_rates = [float(r) for r in args.rates.split(",")]
    ladders = {
        "http-stream": sse_rates,
        "openai": sse_rates,
        "openai-chat": sse_rates,
        "grpc-stream": [float(r) for r in args.grpc_rates.split(",")],
        "grpc-stream-grpcio": [float(r) for r in args.grpcio_rates.split(",")],
    }
    out = Output()
    header(out, "stream_client.py", os.cpu_count() or 0)
    out(f"{args.tokens} tokens per request, {args.seconds:g} s per run, constant schedule")
    out(f"the stub's gRPC side: {args.grpc_server}")
    out(
        f"tokens {args.token_ms:g} ms apart in each answer"
        if args.token_ms > 0
        else "every answer's tokens at once (the zeroed law)"
    )
    with tempfile.TemporaryDirectory() as root:
        repository = law_repository(Path(root), args.token_ms)
        stub_options = ("--repository", str(repository), "--grpc-server", args.grpc_server)
        with running_stub(*stub_options) as stub:
            for protocol in args.protocols.split(","):
                url = stub.grpc_url if protocol.startswith("grpc-stream") else stub.http_url
                out(f"\n{protocol}")
                out("  req/s   tokens/s  kept  failed  p99 lag ms  client µs/token  stub cores")
                for rate in ladders[protocol]:
                    r = one_run(protocol, url, rate, args.tokens, args.seconds, stub.pid)
                    kept = "yes" if r["kept"] else "no"
                    out(
                        f"  {rate:5.0f}  {r['tokens_per_s']:9.0f}  {kept:>4}"
                        f"  {r['failed']:6d}  {r['p99_lag_ms']:10.3f}  {r['us_per_token']:15.2f}"
                        f"  {r['stub_cores']:10.2f}"
                    )
    footer(out)
    out.write(output)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
