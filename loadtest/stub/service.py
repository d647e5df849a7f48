"""When the stub answers an inference request: a service time, and a queue in front of K servers.

Without servers (the default) every answer is held back its service time from the request's
arrival, all at once: an infinite-server queue, whose latency never grows with the load. With K
servers the stub is a first-come-first-served queue in front of K servers, kept in virtual time
(no compute, no threads): a request starts when the earliest of the K servers is free, or at its
arrival if one is idle, and is answered when its service ends. Latency then grows with the load
as on a real server, and a run has a known utilisation ρ = rate × mean service / K, which is what
a comparison of two load generators needs (benchmarks/loadgen_compare.py): the queue turns a
burstier arrival into a longer wait, so p99 shows how each tool's sends land.

Service times are constant, or exponential with the given mean drawn from a seeded generator in
arrival order, so two runs of the same arrivals against fresh stubs with the same seed meet the
same service times. An answer goes out on the event loop's timer, so it is as late as that timer
is (uvloop's: whole milliseconds); the queue itself keeps the exact times.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from enum import Enum


class ServiceLaw(str, Enum):
    """How each request's service time is drawn."""

    CONSTANT = "constant"  # exactly the mean
    EXPONENTIAL = "exponential"  # exponential with that mean (seeded)


@dataclass
class Service:
    """Service times and the servers that serve them (0 servers = every request at once)."""

    mean_s: float = 0.0
    servers: int = 0
    law: ServiceLaw = ServiceLaw.CONSTANT
    seed: int = 0
    _draws: random.Random = field(init=False, repr=False)
    _free_at: list[float] = field(init=False, repr=False)  # a heap: when each server is free

    def __post_init__(self) -> None:
        if self.mean_s < 0 or self.servers < 0:
            raise ValueError("a service time and a server count are ≥ 0")
        self._draws = random.Random(self.seed)
        self._free_at = [float("-inf")] * self.servers

    def service_s(self) -> float:
        """The next request's service time."""
        if self.law is ServiceLaw.EXPONENTIAL and self.mean_s > 0:
            return self._draws.expovariate(1 / self.mean_s)
        return self.mean_s

    def hold_s(self, arrived_s: float) -> float:
        """Book the request that arrived at `arrived_s` (a monotonic clock, in s): how long
        after its arrival its answer is due (its wait for a server, then its service)."""
        service = self.service_s()
        if not self.servers:
            return service
        finish = max(arrived_s, self._free_at[0]) + service
        heapq.heapreplace(self._free_at, finish)
        return finish - arrived_s

    def describe(self) -> str:
        """One line for the stub's start-up and a benchmark's header."""
        if not self.mean_s:
            return "no service time (answers at once)"
        law = "exponential, mean" if self.law is ServiceLaw.EXPONENTIAL else "constant"
        where = f"{self.servers} server(s), FIFO queue" if self.servers else "no queue"
        seed = f", seed {self.seed}" if self.law is ServiceLaw.EXPONENTIAL else ""
        return f"service {law} {self.mean_s * 1e3:g} ms{seed}; {where}"
