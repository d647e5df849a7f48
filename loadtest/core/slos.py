"""Per-request service-level objectives (`--slo NAME:MS`), as asked and validated once.

Kept apart from their arithmetic (rules/goodput.py) because settings hold them and settings sit
below the rules. A request meets an SLO when its figure is ≤ the bound (vLLM's `s >= r`):

- `ttft`: time to first token, from the query's **scheduled** time (the project's origin, as
  LoadGen's FirstTokenComplete); needs an answer in parts;
- `tpot`: time per output token of the request, (e2e − TTFT) / (n − 1), n the server's token
  count (rules/tokens.py); needs an answer in parts;
- `e2e`: completion − scheduled time (vLLM calls it `e2el`, accepted as a synonym); any target.

`itl` is refused: per request it is either TPOT itself (AIPerf's per-record ITL and vLLM's TPOT
are both (e2e − TTFT)/(n − 1)) or a statistic over the request's gaps (max? p99?), which the
records do not keep (only one merged histogram of every gap). Two meanings, so neither.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from loadtest.core.units import NS_PER_MS
from loadtest.errors import SettingsError

TTFT, TPOT, E2E = "ttft", "tpot", "e2e"
SLO_NAMES = (TTFT, TPOT, E2E)
SYNONYMS = {"e2el": E2E}  # vLLM's --goodput key for the end-to-end latency
STREAMED = frozenset({TTFT, TPOT})  # measured only on an answer in parts
MAX_BOUND_MS = 1e9  # the same magnitude limit every float flag has (commands/options.py)
ITL_REFUSED = (
    "itl has no single per-request meaning (TPOT is the per-request mean gap; a request's max "
    "or p99 gap is not recorded): use tpot"
)


@dataclass(frozen=True)
class Slo:
    """One objective: a request meets it when its `name` figure is ≤ `bound_ns`."""

    name: str
    bound_ns: int

    def describe(self) -> str:
        """'ttft ≤ 500 ms' (the bound to the µs, trailing zeros dropped)."""
        text = f"{self.bound_ns / NS_PER_MS:.3f}".rstrip("0").rstrip(".")
        return f"{self.name} ≤ {text} ms"


def parse_slo(text: str) -> Slo:
    """'ttft:500' -> Slo('ttft', 500 ms), or one clear SettingsError."""
    name, colon, value = text.strip().partition(":")
    name = SYNONYMS.get(name.strip().lower(), name.strip().lower())
    if name == "itl":
        raise SettingsError(f"--slo {text!r}: {ITL_REFUSED}")
    if name not in SLO_NAMES:
        raise SettingsError(f"--slo {text!r}: unknown objective; use one of {', '.join(SLO_NAMES)}")
    if not colon or not value.strip():
        raise SettingsError(f"--slo {text!r} is not NAME:MS (e.g. ttft:500)")
    try:
        ms = float(value)
    except ValueError:
        raise SettingsError(f"--slo {text!r}: {value.strip()!r} is not a number of ms") from None
    if not math.isfinite(ms) or not 0 < ms <= MAX_BOUND_MS:
        raise SettingsError(f"--slo {text!r}: the bound must be > 0 and ≤ {MAX_BOUND_MS:g} ms")
    bound_ns = round(ms * NS_PER_MS)
    if bound_ns < 1:
        raise SettingsError(f"--slo {text!r}: the bound must be at least 1 ns")
    return Slo(name, bound_ns)


def parse_slos(texts: list[str] | None) -> tuple[Slo, ...]:
    """Every --slo given, in the order of SLO_NAMES; one objective given twice is an error."""
    slos = [parse_slo(text) for text in texts or []]
    names = [slo.name for slo in slos]
    twice = next((name for name in SLO_NAMES if names.count(name) > 1), None)
    if twice is not None:
        raise SettingsError(f"--slo {twice} is given twice: give each objective once")
    return tuple(sorted(slos, key=lambda slo: SLO_NAMES.index(slo.name)))


def needs_parts(slos: tuple[Slo, ...]) -> list[str]:
    """The objectives among `slos` that only an answer in parts (a stream) can measure."""
    return [slo.name for slo in slos if slo.name in STREAMED]


def describe_all(slos: tuple[Slo, ...]) -> str:
    """'ttft ≤ 500 ms, tpot ≤ 50 ms'."""
    return ", ".join(slo.describe() for slo in slos)


def check_measurable(slos: tuple[Slo, ...], streams_parts: bool, target: str) -> None:
    """Before any load: a ttft or tpot SLO on a target whose answers do not come in parts is
    one SettingsError (there is no first token to time), rather than a run of zeros."""
    streamed = needs_parts(slos)
    if streamed and not streams_parts:
        raise SettingsError(
            f"--slo {', '.join(streamed)}: {target} does not stream its answers, so there is no "
            "first token or per-token time to hold; only --slo e2e applies (a streaming model "
            "is reached with --protocol grpc-stream or http-stream)"
        )
