"""What one query costs this generator on this machine, measured at start-up: the automatic
worker count's input when the rate is high enough for the count to matter.

A fixed "clean rate per worker" (shards/plan.py) was measured on 2 shared vCPUs; a faster host,
a lighter model or a remote server lets one process send far more, and a slower host less. So
before a high-rate run with `--workers` left automatic, the parent plays a short closed loop on
the target it has already opened and divides its own CPU time by the queries answered
(scenarios/play.measure_client_cost). One worker's clean rate is then the share of a core it
may fill (CORE_SHARE_AT_CLEAN_TOP, measured by benchmarks/worker_calibration.py) divided by that
cost; the automatic count runs each worker at half of it (shards/plan.py).
"""

from __future__ import annotations

from dataclasses import dataclass

CALIBRATION_NS = 500_000_000
CALIBRATION_IN_FLIGHT = 16
# Fewer answers than this in the calibration and the figure is the server's slowness, not the
# client's cost (idle loop time spread over few queries): the fixed rule is used instead.
MIN_CALIBRATION_QUERIES = 500
# The share of one core a generator process filled at its highest clean rate, as a multiple of
# the calibrated cost: clean top (QPS) × calibrated CPU per query. Measured with one worker
# against the stub (the client's own core, the stub on the other) on 2 vCPUs, 2026-12-01: the
# lowest of the runs in docs/worker-calibration.txt, rounded down.
CORE_SHARE_AT_CLEAN_TOP = 0.6


@dataclass(frozen=True)
class ClientCost:
    """The calibration's result: CPU seconds of this process per answered query."""

    cpu_s_per_query: float
    queries: int
    seconds: float

    @property
    def clean_rate(self) -> float:
        """The highest rate one worker is expected to hold clean (Poisson, on time)."""
        return CORE_SHARE_AT_CLEAN_TOP / self.cpu_s_per_query

    def describe(self) -> str:
        return (
            f"{self.cpu_s_per_query * 1e6:.0f} µs client CPU per query "
            f"({self.queries} queries, {self.seconds:.1f} s closed loop, "
            f"{CALIBRATION_IN_FLIGHT} in flight)"
        )
