"""What the user asked for (frozen, validated) kept apart from what is derived from it.

Validation happens here, once, so every later stage can trust its inputs; a bad value raises
SettingsError with one line naming the flag. Times are integer nanoseconds.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from loadtest.core.arrivals import POISSON, ArrivalLaw, Arrivals, Timestamps
from loadtest.core.secrets import REDACTED, Header, redact_url, split_url_credentials
from loadtest.core.slos import Slo, describe_all
from loadtest.core.stages import Staged
from loadtest.core.units import LATE_THRESHOLD_NS, NS_PER_MS, NS_PER_S
from loadtest.errors import SettingsError

# mlperf.conf: every scenario's official minimum duration is 600 s.
MLPERF_MIN_DURATION_NS = 600 * NS_PER_S
# Our default runs stay short; `--mlperf` switches to the official minimums.
DEFAULT_MIN_DURATION_NS = 60 * NS_PER_S
# The client may lag its schedule by this share of the latency bound (at least LATE_THRESHOLD_NS)
# and still count as keeping up; rules/stats.py's allowed_send_lag_ns says why 5 %.
DEFAULT_CLIENT_LAG_FRACTION = 0.05


class Scenario(str, enum.Enum):
    SERVER = "Server"
    OFFLINE = "Offline"
    SINGLE_STREAM = "SingleStream"
    MULTI_STREAM = "MultiStream"


class Protocol(str, enum.Enum):
    GRPC = "grpc"
    HTTP = "http"
    # gRPC ModelStreamInfer: the way to a decoupled (streaming, LLM) model; answers in parts.
    GRPC_STREAM = "grpc-stream"
    # HTTP generate_stream (server-sent events): the other way to a decoupled model.
    HTTP_STREAM = "http-stream"
    # An OpenAI-compatible server (vLLM, trtllm-serve, Triton's OpenAI front end) streaming
    # server-sent events: POST /v1/completions, and /v1/chat/completions (targets/openai_sse.py).
    OPENAI = "openai"
    OPENAI_CHAT = "openai-chat"

    @property
    def over_grpc(self) -> bool:
        """Spoken to Triton's gRPC port (grpc and grpc-stream), else its HTTP port."""
        return self in (Protocol.GRPC, Protocol.GRPC_STREAM)

    @property
    def is_openai(self) -> bool:
        """An OpenAI-compatible API, not Triton's KServe v2: no embedded Triton, no Triton
        statistics, a URL that may name a path (the server's /v1 base behind a gateway)."""
        return self in (Protocol.OPENAI, Protocol.OPENAI_CHAT)

    @property
    def streams(self) -> bool:
        """Answers come in parts (an LLM's tokens): the protocols of text models, whose prompts
        a recorded trace's lengths shape (engine/prompts/from_trace.py)."""
        return self in (
            Protocol.GRPC_STREAM,
            Protocol.HTTP_STREAM,
            Protocol.OPENAI,
            Protocol.OPENAI_CHAT,
        )


SETUP_TIMEOUT_S = 30.0

# The gRPC load clients (targets/triton_grpc.py): the wire client (the default) and grpc.aio.
GRPC_CLIENTS = ("wire", "grpcio")
GRPC_COMPRESSIONS = ("none", "gzip", "deflate")
DEFAULT_GRPC_KEEPALIVE_TIMEOUT_S = 20.0  # grpc-core's default keepalive_timeout
MAX_GRPC_KEEPALIVE_S = 86_400.0  # a day: a larger interval means none, and fits any timer
MAX_CONNECTIONS = 64  # per worker: more is a connection storm, not a spread


def setup_timeout(request_timeout_s: float) -> float:
    """The deadline for opening a target and its warm-up query: max(30 s, the request timeout)."""
    return max(SETUP_TIMEOUT_S, request_timeout_s)


@dataclass(frozen=True)
class TlsSettings:
    """TLS to the server: verified against the system's roots, or `ca_cert`'s; with
    `client_cert` + `client_key`, mutual TLS. Present in TargetSettings = TLS is on."""

    ca_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    def __post_init__(self) -> None:
        if (self.client_cert is None) != (self.client_key is None):
            raise SettingsError("--client-cert and --client-key go together (mutual TLS)")
        for flag, path in (
            ("--ca-cert", self.ca_cert),
            ("--client-cert", self.client_cert),
            ("--client-key", self.client_key),
        ):
            if path is not None and not path.is_file():
                raise SettingsError(f"{flag} {path}: no such file")


# Which URL schemes each protocol takes; TLS ones select TLS. A bare host:port takes --tls.
_SCHEMES = {
    "grpc": ("grpc", "grpcs"),
    "http": ("http", "https"),
    "grpc-stream": ("grpc", "grpcs"),
    "http-stream": ("http", "https"),
    "openai": ("http", "https"),
    "openai-chat": ("http", "https"),
}
_TLS_SCHEMES = {"grpcs", "https"}


def url_scheme(url: str) -> str:
    """'' for a bare host:port."""
    return url.split("://", 1)[0].lower() if "://" in url else ""


def is_triton_url(url: str) -> bool:
    """Could this URL be a Triton (KServe v2) endpoint? Its scheme is one of Triton's protocols'
    (or none: host:port), and it names no path, since Triton serves its routes at the root. Not
    fake://, and not e.g. http://host:8000/v1 (an OpenAI-style server): no embedded Triton is
    ever started in place of such a URL (server/deployment.py)."""
    scheme = url_scheme(url)
    if scheme and not any(scheme in schemes for schemes in _SCHEMES.values()):
        return False
    try:
        parts = urlsplit(url if scheme else f"//{url}")
    except ValueError:
        return False
    return parts.path in ("", "/") and not parts.query and not parts.fragment


def url_extras(url: str, path: bool = True) -> str:
    """The path (unless `path` is False), query and fragment of a URL ('' for none, or a bare
    '/'): what a Triton URL must not have (Triton serves its routes at the root), and what
    is_triton_url reads as 'not Triton'."""
    scheme = url_scheme(url)
    try:
        parts = urlsplit(url if scheme else f"//{url}")
    except ValueError:
        return ""
    path_part = "" if parts.path == "/" or not path else parts.path
    query = f"?{parts.query}" if parts.query else ""
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{path_part}{query}{fragment}"


@dataclass(frozen=True)
class TargetSettings:
    """Where queries go, and how: TLS (`tls`, None = plaintext) and request headers.

    `url` never holds a password: one given in it becomes an `Authorization: Basic` header (a
    Secret) and `url` keeps `***` in its place, so the settings can be printed and written
    as they are. An https:// or grpcs:// URL turns TLS on; a scheme that does not fit the
    protocol, or TLS asked of a plaintext URL, is refused (never a silent downgrade).
    """

    url: str
    protocol: Protocol = Protocol.GRPC
    model: str = "tiny"
    model_version: str = ""  # "" = the server's choice (latest ready)
    # The client's per-request deadline, from the send; a miss is error kind "timeout".
    request_timeout_s: float = 30.0
    tls: TlsSettings | None = None
    headers: tuple[Header, ...] = ()
    # Triton's per-request "timeout" parameter (sent in µs); 0 = not sent.
    server_timeout_s: float = 0.0
    # --protocol grpc only (recorded in result.json, so a run says how its calls were made):
    grpc_client: str = "wire"  # GRPC_CLIENTS: the load calls' client
    grpc_compression: str = "none"  # GRPC_COMPRESSIONS: the requests' message compression
    grpc_keepalive_s: float = 0.0  # a keepalive PING this often while calls are out; 0 = none
    # An unanswered PING fails its connection after this long (grpc-core's keepalive_timeout).
    grpc_keepalive_timeout_s: float = DEFAULT_GRPC_KEEPALIVE_TIMEOUT_S
    connections: int = 1  # gRPC connections per worker, calls spread round robin
    # --protocol openai/openai-chat only: ask the server for exactly max_tokens tokens
    # ("ignore_eos": true, "min_tokens": max_tokens; vLLM and trtllm-serve take both).
    ignore_eos: bool = False
    # How the protocol was chosen when --protocol was not given ("" = as given or the default):
    # scenarios/run.stream_if_decoupled's sentence, written to result.json with the target
    protocol_choice: str = ""

    def __post_init__(self) -> None:
        if not self.url:
            raise SettingsError("--url must not be empty")
        if not self.model:
            raise SettingsError("--model must not be empty")
        if not self.request_timeout_s > 0:
            raise SettingsError(f"--timeout must be > 0 s, got {self.request_timeout_s:g}")
        if self.server_timeout_s < 0 or (0 < self.server_timeout_s < 1e-6):
            raise SettingsError(f"--server-timeout must be ≥ 1 µs, got {self.server_timeout_s:g} s")
        self._check_grpc_client()
        self._check_openai()
        self._take_credentials()
        scheme = url_scheme(self.url)
        shown = redact_url(self.url)
        if scheme == "fake":
            if self.tls is not None:
                raise SettingsError("the fake target has no TLS: drop --tls and the TLS flags")
            return
        protocol = self.protocol.value
        if self.protocol.is_openai:  # a path is the API's base (its /v1 behind a gateway)
            extras = url_extras(self.url, path=False)
            form = "an OpenAI URL is scheme://host:port[/path], with no query or fragment"
        else:  # Triton's protocols: routes at the root (#26)
            extras = url_extras(self.url)
            form = "a Triton URL is scheme://host:port, with no path, query or fragment"
        if extras:
            raise SettingsError(f"--url {shown} names {extras!r}: {form} (they would be ignored)")
        if scheme and scheme not in _SCHEMES[protocol]:
            fits = " or ".join(f"{s}://" for s in _SCHEMES[protocol])
            other = next((p for p, s in _SCHEMES.items() if scheme in s), None)
            hint = f" (or --protocol {other})" if other else ""
            raise SettingsError(
                f"--url {shown} does not fit --protocol {protocol}: use {fits}{hint}"
            )
        if scheme in _TLS_SCHEMES and self.tls is None:
            object.__setattr__(self, "tls", TlsSettings())
        if scheme and scheme not in _TLS_SCHEMES and self.tls is not None:
            raise SettingsError(
                f"--url {shown} is plaintext but TLS was asked for (--tls, --ca-cert, "
                f"--client-cert): use {_SCHEMES[protocol][1]}:// or drop the TLS flags"
            )

    @property
    def is_triton(self) -> bool:
        """The URL could be a Triton endpoint (see is_triton_url), spoken to over one of
        Triton's own protocols: an OpenAI protocol never is, whatever its URL."""
        return not self.protocol.is_openai and is_triton_url(self.url)

    @property
    def setup_timeout_s(self) -> float:
        """Connecting, metadata and warm-up: generous, so a short --timeout still runs."""
        return setup_timeout(self.request_timeout_s)

    def _check_grpc_client(self) -> None:
        """The gRPC client flags: valid values, and only where they act (--grpc-client,
        --grpc-compression, --grpc-keepalive: the wire client of either gRPC protocol;
        --connections: --protocol grpc's), never silently ignored."""
        if self.grpc_client not in GRPC_CLIENTS:
            raise SettingsError(
                f"--grpc-client {self.grpc_client!r}: use one of {', '.join(GRPC_CLIENTS)}"
            )
        if self.grpc_compression not in GRPC_COMPRESSIONS:
            raise SettingsError(
                f"--grpc-compression {self.grpc_compression!r}: use one of "
                f"{', '.join(GRPC_COMPRESSIONS)}"
            )
        keepalive, keepalive_timeout = self.grpc_keepalive_s, self.grpc_keepalive_timeout_s
        if not (keepalive == 0 or 0.001 <= keepalive <= MAX_GRPC_KEEPALIVE_S):
            raise SettingsError(
                f"--grpc-keepalive must be 0 (none) or 0.001 to {MAX_GRPC_KEEPALIVE_S:g} s, "
                f"got {keepalive:g}"
            )
        if not 0.001 <= keepalive_timeout <= MAX_GRPC_KEEPALIVE_S:
            raise SettingsError(
                f"the keepalive timeout must be 0.001 to {MAX_GRPC_KEEPALIVE_S:g} s, "
                f"got {keepalive_timeout:g}"
            )
        if not 1 <= self.connections <= MAX_CONNECTIONS:
            raise SettingsError(
                f"--connections must be 1 to {MAX_CONNECTIONS}, got {self.connections}"
            )
        if self.grpc_client != "wire" and not self.protocol.over_grpc:
            raise SettingsError(
                f"--grpc-client is for --protocol grpc or grpc-stream, not {self.protocol.value}"
            )
        asked = [
            flag
            for flag, given in (
                ("--grpc-compression", self.grpc_compression != "none"),
                ("--grpc-keepalive", keepalive > 0),
                ("--connections", self.connections > 1),
            )
            if given
        ]
        if not asked or url_scheme(self.url) == "fake":
            return
        if self.connections > 1 and self.protocol is not Protocol.GRPC:
            # grpc-stream multiplexes every query on one stream: one connection carries it
            raise SettingsError("--connections is for --protocol grpc (the wire client's calls)")
        if not self.protocol.over_grpc:
            raise SettingsError(
                f"{asked[0]} is for --protocol grpc or grpc-stream (the wire client's calls)"
            )
        if self.grpc_client != "wire":
            raise SettingsError(f"{asked[0]} is for --grpc-client wire, not {self.grpc_client}")

    def _check_openai(self) -> None:
        """What only one side takes: --ignore-eos is the OpenAI protocols' (a request field of
        theirs), --model-version and --server-timeout Triton's (a model version, its "timeout"
        request parameter); never ignored."""
        if url_scheme(self.url) == "fake":
            return
        if self.ignore_eos and not self.protocol.is_openai:
            raise SettingsError(
                f"--ignore-eos is for --protocol openai or openai-chat, not {self.protocol.value} "
                "(a Triton model takes ignore_eos as an input of its own)"
            )
        if self.model_version and self.protocol.is_openai:
            raise SettingsError(
                f"--model-version is Triton's; an OpenAI-compatible API names a model by --model "
                f"alone: drop it for --protocol {self.protocol.value}"
            )
        if self.server_timeout_s and self.protocol.is_openai:
            raise SettingsError(
                "--server-timeout is Triton's request 'timeout' parameter, which an "
                f"OpenAI-compatible API has no equivalent of: drop it for --protocol "
                f"{self.protocol.value}"
            )

    def _take_credentials(self) -> None:
        """A password in the URL -> an Authorization header; the URL keeps `***`."""
        url, basic = split_url_credentials(self.url)
        names = [h.name.lower() for h in self.headers]
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise SettingsError(f"--header {twice} is given twice")
        if basic is not None:
            if "authorization" in names:
                raise SettingsError(
                    "credentials in --url and an Authorization --header: give one of them"
                )
            object.__setattr__(self, "url", url)
            object.__setattr__(self, "headers", (*self.headers, basic))
        elif "authorization" not in names and _has_redacted_password(url):
            raise SettingsError(
                f"--url's password is {REDACTED!r}, which loadtest uses to mark a hidden one: "
                "pass the credentials with --header 'Authorization:@env:VAR'"
            )


@dataclass(frozen=True)
class GrpcOptions:
    """How the gRPC target's load calls are made (TargetSettings' gRPC fields, as the target
    takes them): the client, request compression (None = none), keepalive, connections."""

    client: str = "wire"
    compression: str | None = None
    keepalive_s: float = 0.0
    keepalive_timeout_s: float = DEFAULT_GRPC_KEEPALIVE_TIMEOUT_S
    connections: int = 1

    @classmethod
    def of(cls, settings: TargetSettings) -> GrpcOptions:
        return cls(
            client=settings.grpc_client,
            compression=None if settings.grpc_compression == "none" else settings.grpc_compression,
            keepalive_s=settings.grpc_keepalive_s,
            keepalive_timeout_s=settings.grpc_keepalive_timeout_s,
            connections=settings.connections,
        )


def _has_redacted_password(url: str) -> bool:
    try:
        return urlsplit(url if "://" in url else f"//{url}").password == REDACTED
    except ValueError:
        return False


@dataclass(frozen=True)
class ErrorAbort:
    """`--abort-on-error-rate RATE --window SECONDS`: stop a run that is already lost.

    Once more than `max_rate` of the queries answered in the trailing window failed, issuing
    stops and the partial result says why (rules/error_budget.py holds the decision)."""

    max_rate: float
    window_ns: int = 10 * NS_PER_S

    def __post_init__(self) -> None:
        if not 0 <= self.max_rate < 1:
            raise SettingsError(
                f"--abort-on-error-rate must be a fraction in [0, 1), got {self.max_rate:g}"
            )
        if self.window_ns <= 0:
            raise SettingsError(f"--window must be > 0 s, got {self.window_ns / NS_PER_S:g}")


@dataclass(frozen=True)
class ServerSettings:
    """The MLPerf Server scenario: open-loop arrivals at `qps` (Poisson unless `arrival_law` says
    otherwise), judged on a latency percentile. `arrivals` binds the law to the run."""

    qps: float
    target_latency_ns: int
    percentile: float = 0.99  # a fraction in (0, 1)
    min_duration_ns: int = DEFAULT_MIN_DURATION_NS
    min_query_count: int = 100
    # Hard stop even if queries are still due (Ctrl-C aside); 0 = none.
    max_duration_ns: int = 0
    schedule_seed: int = 0
    sample_seed: int = 1
    sample_count: int = 64  # size of the in-memory sample library ("performance set")
    early_stopping_confidence: float = 0.99
    late_threshold_ns: int = LATE_THRESHOLD_NS
    keep_records: bool = False  # write per-query records into the JSON result
    # allowed send-lag p99 = max(late threshold, this × target latency)
    client_lag_fraction: float = DEFAULT_CLIENT_LAG_FRACTION
    # share of issued queries allowed to fail; None = MLPerf's rule (any failure is INVALID)
    error_budget: float | None = None
    abort: ErrorAbort | None = None  # stop early when the error rate says the run is lost
    # --check-outputs: the share of queries whose answers are compared with onnxruntime's (0 =
    # none); the choice is seeded by sample_seed (core/schedule.check_mask)
    check_outputs: float = 0.0
    same_sample: bool = False  # --same-sample: the cache check after the run
    # When queries are due (core/arrivals.py); schedule_seed draws it and deals it to shards
    arrival_law: ArrivalLaw = POISSON
    # A streamed (LLM) run's token bounds at `percentile` (rules/tokens.py; 0 = none): time to
    # first token from the scheduled time, and time per output token; whose they are.
    ttft_bound_ns: int = 0
    tpot_bound_ns: int = 0
    token_bounds_source: str = ""
    # --slo: per-request objectives whose goodput the run reports (rules/goodput.py)
    slos: tuple[Slo, ...] = ()
    scenario: Scenario = field(default=Scenario.SERVER, init=False)

    @property
    def arrivals(self) -> Arrivals:
        """The run's arrivals: the law bound to this rate, these minimums and the schedule seed.
        The one place settings become arrivals (a single run, its shards, each mix entry)."""
        return self.arrival_law.arrivals(
            self.qps, self.min_duration_ns, self.min_query_count, self.schedule_seed
        )

    def __post_init__(self) -> None:
        if not self.qps > 0:
            raise SettingsError(f"--qps must be > 0, got {self.qps}")
        if self.min_duration_ns <= 0:
            raise SettingsError(f"--duration must be > 0 s, got {self.min_duration_ns / NS_PER_S}")
        if self.min_query_count < 1:
            raise SettingsError(f"--min-queries must be ≥ 1, got {self.min_query_count}")
        if not 0 < self.percentile < 1:
            raise SettingsError(f"--percentile must be in (0, 100), got {self.percentile * 100:g}")
        if self.target_latency_ns <= 0:
            raise SettingsError("--target-latency must be > 0 ms")
        if self.sample_count < 1:
            raise SettingsError(f"--samples must be ≥ 1, got {self.sample_count}")
        if not 0 < self.early_stopping_confidence < 1:
            raise SettingsError("early-stopping confidence must be in (0, 1)")
        if self.late_threshold_ns <= 0:
            raise SettingsError("--late-threshold must be > 0 ms")
        if self.max_duration_ns and self.max_duration_ns < self.min_duration_ns:
            raise SettingsError("--max-duration must not be shorter than --duration")
        _check_client_lag_fraction(self.client_lag_fraction)
        _check_error_budget(self.error_budget)
        _check_output_rate(self.check_outputs)
        if self.ttft_bound_ns < 0 or self.tpot_bound_ns < 0:
            raise SettingsError("--ttft-bound and --tpot-bound must be > 0 ms")
        expected = self.qps * max(self.min_duration_ns / NS_PER_S, 0)
        if max(expected, self.min_query_count) > 50_000_000:
            raise SettingsError(
                f"the schedule would hold {max(expected, self.min_query_count):.3g} queries; "
                "lower --qps, --duration or --min-queries"
            )

    def test_parameters(self) -> dict[str, object]:
        """LoadGen's names, for mlperf_log_summary.txt."""
        return {
            "target_qps": self.qps,
            "target_latency (ns)": self.target_latency_ns,
            "target_latency_percentile": self.percentile,
            "min_duration (ms)": self.min_duration_ns // NS_PER_MS,
            "max_duration (ms)": self.max_duration_ns // NS_PER_MS,
            "min_query_count": self.min_query_count,
            "schedule_rng_seed": self.schedule_seed,
            "sample_index_rng_seed": self.sample_seed,
            "performance_sample_count": self.sample_count,
            "early_stopping_confidence": self.early_stopping_confidence,
        }


OFFLINE_CALIBRATION_NS = 2 * NS_PER_S
# `--expected-qps auto` sizes the query for this × the calibrated rate: on a shared machine a run
# measured up to 22 % faster than its calibration (embedded Triton, tiny, 2 cores), which left the
# query short of the minimum duration. A longer query costs only time; a short one is INVALID.
OFFLINE_CALIBRATION_HEADROOM = 1.3


@dataclass(frozen=True)
class OfflineCalibration:
    """What `--expected-qps auto` measured before the Offline query: closed-loop samples/s with the
    run's own in-flight cap, over `seconds`; the query is then sized from it as LoadGen would."""

    samples_per_s: float
    seconds: float
    in_flight: int
    headroom: float = OFFLINE_CALIBRATION_HEADROOM  # expected QPS = headroom × samples_per_s


@dataclass(frozen=True)
class OfflineSettings:
    """MLPerf Offline: one query holding every sample, due at t = 0, issued under an in-flight cap.

    LoadGen sizes the query to max(min query count, 1.1 × min duration × expected QPS) samples, so a
    server as fast as expected keeps busy for at least the minimum duration; a faster one finishes
    early and the run is INVALID ("increase expected QPS").

    `expected_qps=None` is `--expected-qps auto`: not yet runnable. `calibrated()` returns the
    settings sized from a closed-loop calibration (`calibration` records it), and
    `expected_qps_source` says which it is: "auto" (to calibrate), "calibrated" or "given".
    """

    expected_qps: float | None
    min_duration_ns: int = DEFAULT_MIN_DURATION_NS
    min_query_count: int = 1
    max_in_flight: int = 64  # requests outstanding at once; the only brake on issuing
    batch_size: int = 1  # samples per request
    sample_seed: int = 1
    sample_count: int = 64
    max_duration_ns: int = 0
    keep_records: bool = False
    late_threshold_ns: int = LATE_THRESHOLD_NS
    error_budget: float | None = None  # see ServerSettings
    abort: ErrorAbort | None = None  # see ServerSettings
    check_outputs: float = 0.0  # see ServerSettings
    same_sample: bool = False
    calibration: OfflineCalibration | None = None  # set by calibrated(): what auto measured
    calibration_ns: int = OFFLINE_CALIBRATION_NS  # how long auto's calibration runs
    scenario: Scenario = field(default=Scenario.OFFLINE, init=False)
    expected_qps_source: str = field(default="given", init=False)

    def __post_init__(self) -> None:
        source = "auto" if self.expected_qps is None else "given"
        if self.calibration is not None:
            if self.expected_qps is None:
                raise SettingsError("a calibrated Offline run needs its expected QPS")
            source = "calibrated"
        object.__setattr__(self, "expected_qps_source", source)
        if self.expected_qps is not None and not self.expected_qps > 0:
            raise SettingsError(f"--expected-qps must be > 0, got {self.expected_qps}")
        if self.calibration_ns <= 0:
            raise SettingsError("the Offline calibration must last > 0 s")
        if self.min_duration_ns <= 0:
            raise SettingsError(f"--duration must be > 0 s, got {self.min_duration_ns / NS_PER_S}")
        if self.min_query_count < 1:
            raise SettingsError(f"--min-queries must be ≥ 1, got {self.min_query_count}")
        if self.max_in_flight < 1:
            raise SettingsError(f"--max-in-flight must be ≥ 1, got {self.max_in_flight}")
        if self.batch_size < 1:
            raise SettingsError(f"--batch-size must be ≥ 1, got {self.batch_size}")
        if self.sample_count < 1:
            raise SettingsError(f"--samples must be ≥ 1, got {self.sample_count}")
        _check_error_budget(self.error_budget)
        _check_output_rate(self.check_outputs)
        if self.expected_qps is not None and self.query_samples > 50_000_000:
            raise SettingsError(
                f"the Offline query would hold {self.query_samples:.3g} samples; lower "
                "--expected-qps or --duration"
            )

    def calibrated(self, calibration: OfflineCalibration) -> OfflineSettings:
        """`--expected-qps auto` resolved: the query sized from the calibrated samples/s × its
        headroom (a calibration that completed nothing still gets a query of min-queries
        samples, and its errors)."""
        qps = max(calibration.samples_per_s * calibration.headroom, 1e-6)
        return replace(self, expected_qps=qps, calibration=calibration)

    @property
    def query_samples(self) -> int:
        """LoadGen: max(min_query_count, 1.1 × min_duration × expected_qps) samples."""
        if self.expected_qps is None:
            raise ValueError("--expected-qps auto is resolved by calibrated() before the run")
        by_duration = int(1.1 * self.min_duration_ns / NS_PER_S * self.expected_qps)
        return max(self.min_query_count, by_duration)

    @property
    def requests(self) -> int:
        return -(-self.query_samples // self.batch_size)

    def test_parameters(self) -> dict[str, object]:
        return {
            "offline_expected_qps": self.expected_qps,
            "samples_per_query": self.query_samples,
            "min_duration (ms)": self.min_duration_ns // NS_PER_MS,
            "max_duration (ms)": self.max_duration_ns // NS_PER_MS,
            "min_query_count": self.min_query_count,
            "max_in_flight (loadtest)": self.max_in_flight,
            "batch_size (loadtest)": self.batch_size,
            "sample_index_rng_seed": self.sample_seed,
            "performance_sample_count": self.sample_count,
        }


@dataclass(frozen=True)
class StreamSettings:
    """SingleStream / MultiStream: a closed loop, one query in flight, next issued on completion.

    Latency is from the actual issue (nothing is scheduled ahead in a closed loop). MultiStream
    queries carry `samples_per_query` samples (8 in MLPerf) as one batched request. The run lasts
    until both the minimum duration and the minimum query count are met (LoadGen's rule).
    """

    scenario: Scenario
    percentile: float  # SingleStream 0.90, MultiStream 0.99 (mlperf.conf)
    samples_per_query: int = 1
    min_duration_ns: int = DEFAULT_MIN_DURATION_NS
    min_query_count: int = 1
    max_duration_ns: int = 0
    target_latency_ns: int = 0  # optional bound on the estimate; 0 = report only
    sample_seed: int = 1
    sample_count: int = 64
    early_stopping_confidence: float = 0.99
    keep_records: bool = False
    late_threshold_ns: int = LATE_THRESHOLD_NS
    error_budget: float | None = None  # see ServerSettings
    abort: ErrorAbort | None = None  # see ServerSettings
    check_outputs: float = 0.0  # see ServerSettings
    same_sample: bool = False

    def __post_init__(self) -> None:
        if self.scenario not in (Scenario.SINGLE_STREAM, Scenario.MULTI_STREAM):
            raise SettingsError(f"StreamSettings cannot hold scenario {self.scenario.value}")
        if not 0 < self.percentile < 1:
            raise SettingsError(f"--percentile must be in (0, 100), got {self.percentile * 100:g}")
        if self.samples_per_query < 1:
            raise SettingsError(f"--samples-per-query must be ≥ 1, got {self.samples_per_query}")
        if self.scenario is Scenario.SINGLE_STREAM and self.samples_per_query != 1:
            raise SettingsError("SingleStream queries hold exactly one sample")
        if self.min_duration_ns <= 0:
            raise SettingsError(f"--duration must be > 0 s, got {self.min_duration_ns / NS_PER_S}")
        if self.min_query_count < 1:
            raise SettingsError(f"--min-queries must be ≥ 1, got {self.min_query_count}")
        if self.target_latency_ns < 0:
            raise SettingsError("--target-latency must be > 0 ms")
        if self.max_duration_ns and self.max_duration_ns < self.min_duration_ns:
            raise SettingsError("--max-duration must not be shorter than --duration")
        _check_error_budget(self.error_budget)
        _check_output_rate(self.check_outputs)

    def test_parameters(self) -> dict[str, object]:
        return {
            "samples_per_query": self.samples_per_query,
            "target_latency (ns)": self.target_latency_ns,
            "target_latency_percentile": self.percentile,
            "min_duration (ms)": self.min_duration_ns // NS_PER_MS,
            "max_duration (ms)": self.max_duration_ns // NS_PER_MS,
            "min_query_count": self.min_query_count,
            "sample_index_rng_seed": self.sample_seed,
            "performance_sample_count": self.sample_count,
            "early_stopping_confidence": self.early_stopping_confidence,
        }


ScenarioSettings = ServerSettings | OfflineSettings | StreamSettings


def _check_client_lag_fraction(fraction: float) -> None:
    if not 0 <= fraction < 1:
        raise SettingsError(f"the client lag fraction must be in [0, 1), got {fraction:g}")


def _check_output_rate(rate: float) -> None:
    if not 0 <= rate <= 1:
        raise SettingsError(f"--check-outputs must be a fraction in [0, 1], got {rate:g}")


def _check_error_budget(budget: float | None) -> None:
    if budget is not None and not 0 <= budget <= 1:
        raise SettingsError(f"--error-budget must be in [0, 100] %, got {budget * 100:g} %")


@dataclass(frozen=True)
class PeakSettings:
    """find-peak: Server-scenario probes at chosen rates, within a total time budget."""

    target_latency_ns: int
    percentile: float = 0.99
    probe_duration_ns: int = 10 * NS_PER_S
    budget_ns: int = 180 * NS_PER_S
    start_qps: float = 0.0  # 0 = calibrate: start from the measured closed-loop throughput
    max_qps: float = 0.0  # 0 = no cap besides the calibration's
    resolution: float = 0.05
    calibration_ns: int = 3 * NS_PER_S
    calibration_in_flight: int = 32
    schedule_seed: int = 0
    sample_seed: int = 1
    sample_count: int = 64
    early_stopping_confidence: float = 0.99
    late_threshold_ns: int = LATE_THRESHOLD_NS
    client_lag_fraction: float = DEFAULT_CLIENT_LAG_FRACTION
    # Every probe's law (core/arrivals.py); a renewal law, whose rate the search sets
    arrival_law: ArrivalLaw = POISSON
    # The goodput rule (--slo, --goodput-target): a probe passes when at least this share of its
    # requests meets every SLO; 0 = MLPerf's rule (the percentile within target_latency_ns).
    slos: tuple[Slo, ...] = ()
    goodput_target: float = 0.0
    # The token rule (--ttft-bound, --tpot-bound, --mlperf-model): a probe passes when the
    # percentile TTFT (from the scheduled time) and TPOT each hold their bound, with early stopping
    # on each (rules/tokens.py, LoadGen's LLM Server rule); 0 = that bound not held.
    ttft_bound_ns: int = 0
    tpot_bound_ns: int = 0
    token_bounds_source: str = ""
    scenario: Scenario = field(default=Scenario.SERVER, init=False)

    def __post_init__(self) -> None:
        if self.ttft_bound_ns < 0 or self.tpot_bound_ns < 0:
            raise SettingsError("--ttft-bound and --tpot-bound must be > 0 ms")
        if self.token_rule and self.goodput_rule:
            raise SettingsError(
                "find-peak searches one rule: the token bounds (--ttft-bound, --tpot-bound, "
                "--mlperf-model) or goodput (--slo, --goodput-target), not both"
            )
        if self.target_latency_ns <= 0:
            raise SettingsError("--target-latency must be > 0 ms")
        if not 0 < self.percentile < 1:
            raise SettingsError(f"--percentile must be in (0, 100), got {self.percentile * 100:g}")
        if self.probe_duration_ns <= 0:
            raise SettingsError("--probe-duration must be > 0 s")
        if self.budget_ns <= 0:
            raise SettingsError("--budget must be > 0 s")
        if self.start_qps < 0 or self.max_qps < 0:
            raise SettingsError("--start-qps and --max-qps must be ≥ 0")
        if self.max_qps and self.start_qps > self.max_qps:
            raise SettingsError("--start-qps must not exceed --max-qps")
        if not 0 < self.resolution < 1:
            raise SettingsError(f"--resolution must be in (0, 1), got {self.resolution:g}")
        if self.sample_count < 1:
            raise SettingsError(f"--samples must be ≥ 1, got {self.sample_count}")
        if self.late_threshold_ns <= 0:
            raise SettingsError("--late-threshold must be > 0 ms")
        _check_client_lag_fraction(self.client_lag_fraction)
        if not 0 <= self.goodput_target <= 1:
            raise SettingsError(
                f"--goodput-target must be a share in (0, 100] %, got {self.goodput_target * 100:g}"
            )
        if bool(self.goodput_target) != bool(self.slos):
            raise SettingsError(
                "find-peak's goodput rule needs both --slo NAME:MS (what a good request meets) "
                "and --goodput-target PERCENT (the share of requests that must be good)"
            )

    @property
    def goodput_rule(self) -> bool:
        """Probes pass on goodput (--goodput-target), not on MLPerf's percentile bound."""
        return bool(self.goodput_target)

    @property
    def token_rule(self) -> bool:
        """Probes pass on LoadGen's token bounds (p TTFT and p TPOT), not on an end-to-end one."""
        return bool(self.ttft_bound_ns or self.tpot_bound_ns)

    def rule_text(self) -> str:
        """The pass rule searched, in words: what find-peak.json and `plan` say."""
        if self.token_rule:
            p = f"p{self.percentile * 100:g}"
            held = [
                f"{p} {name} ≤ {bound / NS_PER_MS:g} ms"
                for name, bound in (("TTFT", self.ttft_bound_ns), ("TPOT", self.tpot_bound_ns))
                if bound
            ]
            source = f"; {self.token_bounds_source}" if self.token_bounds_source else ""
            return (
                f"MLPerf token bounds {' and '.join(held)} (TTFT from the scheduled time, TPOT "
                f"per query; early stopping on each{source})"
            )
        if self.goodput_rule:
            return (
                f"goodput ≥ {self.goodput_target * 100:g} % (the share of requests meeting all of "
                f"{describe_all(self.slos)}, from the scheduled time)"
            )
        return (
            f"MLPerf p{self.percentile * 100:g} ≤ {self.target_latency_ns / NS_PER_MS:g} ms "
            "(from the scheduled time, with early stopping)"
        )

    @property
    def shaped(self) -> bool:
        """Probes play a shape (load stages or a trace) whole, faster or slower: the search is
        over its speed-up, and `qps` is the shape's mean rate at that speed-up."""
        return isinstance(self.arrival_law, (Staged, Timestamps))

    @property
    def shape_mean_qps(self) -> float | None:
        """A shape's own mean rate as written (a probe's speed-up is its rate ÷ this); None: no
        shape."""
        law = self.arrival_law
        if isinstance(law, Staged):
            return law.profile.mean_qps
        if isinstance(law, Timestamps):
            return law.mean_qps
        return None

    def probe(self, qps: float, min_query_count: int) -> ServerSettings:
        """The Server settings of one probe at `qps` (a shape: at that mean rate, played whole)."""
        law = self.arrival_law
        if isinstance(law, Timestamps):
            law = law.at_rate(qps)
        return ServerSettings(
            qps=qps,
            target_latency_ns=self.target_latency_ns,
            percentile=self.percentile,
            min_duration_ns=1 if self.shaped else self.probe_duration_ns,
            min_query_count=1 if self.shaped else min_query_count,
            schedule_seed=self.schedule_seed,
            sample_seed=self.sample_seed,
            sample_count=self.sample_count,
            early_stopping_confidence=self.early_stopping_confidence,
            late_threshold_ns=self.late_threshold_ns,
            client_lag_fraction=self.client_lag_fraction,
            arrival_law=law,
            slos=self.slos,
            ttft_bound_ns=self.ttft_bound_ns,
            tpot_bound_ns=self.tpot_bound_ns,
            token_bounds_source=self.token_bounds_source,
        )


class LoopKind(str, enum.Enum):
    """The event loop a generator process runs on (see timing.py and README's measurements)."""

    AUTO = "auto"  # uvloop at UVLOOP_FROM_QPS per worker and above, else precise
    PRECISE = "precise"  # asyncio on an epoll selector with µs timeouts and 1 µs timer slack
    UVLOOP = "uvloop"  # libuv: cheaper I/O, but its timers tick in whole milliseconds


# Below this per-worker rate both loops keep up and the precise loop's timers waste less CPU
# spinning; from here up, the issuer spins all the time anyway and uvloop's cheaper I/O wins.
# The measurement behind the number, with date and machine:
# benchmarks/results/generator-benchmark-2026-11-27.txt.
UVLOOP_FROM_QPS = 10_000.0


def resolve_loop(kind: LoopKind, per_worker_qps: float) -> LoopKind:
    if kind is not LoopKind.AUTO:
        return kind
    return LoopKind.UVLOOP if per_worker_qps >= UVLOOP_FROM_QPS else LoopKind.PRECISE


class SharedMemoryKind(str, enum.Enum):
    NONE = "none"
    SYSTEM = "system"  # POSIX shared memory registered with Triton (same host only)
    CUDA = "cuda"  # needs a GPU and tritonclient's CUDA support: refused where absent


AUTO_WORKERS = 0


@dataclass(frozen=True)
class ClientSettings:
    """How the load is generated: how many processes, on which loop, over which transport.

    `workers` = AUTO_WORKERS picks a count from the rate (scenarios/play.Generator.choose_workers);
    more local workers than CPU cores is refused: on a machine with fewer cores than generator
    processes they preempt each other for whole scheduler slices and miss their schedules.
    """

    workers: int = AUTO_WORKERS
    loop: LoopKind = LoopKind.AUTO
    ray_address: str = ""  # "" = local processes; else place shards on Ray actors there
    shared_memory: SharedMemoryKind = SharedMemoryKind.NONE
    cpu_count: int = 0  # cores available for local workers; 0 = this machine's

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise SettingsError(f"--workers must be ≥ 1 (or 0 for automatic), got {self.workers}")
        cores = self.cpu_count or available_cpus()
        if not self.ray_address and self.workers > cores:
            raise SettingsError(
                f"--workers {self.workers} is more than this machine's {cores} CPU cores: "
                "generator processes would preempt each other and miss their schedules; "
                f"use at most {cores}, or spread them over hosts with --ray"
            )


def available_cpus() -> int:
    """Cores this process may run on (the affinity mask, not the host's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
