"""What the user asked for (frozen, validated) kept apart from what is derived from it.

Validation happens here, once, so every later stage can trust its inputs; a bad value raises
SettingsError with one line naming the flag. Times are integer nanoseconds.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from loadtest.errors import SettingsError

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000

# mlperf.conf: every scenario's official minimum duration is 600 s.
MLPERF_MIN_DURATION_NS = 600 * NS_PER_S
# Our default runs stay short; `--mlperf` switches to the official minimums.
DEFAULT_MIN_DURATION_NS = 60 * NS_PER_S
# The send lag above which a query counts as issued late (perf_analyzer uses the same 1 ms).
LATE_THRESHOLD_NS = 1 * NS_PER_MS


class Scenario(str, enum.Enum):
    SERVER = "Server"
    OFFLINE = "Offline"
    SINGLE_STREAM = "SingleStream"
    MULTI_STREAM = "MultiStream"


class Protocol(str, enum.Enum):
    GRPC = "grpc"
    HTTP = "http"


@dataclass(frozen=True)
class TargetSettings:
    """Where queries go."""

    url: str
    protocol: Protocol = Protocol.GRPC
    model: str = "tiny"
    model_version: str = ""  # "" = the server's choice (latest ready)
    request_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.url:
            raise SettingsError("--url must not be empty")
        if not self.model:
            raise SettingsError("--model must not be empty")
        if not self.request_timeout_s > 0:
            raise SettingsError(f"--timeout must be > 0 s, got {self.request_timeout_s}")


@dataclass(frozen=True)
class ServerSettings:
    """The MLPerf Server scenario: Poisson arrivals at `qps`, judged on a latency percentile."""

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
    scenario: Scenario = field(default=Scenario.SERVER, init=False)

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
        expected = self.qps * max(self.min_duration_ns / NS_PER_S, 0)
        if max(expected, self.min_query_count) > 50_000_000:
            raise SettingsError(
                f"the schedule would hold {max(expected, self.min_query_count):.3g} queries; "
                "lower --qps, --duration or --min-queries"
            )
