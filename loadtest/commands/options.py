"""Every command-line option that more than one command takes, declared once.

A command names its parameter with one of these aliases and gives the default named beside it (typer
takes defaults from the signature, not from the alias). tests/test_options.py checks that every
command taking one of these flags takes it from here, with the same help text and default.

Defaults that differ by scenario are the command's own: --min-queries (100 for Server and compare,
1 otherwise) and --percentile (90 for single-stream, after MLPerf; 99 otherwise).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

from loadtest.core.settings import (
    GRPC_CLIENTS,
    GRPC_COMPRESSIONS,
    LATE_THRESHOLD_NS,
    MAX_CONNECTIONS,
    MAX_GRPC_KEEPALIVE_S,
    NS_PER_MS,
    LoopKind,
    Protocol,
    SharedMemoryKind,
)
from loadtest.server.deployment import EmbeddedMode
from loadtest.targets.triton_common import DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT

# --- parsers: a value no run can use is a usage error (exit 2, one line), never a traceback ---
# No float flag means anything beyond a billion (seconds: 31 years; queries per second; ms) or,
# when not zero, below a billionth (a nanosecond; one query in 31 years): values past these reach
# the schedule and the clock as overflowing nanoseconds or infinite intervals (#26), so they are
# refused with the flag's name. 1e9 s in ns (1e18) still fits the int64 clocks.
MAX_MAGNITUDE = 1e9
MIN_MAGNITUDE = 1e-9


def finite_float(text: str) -> float:
    """Every float flag goes through this: nan, inf and magnitudes outside [1e-9, 1e9] (zero
    aside) are refused before anything runs."""
    try:
        value = float(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {text}")
    if abs(value) > MAX_MAGNITUDE:
        raise typer.BadParameter(f"must be at most {MAX_MAGNITUDE:g} in size, got {text}")
    if value != 0 and abs(value) < MIN_MAGNITUDE:
        raise typer.BadParameter(f"must be 0 or at least {MIN_MAGNITUDE:g} in size, got {text}")
    return value


AUTO = "auto"


def auto_or_positive_float(text: str) -> str:
    """--expected-qps: `auto`, or a finite positive number (through finite_float), kept as its
    text; the command turns it into a float or None (auto) with `auto_value`."""
    if text.strip().lower() == AUTO:
        return AUTO
    value = finite_float(text)
    if not value > 0:
        raise typer.BadParameter(f"--expected-qps must be > 0 (or 'auto'), got {text}")
    return repr(value)


def auto_value(text: str) -> float | None:
    """What auto_or_positive_float kept: None for auto, else the number."""
    return None if text == AUTO else float(auto_or_positive_float(text))


def seed_value(text: str) -> int:
    """Seeds feed numpy's PCG64, which takes non-negative integers only."""
    try:
        value = int(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an integer") from None
    if value < 0:
        raise typer.BadParameter(f"a seed must be ≥ 0, got {value}")
    return value


# MLPerf's largest performance sample count is DLRM's 204 800; a bound keeps a typo such as
# --samples 99999999999 from building a library for hours (#26).
MAX_SAMPLES = 1 << 20


def sample_count(text: str) -> int:
    """--samples: 1 to MAX_SAMPLES samples in the in-memory library."""
    try:
        value = int(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an integer") from None
    if not 1 <= value <= MAX_SAMPLES:
        raise typer.BadParameter(f"the sample library holds 1..{MAX_SAMPLES} samples, got {value}")
    return value


def port_number(text: str) -> int:
    """A TCP port: 0 (pick a free one) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise typer.BadParameter(f"a port is 0..65535, got {value}")
    return value


def url_text(text: str) -> str:
    """--url: a URL whose port, when given, is a number in 0..65535 (urlsplit's own reasons
    otherwise surfaced later as exit 1, #26); the rest is checked with the protocol
    (core/settings.TargetSettings). An empty --url is refused: it read as none given, so the
    default address was used (and an embedded Triton started there)."""
    if not text.strip():
        raise typer.BadParameter("must not be empty (leave --url out for the default address)")
    try:
        parts = urlsplit(text if "://" in text else f"//{text}")
        parts.port  # noqa: B018 - reading it is the check: ValueError when out of range
    except ValueError as exc:
        raise typer.BadParameter(f"{text.rsplit('@', 1)[-1]!r}: {exc}") from None
    return text


# --- target: what is measured, and where --------------------------------------------------------
ModelOption = Annotated[str, typer.Option("--model", "-m", help="Model to load test.")]
UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        parser=url_text,
        help="Triton address (default 127.0.0.1:8001 for gRPC, :8000 for HTTP), or an "
        "OpenAI-compatible server's root or /v1 base (--protocol openai); https:// or grpcs:// "
        "for TLS; user:password@ for Basic auth (the password is never written).",
    ),
]
ProtocolOption = Annotated[
    Protocol | None,
    typer.Option(
        "--protocol",
        help="Wire protocol: Triton's grpc / http, its streams grpc-stream / http-stream (a "
        "decoupled, LLM model), or an OpenAI-compatible server's openai (/v1/completions) / "
        "openai-chat (/v1/chat/completions). Default: grpc, or grpc-stream for a decoupled "
        "model (said before the run; result.json's target.protocol_choice).",
        show_default=False,
    ),
]
IgnoreEosOption = Annotated[
    bool,
    typer.Option(
        "--ignore-eos",
        help="--protocol openai/openai-chat: ask for exactly max_tokens tokens per answer "
        '("ignore_eos": true, "min_tokens": max_tokens; vLLM and trtllm-serve take them).',
    ),
]
VersionOption = Annotated[str, typer.Option("--model-version", help="Model version ('' = latest).")]
TimeoutOption = Annotated[
    float,
    typer.Option(
        "--timeout",
        parser=finite_float,
        help="Per-request deadline in seconds, from the request's send: a query not answered by "
        "then counts as error kind 'timeout'. Connecting, metadata and warm-up get max(30 s, "
        "this).",
    ),
]
ServerTimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--server-timeout",
        parser=finite_float,
        help="Also send Triton the request's 'timeout' parameter (these seconds, in µs), so the "
        "server drops what the client no longer waits for; Triton applies it in the dynamic "
        "batcher's queue where the model's queue policy allows a timeout override. Its "
        "rejections count as error kind 'server-timeout'.",
        show_default=False,
    ),
]
EmbeddedOption = Annotated[
    EmbeddedMode,
    typer.Option(
        "--embedded",
        help="Start the embedded Triton: auto = when nothing answers at a loopback URL.",
    ),
]
RepositoryOption = Annotated[
    Path,
    typer.Option(
        "--repository", help="Model repository for the embedded Triton (and compare's native side)."
    ),
]


def _one_of(value: str, choices: tuple[str, ...]) -> str:
    name = value.strip().lower()
    if name not in choices:
        raise typer.BadParameter(f"{value!r}: use one of {', '.join(choices)}")
    return name


GrpcClientOption = Annotated[
    str,
    typer.Option(
        "--grpc-client",
        callback=lambda value: _one_of(value, GRPC_CLIENTS),
        help="gRPC load calls' client (--protocol grpc and grpc-stream): wire (lean, the "
        "default) or grpcio (grpc.aio, a cross-check). Recorded in result.json.",
    ),
]
GrpcCompressionOption = Annotated[
    str,
    typer.Option(
        "--grpc-compression",
        callback=lambda value: _one_of(value, GRPC_COMPRESSIONS),
        help="Compress gRPC requests as your clients do: none, gzip or deflate (wire client).",
    ),
]


def _keepalive_in_range(value: float) -> float:
    if not (value == 0 or 0.001 <= value <= MAX_GRPC_KEEPALIVE_S):
        raise typer.BadParameter(f"0 (none) or 0.001 to {MAX_GRPC_KEEPALIVE_S:g} s, got {value:g}")
    return value


GrpcKeepaliveOption = Annotated[
    float,
    typer.Option(
        "--grpc-keepalive",
        parser=finite_float,
        callback=_keepalive_in_range,
        help="Send a keepalive PING this often (s) while gRPC calls are out; one unanswered "
        "for 20 s fails its connection (wire client). 0 = none.",
    ),
]
ConnectionsOption = Annotated[
    int,
    typer.Option(
        "--connections",
        min=1,
        max=MAX_CONNECTIONS,
        help="gRPC connections per worker; calls go round robin over them (replicas behind an "
        "L4 balancer each get a share). Wire client.",
    ),
]
TIMEOUT_S = 30.0
REPOSITORY = Path("model_repository")

# --- samples: the in-memory sample library ------------------------------------------------------
SampleSeedOption = Annotated[
    int,
    typer.Option("--sample-seed", parser=seed_value, help="Sample order and random-input seed."),
]
SamplesOption = Annotated[
    int,
    typer.Option("--samples", parser=sample_count, help="Size of the in-memory sample library."),
]
InputDataOption = Annotated[
    Path | None,
    typer.Option(
        "--input-data",
        help="Real inputs: .npz, perf_analyzer .json, .npy, or a directory of <input>.npy files, "
        "of sample subdirectories, of pictures (resized and normalised for the model) or of raw "
        "<input> files; for a text model, a prompts file (JSON lines of text and max_tokens, or "
        "ShareGPT conversations). See README, 'Real inputs' and 'Prompts and lengths'.",
    ),
]


def length_law_text(text: str) -> str:
    """--input-tokens/--output-tokens: a law `core.lengths.length_law_named` reads."""
    from loadtest.core.lengths import length_law_named
    from loadtest.errors import SettingsError

    try:
        length_law_named(text)
    except SettingsError as exc:
        raise typer.BadParameter(str(exc)) from None
    return text.strip().lower()


def input_format_text(text: str) -> str:
    """--input-format: one of the prompts-file forms."""
    from loadtest.core.prompts import INPUT_FORMATS

    name = text.strip().lower()
    if name not in INPUT_FORMATS:
        raise typer.BadParameter(f"{text!r}: one of {', '.join(INPUT_FORMATS)}")
    return name


# A text model's prompts (engine/prompts/): lengths, the tokenizer that counts, the file's form.
InputTokensOption = Annotated[
    str | None,
    typer.Option(
        "--input-tokens",
        parser=length_law_text,
        help="Prompt length law in tokens: fixed:N, uniform:LO:HI, normal:MEAN:SD (rounded, "
        "clipped to ≥ 1), lognormal:MEAN:SD (the lengths' own mean and SD); seeded by "
        "--sample-seed, rendered as text of exactly that many tokens by --tokenizer.",
        show_default=False,
    ),
]
OutputTokensOption = Annotated[
    str | None,
    typer.Option(
        "--output-tokens",
        parser=length_law_text,
        help="Answer length law (same forms as --input-tokens), sent as each request's "
        "max_tokens; with --protocol openai --ignore-eos the answer is exactly that long.",
        show_default=False,
    ),
]
TokenizerOption = Annotated[
    Path | None,
    typer.Option(
        "--tokenizer",
        help="A Hugging Face tokenizer.json that renders and counts prompt tokens (special "
        "tokens included); default: one token = one whitespace word.",
        show_default=False,
    ),
]
InputFormatOption = Annotated[
    str | None,
    typer.Option(
        "--input-format",
        parser=input_format_text,
        help="The prompts file's form, jsonl or sharegpt (default: told from its content).",
        show_default=False,
    ),
]
SharedPrefixOption = Annotated[
    bool,
    typer.Option(
        "--shared-prefix",
        help="With a Mooncake --trace: each hash id is one 512-token block rendered to the same "
        "text wherever it appears, so requests sharing hash_ids share a prompt prefix.",
    ),
]
ShapeOption = Annotated[
    list[str] | None,
    typer.Option("--shape", help="Concrete shape for a dynamic input: NAME:D1,D2,..."),
]
SAMPLE_SEED = 1
SAMPLES = 64

# --- output ----------------------------------------------------------------------------------
OutputOption = Annotated[
    Path | None,
    typer.Option(
        "--output",
        help="Directory for the results: result.json and mlperf_log_summary.txt (find-peak.json, "
        "compare.json for those commands); default: results/<time>-<scenario>-<model>/.",
    ),
]
RecordsOption = Annotated[
    bool, typer.Option("--records/--no-records", help="Store per-query records in result.json.")
]
LiveOption = Annotated[
    bool, typer.Option("--live/--no-live", help="Live view while running (terminals only).")
]
HtmlOption = Annotated[
    Path | None,
    typer.Option(
        "--html", help="Also write a self-contained HTML report (plots, verdict) to this file."
    ),
]

# --- client: the load generator -----------------------------------------------------------------
WorkersOption = Annotated[
    int,
    typer.Option(
        "--workers",
        help="Generator processes; 0 = automatic from the rate (at most one per CPU core).",
    ),
]
LoopOption = Annotated[
    LoopKind,
    typer.Option("--loop", help="Event loop of each generator process (precise: µs timers)."),
]
RayOption = Annotated[
    str,
    typer.Option(
        "--ray",
        help="Place the workers on Ray actors of the cluster at this address (needs the ray "
        "extra); e.g. ray://head:10001 or auto.",
    ),
]
SharedMemoryOption = Annotated[
    SharedMemoryKind,
    typer.Option(
        "--shared-memory", help="Pass tensors through Triton shared memory (same host only)."
    ),
]

# --- TLS and request headers: every command that talks to a server --------------------------------
# scenarios.target_flags.access_flags turns them into AccessFlags, the one way into TargetSettings.
TlsOption = Annotated[
    bool,
    typer.Option(
        "--tls",
        help="TLS for a bare host:port --url (https:// and grpcs:// URLs select it themselves).",
    ),
]
CaCertOption = Annotated[
    Path | None,
    typer.Option(
        "--ca-cert", help="PEM CA certificate(s) to verify the server with (default: system roots)."
    ),
]
ClientCertOption = Annotated[
    Path | None,
    typer.Option(
        "--client-cert", help="PEM client certificate, for mutual TLS (with --client-key)."
    ),
]
ClientKeyOption = Annotated[
    Path | None, typer.Option("--client-key", help="PEM private key of --client-cert (mutual TLS).")
]
HeaderOption = Annotated[
    list[str] | None,
    typer.Option(
        "--header",
        "-H",
        help="NAME:VALUE sent with every request (HTTP header, gRPC metadata); repeatable. "
        "NAME:@env:VAR or NAME:@file:PATH reads the value from there (out of shell history "
        "and ps). Values are never written: reports show ***.",
    ),
]

# --- where results go ----------------------------------------------------------------------------
ForceOption = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Overwrite result files already in --output (and an existing --html file); without "
        "it such a run is refused before any load.",
    ),
]

# --- run length and judgement -------------------------------------------------------------------
DurationOption = Annotated[
    float | None,
    typer.Option(
        "--duration",
        parser=finite_float,
        help="Minimum duration of a run in seconds (default: 60, 600 with --mlperf; "
        "compare: 10 per run).",
    ),
]
MaxDurationOption = Annotated[
    float,
    typer.Option(
        "--max-duration",
        parser=finite_float,
        help="Stop issuing after this many seconds (0 = no cap).",
    ),
]
MinQueriesOption = Annotated[int, typer.Option("--min-queries", help="Minimum number of queries.")]
MlperfOption = Annotated[bool, typer.Option("--mlperf", help="Official minimums: 600 s duration.")]
TargetLatencyOption = Annotated[
    float | None,
    typer.Option(
        "--target-latency",
        parser=finite_float,
        help="Latency bound in ms (default: the model's MLPerf Server bound; single-/multi-stream: "
        "none, report only; there the bound is on the early-stopping estimate).",
    ),
]
PercentileOption = Annotated[
    float,
    typer.Option(
        "--percentile",
        parser=finite_float,
        help="Latency percentile the bound applies to (and the one reported), in (0, 100).",
    ),
]
LateThresholdOption = Annotated[
    float,
    typer.Option(
        "--late-threshold",
        parser=finite_float,
        help="A send later than this (ms) counts as late; see 'client kept up'.",
    ),
]
SeedOption = Annotated[
    int, typer.Option("--seed", parser=seed_value, help="Schedule (arrival times) seed.")
]
ErrorBudgetOption = Annotated[
    float | None,
    typer.Option(
        "--error-budget",
        parser=finite_float,
        help="Allowed share of failed queries, a fraction (e.g. 0.01); not with --mlperf, whose "
        "rule is that any failed query makes the run INVALID (the verdict says which rule).",
    ),
]
AbortOnErrorRateOption = Annotated[
    float | None,
    typer.Option(
        "--abort-on-error-rate",
        parser=finite_float,
        help="Stop a run that is already lost: when more than this fraction of the queries "
        "answered in the last --window seconds failed (partial result, its own reason).",
    ),
]
WindowOption = Annotated[
    float,
    typer.Option(
        "--window",
        parser=finite_float,
        help="The trailing window of --abort-on-error-rate, in seconds.",
    ),
]
PERCENTILE = 99.0
LATE_THRESHOLD_MS = LATE_THRESHOLD_NS / NS_PER_MS
ABORT_WINDOW_S = 10.0

# --- local servers (serve, stub) -----------------------------------------------------------------
HttpPortOption = Annotated[
    int, typer.Option("--http-port", parser=port_number, help="HTTP port; 0 = pick a free one.")
]
GrpcPortOption = Annotated[
    int, typer.Option("--grpc-port", parser=port_number, help="gRPC port; 0 = pick a free one.")
]
HTTP_PORT = DEFAULT_HTTP_PORT
GRPC_PORT = DEFAULT_GRPC_PORT
CheckOutputsOption = Annotated[
    float,
    typer.Option(
        "--check-outputs",
        parser=finite_float,
        help="Share of queries (e.g. 0.01) whose answers are compared with onnxruntime's on the "
        "same inputs; chosen at schedule time (seeded by --sample-seed). Any mismatch: INVALID.",
    ),
]
SameSampleOption = Annotated[
    bool,
    typer.Option(
        "--same-sample",
        help="After the run, the cache check: one sample sent repeatedly vs never-seen samples "
        "(interleaved, one in flight); a much faster repeated sample is a possible response "
        "cache: INVALID.",
    ),
]
# A streamed (LLM) run's token bounds (rules/tokens.py), held at --percentile.
TtftBoundOption = Annotated[
    float | None,
    typer.Option(
        "--ttft-bound",
        parser=finite_float,
        help="Bound (ms) on time to first token from the scheduled time, at --percentile, for a "
        "model that streams (--protocol grpc-stream).",
    ),
]
TpotBoundOption = Annotated[
    float | None,
    typer.Option(
        "--tpot-bound",
        parser=finite_float,
        help="Bound (ms) on time per output token, (e2e − TTFT)/(n_tokens − 1) per query, at "
        "--percentile, for a model that streams.",
    ),
]
MlperfModelOption = Annotated[
    str | None,
    typer.Option(
        "--mlperf-model",
        help="Take --ttft-bound and --tpot-bound from MLPerf's mlperf.conf for this model key "
        "(llama2-70b, llama3_1-8b, deepseek-r1, ... ; docs/STREAMING.md has the table).",
    ),
]


def slo_text(text: str) -> str:
    """--slo: an objective `core.slos.parse_slo` reads (ttft:500, tpot:50, e2e:2000)."""
    from loadtest.core.slos import parse_slo
    from loadtest.errors import SettingsError

    try:
        parse_slo(text)
    except SettingsError as exc:
        raise typer.BadParameter(str(exc).removeprefix("--slo ")) from None
    return text.strip()


# Goodput (rules/goodput.py): requests meeting every --slo at once; find-peak's goodput rule.
SloOption = Annotated[
    list[str] | None,
    typer.Option(
        "--slo",
        parser=slo_text,
        help="Per-request objective NAME:MS, repeatable: ttft (first token, from the scheduled "
        "time), tpot ((e2e − TTFT)/(n − 1)), e2e (from the scheduled time). Reports each one's "
        "attainment and goodput: requests meeting all at once (failures never do). ttft and tpot "
        "need a streaming target.",
        show_default=False,
    ),
]
GoodputTargetOption = Annotated[
    float | None,
    typer.Option(
        "--goodput-target",
        parser=finite_float,
        help="find-peak's goodput rule: the highest rate at which at least this percentage of "
        "requests meets every --slo (e.g. 99), instead of MLPerf's p99 bound.",
        show_default=False,
    ),
]

# --- arrivals: when queries are due (#27: core/arrivals.py, core/stages.py, engine/traces/) ----
# Each parser checks its value before anything runs (exit 2, one line); flag_groups.Arrival checks
# the ranges, turns them into the run's arrival law and refuses the combinations that contradict
# each other (exit 2 too).


def arrival_law_text(text: str) -> str:
    """--arrival: a law `core.arrivals.law_named` knows (poisson, constant, gamma:CV)."""
    from loadtest.core.arrivals import law_named
    from loadtest.errors import SettingsError

    try:
        law_named(text)
    except SettingsError as exc:
        raise typer.BadParameter(str(exc)) from None
    return text.strip().lower()


def stages_text(text: str) -> str:
    """--stages: a profile `core.stages.parse_stages` reads (30s:100,60s:100->400)."""
    from loadtest.core.stages import parse_stages
    from loadtest.errors import SettingsError

    try:
        parse_stages(text)
    except SettingsError as exc:
        raise typer.BadParameter(str(exc).removeprefix("--stages: ")) from None
    return text.strip()


def trace_format_name(text: str) -> str:
    from loadtest.engine.traces import FORMATS, NAMES

    name = text.strip().lower()
    if name not in FORMATS:
        raise typer.BadParameter(f"unknown trace format {text!r}: one of {NAMES}")
    return name


def trace_unit_name(text: str) -> str:
    from loadtest.engine.traces.common import UNITS_NS

    name = text.strip().lower()
    if name not in UNITS_NS:
        raise typer.BadParameter(f"unknown time unit {text!r}: one of {', '.join(UNITS_NS)}")
    return name


ArrivalOption = Annotated[
    str,
    typer.Option(
        "--arrival",
        parser=arrival_law_text,
        help="Arrival law: poisson (MLPerf), constant, or gamma:CV (gamma:burstiness=K as in "
        "vLLM); seeded by --seed, recorded in result.json. With --stages, the law within them.",
    ),
]
StagesOption = Annotated[
    str | None,
    typer.Option(
        "--stages",
        parser=stages_text,
        help="Load stages DURATION:RATE or DURATION:FROM->TO, comma-separated (e.g. "
        "30s:100,60s:100->400,30s:->100): played whole, judged per stage; not with --qps.",
        show_default=False,
    ),
]
TraceOption = Annotated[
    Path | None,
    typer.Option(
        "--trace",
        help="Replay the arrival times recorded in this file (result.json, LoadGen's "
        "mlperf_log_trace.json, Mooncake, Azure, BurstGPT, CSV/JSONL; docs/TRACES.md): played "
        "whole at its own mean rate; not with --qps, --stages or --arrival.",
        show_default=False,
    ),
]
TraceFormatOption = Annotated[
    str | None,
    typer.Option(
        "--trace-format",
        parser=trace_format_name,
        help="The --trace file's format (default: told from its content).",
        show_default=False,
    ),
]
TraceUnitOption = Annotated[
    str | None,
    typer.Option(
        "--trace-unit",
        parser=trace_unit_name,
        help="Time unit of a csv/jsonl trace whose time column does not name one (s, ms, us, ns).",
        show_default=False,
    ),
]
SpeedupOption = Annotated[
    float,
    typer.Option(
        "--speedup",
        parser=finite_float,
        help="Play the trace this many times faster (0.5 = half speed).",
    ),
]
MaxGapOption = Annotated[
    float | None,
    typer.Option(
        "--max-gap",
        parser=finite_float,
        help="Cap every idle gap of the trace at this many seconds (after --speedup).",
        show_default=False,
    ),
]
TraceStartOption = Annotated[
    float,
    typer.Option(
        "--trace-start",
        parser=finite_float,
        help="Replay the trace from this many seconds into it (its t = 0).",
    ),
]
TraceEndOption = Annotated[
    float | None,
    typer.Option(
        "--trace-end",
        parser=finite_float,
        help="Replay the trace up to this many seconds into it (exclusive).",
        show_default=False,
    ),
]
ARRIVAL = "poisson"
