"""CPU time of a process tree (the local Triton and its Python-backend stubs) over a run.

Triton's Python backend runs each model instance in a separate stub process, so the server's CPU
is the tree's, not the parent's alone. Children alive at either reading are counted; a child that
started and exited inside the run is missed (none does during a steady run).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psutil


def tree_cpu_s(pid: int) -> float | None:
    """user + system CPU seconds of `pid` and its descendants now; None if it is gone."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


@dataclass(frozen=True)
class CpuUse:
    cpu_s: float
    wall_s: float

    @property
    def cores(self) -> float:
        """Average cores busy over the window (1.0 = one core fully used)."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


class TreeCpuMeter:
    """start() ... stop() -> CpuUse of the tree rooted at `pid` (None if unreadable)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._cpu: float | None = None
        self._wall = 0.0

    def start(self) -> None:
        self._cpu = tree_cpu_s(self.pid)
        self._wall = time.perf_counter()

    def stop(self) -> CpuUse | None:
        now = tree_cpu_s(self.pid)
        if now is None or self._cpu is None:
            return None
        return CpuUse(now - self._cpu, time.perf_counter() - self._wall)
