"""What one run produced before interpretation: the schedule, the raw outcome, the client's cost.

It is the hand-over from the engine (or the shard merge) to the rules and the report: nothing here
is interpreted, so a run can be judged again later under other rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from loadtest.core.schedule import Schedule
from loadtest.core.target import ModelSpec
from loadtest.engine.runner import RunOutcome
from loadtest.engine.selfmeasure import ClientReport


@dataclass(frozen=True)
class Measurement:
    """What one run produced, before interpretation."""

    model: ModelSpec
    schedule: Schedule
    outcome: RunOutcome
    client_cpu_s: float  # user+system CPU of every generator process during the run
    client: ClientReport | None = None  # the generator's self-measurement (Server scenario)
