"""The sweep's test bench: a fake target whose capacity is a known function of the configuration.

`loadtest sweep --url fake://...` (and the tests) drive the in-process fake target through this
configurator instead of Triton's repository API, so the whole command (budget, ranking, files,
stop signals, restoring) runs end to end with no server. The law, chosen so the best point is
inside the grid rather than at an edge:
- `instances` are the fake's workers (servers of its M/G/k queue);
- `intra_op_threads` shorten the service time by √threads;
- instances × threads beyond the host's `cores` share them: service time × (instances × threads
  / cores), so capacity stops growing at `cores` busy threads, and threads pay less than
  instances (√): the best point is instances = cores with one thread, more instances tie;
- batch size and queue delay do nothing (the fake serves one query at a time): a sweep must find
  them flat and pick the cheapest;
- instances above `max_instances` are rejected as Triton rejects a configuration it cannot load.
Memory: 10 MB per instance.
"""

from __future__ import annotations

import math
from typing import Any

from loadtest.scenarios.searches.sweep_space import Candidate, baseline_of
from loadtest.server.model_control import ConfigRejected
from loadtest.targets.fake import FAKE_MODEL, FakeTarget, ServiceLaw

FAKE_MEMORY_PER_INSTANCE = 10_000_000
FAKE_MEMORY_SOURCE = "fake: 10 MB per instance"


def fake_config(instances: int, intra_op_threads: int = 1) -> dict[str, Any]:
    """A Triton-shaped configuration of the fake model (what the configurator reports loaded)."""
    return {
        "name": FAKE_MODEL.name,
        "backend": "onnxruntime",  # so the thread parameters exist, as on the real backend
        "max_batch_size": FAKE_MODEL.max_batch_size,
        "input": [{"name": t.name, "data_type": f"TYPE_{t.datatype}", "dims": list(t.shape)}
                  for t in FAKE_MODEL.inputs],
        "output": [{"name": t.name, "data_type": f"TYPE_{t.datatype}", "dims": list(t.shape)}
                   for t in FAKE_MODEL.outputs],
        "instance_group": [{"count": instances, "kind": "KIND_CPU"}],
        "dynamic_batching": {"max_queue_delay_microseconds": 100},
        "parameters": {"intra_op_thread_count": {"string_value": str(intra_op_threads)}},
    }  # fmt: skip


def fake_service_ns(point: Candidate, base_ns: int, cores: int) -> int:
    """The service time the law gives `point` (see the module docstring)."""
    threads = max(1, point.intra_op_threads or 1)
    share = max(1.0, point.instances * threads / cores)
    return int(base_ns * share / math.sqrt(threads))


def fake_capacity_qps(point: Candidate, base_ns: int, cores: int) -> float:
    return point.instances * 1e9 / fake_service_ns(point, base_ns, cores)


class FakeConfigurator:
    """ModelConfigurator over a FakeTarget (reconfigured in place; the sweep reopens it)."""

    def __init__(
        self, target: FakeTarget, cores: int = 2, max_instances: int = 4, instances: int = 1
    ) -> None:
        self.target = target
        self.cores = cores
        self.max_instances = max_instances
        self.base_ns = target.law.mean_ns
        self.kind = target.law.kind
        self.original = fake_config(instances)
        self.current = self.original
        self.loads: list[dict[str, Any]] = []
        self._set(self.original)

    def _set(self, config: dict[str, Any]) -> None:
        point = baseline_of(config)
        law = ServiceLaw(self.kind, fake_service_ns(point, self.base_ns, self.cores))
        self.target.reconfigure(law, point.instances)
        self.current = config

    async def loaded(self) -> dict[str, Any]:
        return self.original

    async def apply(self, config: dict[str, Any]) -> None:
        self.loads.append(config)
        instances = baseline_of(config).instances
        if instances > self.max_instances:
            raise ConfigRejected(
                f"fake: {instances} instances exceed the fake server's {self.max_instances}"
            )
        self._set(config)

    async def restore(self) -> str:
        if self.current is not self.original:
            self.loads.append(self.original)
            self._set(self.original)
        return ""

    async def memory(self) -> tuple[int | None, str]:
        return baseline_of(self.current).instances * FAKE_MEMORY_PER_INSTANCE, FAKE_MEMORY_SOURCE
