"""Load stages judged one by one (issue #27): each stage's own offered and completed rate, its
latency percentiles, and whether it met the bound. A staged run is VALID only if every stage is
(`stages_check`, one more check of the run's verdict).

A query belongs to the stage its scheduled time falls in (core/stages.StagedArrivals.stage_index:
stage k holds (bounds[k], bounds[k + 1]]), so a stage is judged on the load it was offered,
whenever its answers came. Its completed rate is what the server carried during the stage: the
successful answers that arrived in it, to whichever stage's queries. Its percentile is LoadGen's
exact rule over every query scheduled in the stage, a failed, unanswered or never-sent one
counted at +∞ (as the run's performance constraint does): a stage that fell behind cannot pass
by leaving its queries unsent. Early stopping and the minimums stay the run's own: a stage is a
slice of one run, not a run. Pure: records in, results out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from loadtest.core.records import Records
from loadtest.core.stages import StagedArrivals
from loadtest.core.units import NS_PER_S, fmt_ms
from loadtest.rules.stats import exact_percentile_with_failures
from loadtest.rules.validity import Check, fmt_pct

STAGES_MET = "every stage met the bound"
STAGE_MISSED = (
    "A stage missed the bound: the rate it offered is more than the server carries; lower that "
    "stage's rate (or find the largest that passes with find-peak)."
)
# The percentiles reported beside the judged one.
SHOWN = (0.5, 0.9, 0.99)


@dataclass(frozen=True)
class StageResult:
    """One stage as played: what it offered, what it carried, and how fast."""

    number: int  # 1-based, as in the spec
    spec: str  # "30s:100" or "60s:100->400" (rates as played, after any scaling)
    start_ns: int
    end_ns: int
    offered_qps: float  # the profile's mean rate over the stage
    scheduled: int  # queries due in the stage (the realisation of that rate)
    completed_ok: int  # of the stage's queries, answered successfully (whenever)
    completed_in_stage: int  # successful answers (to any query) that arrived during the stage
    failed: int  # scheduled in the stage and not answered successfully
    percentile: float  # the judged one, a fraction
    target_latency_ns: int  # the bound it is judged by
    latency_ns: int | None  # at `percentile`, failures at +∞ (None: +∞, or nothing scheduled)
    percentiles_ns: dict[str, int | None]  # "p50", "p90", "p99" (successful queries only)
    met: bool

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / NS_PER_S

    @property
    def scheduled_qps(self) -> float:
        return self.scheduled / self.seconds

    @property
    def completed_qps(self) -> float:
        """What the server carried during the stage: successful answers per second of it."""
        return self.completed_in_stage / self.seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "spec": self.spec,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "offered_qps": self.offered_qps,
            "scheduled": self.scheduled,
            "scheduled_qps": self.scheduled_qps,
            "completed_ok": self.completed_ok,
            "completed_in_stage": self.completed_in_stage,
            "completed_qps": self.completed_qps,
            "failed": self.failed,
            "percentile": self.percentile,
            "target_latency_ns": self.target_latency_ns,
            "latency_ns": self.latency_ns,
            "percentiles_ns": self.percentiles_ns,
            "met": self.met,
        }


def stage_results(
    records: Records, arrivals: StagedArrivals, target_latency_ns: int, percentile: float
) -> tuple[StageResult, ...]:
    """Each stage of `arrivals` judged on the queries scheduled in it (see the module)."""
    stage_of = arrivals.stage_index(records.scheduled_ns)
    bounds = arrivals.stage_bounds_ns
    ok = records.ok
    latency = records.completed_ns - records.scheduled_ns
    answered_ns = np.sort(records.completed_ns[ok])
    results = []
    for k, stage in enumerate(arrivals.profile.stages):
        mine = stage_of == k
        done = np.sort(latency[mine & ok])
        scheduled = int(mine.sum())
        failed = scheduled - len(done)
        value = exact_percentile_with_failures(done, failed, percentile) if scheduled else None
        shown = {
            f"p{p * 100:g}": (exact_percentile_with_failures(done, 0, p) if len(done) else None)
            for p in SHOWN
        }
        results.append(
            StageResult(
                number=k + 1,
                spec=stage.spec(),
                start_ns=int(bounds[k]),
                end_ns=int(bounds[k + 1]),
                offered_qps=stage.expected_count / (stage.duration_ns / NS_PER_S),
                scheduled=scheduled,
                completed_ok=len(done),
                completed_in_stage=int(
                    np.searchsorted(answered_ns, bounds[k + 1], "right")
                    - np.searchsorted(answered_ns, bounds[k], "right")
                ),
                failed=failed,
                percentile=percentile,
                target_latency_ns=target_latency_ns,
                latency_ns=value,
                percentiles_ns=shown,
                # A stage offered nothing (a pause) has nothing to miss.
                met=scheduled == 0 or (value is not None and value <= target_latency_ns),
            )
        )
    return tuple(results)


def stages_check(results: tuple[StageResult, ...]) -> Check:
    """The verdict's check: passed only if every stage met the bound; the detail names those that
    did not, each with its percentile."""
    missed = [r for r in results if not r.met]
    if not results:
        raise ValueError("no stages to judge")
    label = fmt_pct(results[0].percentile)
    target = fmt_ms(results[0].target_latency_ns)
    if not missed:
        return Check(
            STAGES_MET,
            True,
            f"every stage met the bound: {len(results)} stages, {label} ≤ {target}",
        )
    named = ", ".join(
        f"stage {r.number} ({r.spec}) {label} "
        f"{'∞' if r.latency_ns is None else fmt_ms(r.latency_ns)}"
        for r in missed
    )
    return Check(
        STAGES_MET,
        False,
        f"every stage met the bound: {len(missed)} of {len(results)} over {target}: {named}",
        STAGE_MISSED,
    )


def stages_json(stages: Sequence[StageResult]) -> dict[str, Any]:
    """A run's or probe's stages for its JSON: each as played and judged alone, and the numbers
    of those missed; nothing without stages."""
    if not stages:
        return {}
    return {
        "stages": [stage.to_dict() for stage in stages],
        "stages_missed": [stage.number for stage in stages if not stage.met],
    }
