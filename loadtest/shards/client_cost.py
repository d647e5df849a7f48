"""What one query costs this generator on this machine, measured at start-up: the automatic
worker count's input when the rate is high enough for the count to matter.

A fixed "clean rate per worker" (shards/plan.py) was measured on 2 shared vCPUs; a faster host,
a lighter model or a remote server lets one process send far more, and a slower host less. So
before a high-rate run with `--workers` left automatic, the parent plays a short closed loop on
the target it has already opened and divides its own CPU time by the queries answered
(scenarios/play.measure_client_cost). One worker's clean rate is then the share of a core it
may fill (measured by benchmarks/worker_calibration.py, lower beside a server on the same cores)
divided by that cost; the automatic count runs each worker at half of it (shards/plan.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from loadtest.core.units import s_to_us

CALIBRATION_NS = 500_000_000
CALIBRATION_IN_FLIGHT = 16
# Fewer answers than this in the calibration and the figure is the server's slowness, not the
# client's cost (idle loop time spread over few queries): the fixed rule is used instead.
MIN_CALIBRATION_QUERIES = 500
# The share of a core one generator process filled at its highest clean rate, in calibrated
# units (clean top in QPS × calibrated CPU per query), measured by benchmarks/worker_calibration.py
# with one worker on 2 shared vCPUs in three runs of 2026-12-01
# (benchmarks/results/worker-calibration*.txt).
# The ladders stop at the first two rates in a row that miss "clean", so on a noisy machine a
# run can stop early on a send-gap CV just outside its tolerance (then 1.00 ± 0.05; now within
# 0.05 of the schedule's own CV, which at those rates and counts is 1 within about 0.01,
# engine/selfmeasure.gaps_follow_schedule); the lowest run is taken, rounded
# down to 0.05, so that the count errs towards more workers, each further from its limit:
# - against the stub, whose own cost is small (the client has a core to itself, as beside a
#   remote server): 0.35-0.82 over HTTP and gRPC;
# - beside the embedded Triton on the same cores (its threads take the worker's core in turns):
#   0.17-0.41.
# A server on this machine (a loopback URL) takes the second, any other the first.
CORE_SHARE_ALONE = 0.35
CORE_SHARE_BESIDE_LOCAL_SERVER = 0.15


@dataclass(frozen=True)
class ClientCost:
    """The calibration's result: CPU seconds of this process per answered query."""

    cpu_s_per_query: float
    queries: int
    seconds: float
    beside_local_server: bool  # the server runs on this machine's cores (a loopback URL)

    @property
    def core_share(self) -> float:
        return CORE_SHARE_BESIDE_LOCAL_SERVER if self.beside_local_server else CORE_SHARE_ALONE

    @property
    def clean_rate(self) -> float:
        """The highest rate one worker is expected to hold clean (on time, its sends following
        the schedule's own law)."""
        return self.core_share / self.cpu_s_per_query

    def describe(self) -> str:
        where = "beside a server on this machine" if self.beside_local_server else "alone"
        return (
            f"calibrated {s_to_us(self.cpu_s_per_query):.0f} µs client CPU per query "
            f"({self.queries} queries, {self.seconds:.1f} s closed loop, "
            f"{CALIBRATION_IN_FLIGHT} in flight); "
            f"one worker holds ≈ {self.clean_rate:,.0f} QPS filling {self.core_share:g} of a core "
            f"{where}"
        )
