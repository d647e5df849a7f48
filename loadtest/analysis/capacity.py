"""Capacity plan: how many replicas of a measured deployment carry a target QPS within the SLO.

Pure arithmetic with its assumptions spelled out, because a replica count is only as good as them:
    usable per replica = peak × (1 − headroom)
    replicas           = ceil(target / usable) + spare
The peak must be the highest rate at which one replica met the same SLO (find-peak's answer);
`rule` says which pass rule found it (MLPerf's percentile bound, LoadGen's token bounds on p TTFT
and p TPOT, or goodput under per-request SLOs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from loadtest.errors import SettingsError

# How queries reach the replicas. A balancer that spreads connections (L4: TCP/TLS) rather than
# queries (L7: per HTTP request or gRPC call) pins each client connection, and every query on it,
# to one replica: a client with one connection loads one replica only.
SPREAD_ASSUMPTION = (
    "the load balancer spreads queries evenly and at random, query by query (an L7 balancer: per "
    "HTTP request or gRPC call); a Poisson stream split at random stays Poisson, so each replica "
    "sees the traffic find-peak measured. An L4 balancer spreads connections, not queries: then "
    "it holds only with many more client connections than replicas (loadtest: --connections N "
    "per worker, calls round robin over them)"
)
ASSUMPTIONS = (
    "replicas scale linearly: nothing they share (load balancer, network, storage, a database) "
    "saturates first",
    SPREAD_ASSUMPTION,
    "each replica runs on the same hardware, with the same model configuration and the same "
    "client-to-server network as the measured one",
    "the headroom covers run-to-run variance and bursts above the average rate",
)


@dataclass(frozen=True)
class CapacityPlan:
    target_qps: float
    peak_qps: float  # per replica, under the SLO
    headroom: float
    spare: int
    usable_qps_per_replica: float
    replicas_for_load: int
    replicas: int
    load_per_replica_qps: float  # at the target, with `replicas_for_load` serving
    utilization_of_peak: float
    slo: str
    notes: tuple[str, ...]
    assumptions: tuple[str, ...] = ASSUMPTIONS
    rule: str = ""  # the pass rule the peak was searched under, in words


# A plan past this many replicas is a rate typed wrong, not a deployment.
MAX_REPLICAS = 1_000_000


def plan_capacity(
    target_qps: float,
    peak_qps: float,
    headroom: float = 0.2,
    spare: int = 0,
    slo: str = "",
    notes: tuple[str, ...] = (),
    rule: str = "",
) -> CapacityPlan:
    if not target_qps > 0:
        raise SettingsError(f"--target-qps must be > 0, got {target_qps:g}")
    if not peak_qps > 0:
        raise SettingsError(f"the measured peak must be > 0 QPS, got {peak_qps:g}")
    if not 0 <= headroom < 1:
        raise SettingsError(f"--headroom must be in [0, 1), got {headroom:g}")
    if spare < 0:
        raise SettingsError(f"--spare must be ≥ 0, got {spare}")
    if spare > MAX_REPLICAS:
        raise SettingsError(f"--spare must be at most {MAX_REPLICAS:,}, got {spare:,}")
    usable = peak_qps * (1 - headroom)
    ratio = target_qps / usable
    if not ratio <= MAX_REPLICAS:  # not a plan: a rate typed wrong (#26: 1e9 over 1e-9 QPS)
        raise SettingsError(
            f"{target_qps:,.6g} QPS over {usable:,.6g} usable QPS per replica needs "
            f"{ratio:,.3g} replicas, more than {MAX_REPLICAS:,}: check --target-qps and the peak"
        )
    # A tiny epsilon keeps exact multiples (e.g. 400 / 100) from rounding up by float noise.
    needed = max(1, math.ceil(ratio - 1e-9))
    load = target_qps / needed
    extra = (
        (f"{spare} spare replica(s) keep the SLO with {spare} replica(s) down",) if spare else ()
    )
    return CapacityPlan(
        target_qps=target_qps,
        peak_qps=peak_qps,
        headroom=headroom,
        spare=spare,
        usable_qps_per_replica=usable,
        replicas_for_load=needed,
        replicas=needed + spare,
        load_per_replica_qps=load,
        utilization_of_peak=load / peak_qps,
        slo=slo,
        notes=notes,
        assumptions=ASSUMPTIONS + extra,
        rule=rule,
    )
