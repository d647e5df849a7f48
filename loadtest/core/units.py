"""Time units, defined once: inside, time is integer nanoseconds; milliseconds only when shown.

Field names carry their unit (`_ns`, `_s`); these helpers are the only place a nanosecond count
becomes text, so every table and file writes milliseconds the same way, and the only place one
unit becomes another (`ns_to_ms`, `s_to_ns`, ...), so no bare power of ten has to be read twice
to see which way it goes.
"""

from __future__ import annotations

NS_PER_US = 1_000
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
US_PER_S = 1_000_000  # Triton's "timeout" parameter and CPU time per query are in µs

# A query sent more than this after its scheduled time counts as late (perf_analyzer uses 1 ms).
LATE_THRESHOLD_NS = 1 * NS_PER_MS


def ns_to_us(ns: float) -> float:
    return ns / NS_PER_US


def ns_to_ms(ns: float) -> float:
    return ns / NS_PER_MS


def ns_to_s(ns: float) -> float:
    return ns / NS_PER_S


def s_to_ns(s: float) -> int:
    """Whole nanoseconds, truncated as `int()` truncates."""
    return int(s * NS_PER_S)


def s_to_us(s: float) -> float:
    return s * US_PER_S


def us_to_s(us: float) -> float:
    return us / US_PER_S


def fmt_ms(ns: float) -> str:
    """ns -> '12.3 ms' (up to 3 decimals, trailing zeros dropped): for sentences."""
    text = f"{ns / NS_PER_MS:.3f}".rstrip("0").rstrip(".")
    return f"{text} ms"


def fmt_s(ns: float) -> str:
    """ns -> '1.5 s' (up to 3 decimals, trailing zeros dropped): for sentences."""
    text = f"{ns / NS_PER_S:.3f}".rstrip("0").rstrip(".")
    return f"{text} s"


def ms_cell(ns: float) -> str:
    """ns -> '1,234.567': a table cell whose column heading already says ms."""
    return f"{ns / NS_PER_MS:,.3f}"
