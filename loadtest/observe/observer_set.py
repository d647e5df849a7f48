"""Observes the server side of several models at once: one observer per entry of a mix.

Each entry's Triton is read through its own target's statistics API for its own model, so the
server-side split of a mix is per model (Triton keeps statistics per model). Server CPU and the
:8002 metrics are per *server*: entries that share one Triton each see all of its CPU, and the
observer set says so in each of their notes rather than splitting a number it cannot split.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from loadtest.core.target import Target
from loadtest.engine.measurement import Measurement
from loadtest.observe.observer import ServerObserver, ServerSide, observer_for_target


class ObserverSet:
    """`start()` at the mix's t = 0, `finish(measurements)` after it, `close()` at the end."""

    def __init__(self, targets: Mapping[str, Target]) -> None:
        self.observers: dict[str, ServerObserver | None] = {
            name: observer_for_target(target) for name, target in targets.items()
        }
        self._started = False

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        for observer in self.observers.values():
            if observer is not None:
                await observer.start()

    async def finish(self, measurements: Mapping[str, Measurement]) -> dict[str, ServerSide | None]:
        """Each entry's server side (None without a Triton behind it, or a run never started)."""
        sides: dict[str, ServerSide | None] = {}
        pids: dict[int, list[str]] = {}
        for name, observer in self.observers.items():
            if observer is not None and observer.server_pid is not None:
                pids.setdefault(observer.server_pid, []).append(name)
        for name, observer in self.observers.items():
            if observer is None or not self._started or name not in measurements:
                sides[name] = None
                continue
            side = await observer.finish(measurements[name])
            sharing = pids.get(observer.server_pid or -1, [name])
            if len(sharing) > 1 and side.server_cpu is not None:
                others = ", ".join(n for n in sharing if n != name)
                side = dataclasses.replace(
                    side,
                    notes=(
                        *side.notes,
                        f"server CPU is the whole server's, shared with {others} (per query: "
                        "divided by this entry's queries only)",
                    ),
                )
            sides[name] = side
        return sides

    async def close(self) -> None:
        for observer in self.observers.values():
            if observer is not None:
                await observer.close()
