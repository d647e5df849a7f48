"""Peak search: the highest Server-scenario QPS whose run is VALID, from as few probes as possible.

Pure: it reads the probes measured so far and says which rate to try next, or that it is done;
the caller runs the probes (peak_run.search_peak) and owns the clock and the time budget.

Why not LoadGen's doubling-then-bisection: bisection uses one bit of each probe (pass/fail) and
throws away how far from the bound the latency was. Here every probe counts:
- Bracketing: while every probe passes, the next rate grows by the latency headroom at the best
  passing probe (bound / p-latency, clamped to ×1.25–×4), never past a known ceiling (the measured
  closed-loop throughput, when a calibration ran, × 1.1).
- Refining: once a passing rate `lo` and a failing rate `hi` bracket the peak, the next rate is
  where the straight line through (lo, 1/latency) and (hi, 1/latency) reaches 1/bound: regula
  falsi on the latency–throughput curve, whose inverse is close to linear near the knee (queueing
  delay ∝ 1/(capacity − rate)). The guess is nudged half a resolution step past the crossing, to
  the side that has not moved, so one probe can close the bracket. A safeguard keeps every step
  inside the middle 80 % of the bracket, so it shrinks by ≥ 10 % per probe even when the
  interpolation is poor (and after three probes on one side, the guess is pulled to the middle).
- Growing uses the same line through the two best passing probes once there are two.
- Stopping: when (hi − lo) / hi ≤ resolution, or the caller's budget runs out.
- A client-bound probe (the generator missed its own schedule) is no measurement of the server: it
  neither passes nor fails; it caps the rates the search may try (halving when nothing below it
  has been measured yet), and if the bracket cannot be closed below that cap the answer says so.

The search reads one number per probe against one bound (`latency_ns`, `target_latency_ns`): under
MLPerf's rule the latency at the percentile and its bound; a normalized measure otherwise (find-peak
--mix's worst entry, the goodput rule's SLO ratio at the target share), scaled so that
NORMALIZED_BOUND_NS stands for "exactly at the bound". `words` name a pass and a failure in the
conclusion ("VALID"/"INVALID", or goodput's).

Confidence of the answer: the peak is the highest VALID rate `lo`; the true peak lies in [lo, hi)
if latency grows with load; each probe's own VALID verdict already includes LoadGen's early
stopping (99 % confidence that the percentile meets the bound at that rate).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

MIN_GROWTH = 1.25
MAX_GROWTH = 4.0
SAFEGUARD = 0.1  # keep each refining step inside [lo + 10 %, hi − 10 %] of the bracket

# A search that found no failing rate above its peak: the peak is a lower bound.
LOWER_BOUND = "lower-bound"


# A normalized measure (a ratio to its bound) is read scaled so that this stands for 1: the bound.
NORMALIZED_BOUND_NS = 1_000_000_000
MLPERF_WORDS = ("VALID", "INVALID")
GOODPUT_WORDS = ("goodput held", "goodput missed")

# A probe whose failed queries reach the bound's percentile has an infinite latency there; this
# stands for it in the arithmetic (1 / latency ≈ 0: a saturated point), and reports print "∞".
FAILED_LATENCY_NS = 10**15


@dataclass(frozen=True)
class Probe:
    """One Server run at a fixed rate, reduced to what the search needs."""

    qps: float  # requested rate
    # latency at the bound's percentile, from scheduled time, failed and unanswered queries
    # counted as +∞ (FAILED_LATENCY_NS when they reach the percentile's rank)
    latency_ns: int
    valid: bool  # the full MLPerf verdict (bound, early stopping, minimums, no failures)
    client_bound: bool  # the generator fell behind its schedule: not a server measurement
    completed_qps: float = 0.0
    reasons: tuple[str, ...] = ()
    fastest_ns: int = 0  # the fastest query's latency from its actual send

    @property
    def counts(self) -> bool:
        return not self.client_bound


@dataclass(frozen=True)
class Bracket:
    lo: Probe | None  # highest passing probe
    hi: Probe | None  # lowest failing probe above lo
    client_cap: float | None  # lowest rate at which the client fell behind


def bracket(probes: Sequence[Probe]) -> Bracket:
    counted = [p for p in probes if p.counts]
    cap = min((p.qps for p in probes if p.client_bound), default=None)
    failing = sorted((p for p in counted if not p.valid), key=lambda p: p.qps)
    passing = sorted((p for p in counted if p.valid), key=lambda p: p.qps)
    hi = failing[0] if failing else None
    below = [p for p in passing if hi is None or p.qps < hi.qps]
    lo = below[-1] if below else None
    return Bracket(lo=lo, hi=hi, client_cap=cap)


@dataclass(frozen=True)
class PeakSearch:
    target_latency_ns: int
    start_qps: float
    resolution: float = 0.05  # stop when (hi − lo) / hi ≤ this
    ceiling_qps: float | None = None  # e.g. 1.1 × measured closed-loop throughput
    min_qps: float = 0.1
    words: tuple[str, str] = MLPERF_WORDS  # a pass and a failure, in the conclusion
    # The probes' measure is a ratio to the bounds (× NORMALIZED_BOUND_NS), not a latency: the
    # conclusion then speaks of ratios
    normalized: bool = False

    def unreachable(self, probes: Sequence[Probe]) -> Probe | None:
        """A probe whose fastest query already exceeded the bound: no rate can meet it."""
        return next((p for p in probes if p.fastest_ns > self.target_latency_ns), None)

    def next_qps(self, probes: Sequence[Probe]) -> float | None:
        """The next rate to probe, or None when the search is done (see `conclusion`)."""
        if not probes:
            return self._limit(self.start_qps, None)
        if self.unreachable(probes) is not None:
            return None
        b = bracket(probes)
        if b.lo is None and b.hi is None:  # only client-bound probes so far: back off
            assert b.client_cap is not None
            nxt = b.client_cap / 2
            return None if nxt < self.min_qps else nxt
        if b.hi is None:
            assert b.lo is not None
            return self._grow(b.lo, b.client_cap, probes)
        if b.lo is None:
            nxt = (
                b.hi.qps / MAX_GROWTH
                if b.hi.latency_ns > 4 * self.target_latency_ns
                else (b.hi.qps / 2)
            )
            if b.client_cap is not None and nxt >= b.client_cap:
                nxt = b.client_cap / 2  # never the rate the client already fell behind at
            return None if nxt < self.min_qps else nxt
        if (b.hi.qps - b.lo.qps) / b.hi.qps <= self.resolution:
            return None
        return self._refine(b.lo, b.hi, probes)

    def _limit(self, qps: float, cap: float | None) -> float | None:
        limits = [c for c in (self.ceiling_qps, cap) if c is not None]
        if limits and qps >= min(limits):
            return None
        return qps

    def _grow(self, lo: Probe, cap: float | None, probes: Sequence[Probe]) -> float | None:
        passing = sorted((p for p in probes if p.counts and p.valid), key=lambda p: p.qps)
        factor = min(MAX_GROWTH, max(MIN_GROWTH, self.target_latency_ns / max(lo.latency_ns, 1)))
        nxt = lo.qps * factor
        if len(passing) >= 2:
            # Two points of the curve: extrapolate the inverse-latency line to the bound, and
            # aim a little past it so the next probe is likely to close the bracket.
            crossing = _crossing(passing[-2], passing[-1], self.target_latency_ns)
            if crossing is not None and crossing > lo.qps:
                nxt = min(nxt, max(lo.qps * MIN_GROWTH, crossing * (1 + self.resolution)))
        limits = [c for c in (self.ceiling_qps, cap) if c is not None]
        if limits:
            limit = min(limits)
            if lo.qps >= limit * (1 - self.resolution):
                return None  # already at the ceiling: nothing above can be measured
            nxt = min(nxt, limit * (1 - self.resolution / 2))
        if any(abs(p.qps - nxt) / nxt < 1e-9 for p in probes):
            return None
        return nxt

    def _refine(self, lo: Probe, hi: Probe, probes: Sequence[Probe]) -> float:
        """Inverse-latency interpolation, nudged to straddle the predicted crossing."""
        width = hi.qps - lo.qps
        guess = _crossing(lo, hi, self.target_latency_ns)
        if guess is None:
            guess = lo.qps + width / 2
        counted = [p for p in probes if p.counts]
        nudge = self.resolution / 2 * guess
        # The end that just moved is near the crossing; aim just past the crossing on the other
        # side so the next probe can close the bracket.
        guess = guess + nudge if counted[-1].valid else guess - nudge
        if self._same_end_twice(probes):
            guess = (guess + lo.qps + width / 2) / 2  # Illinois-style pull towards the middle
        return min(max(guess, lo.qps + SAFEGUARD * width), hi.qps - SAFEGUARD * width)

    @staticmethod
    def _same_end_twice(probes: Sequence[Probe]) -> bool:
        """Did the last three counted probes land on the same side (all pass or all fail)?"""
        counted = [p for p in probes if p.counts]
        return len(counted) >= 3 and counted[-1].valid == counted[-2].valid == counted[-3].valid

    def conclusion(
        self, probes: Sequence[Probe], budget_exhausted: bool, interrupted: bool = False
    ) -> Conclusion:
        """What the probes show. `interrupted` (a signal stopped the search): the text says
        the search did not finish, never that no rate meets the bound (#26)."""
        found = self._conclusion(probes, budget_exhausted)
        if not interrupted:
            return found
        text = found.text
        if found.status == "none-valid":
            text = f"the rates probed, down to {found.upper_qps:g} QPS, missed the bound"
        return dataclasses.replace(found, text=f"stopped before the search finished: {text}")

    def _conclusion(self, probes: Sequence[Probe], budget_exhausted: bool) -> Conclusion:
        b = bracket(probes)
        peak = b.lo.qps if b.lo else None
        upper = b.hi.qps if b.hi else None
        slow = self.unreachable(probes)
        if peak is None and slow is not None and self.normalized:
            return Conclusion(
                peak_qps=None,
                upper_qps=slow.qps,
                status="bound-unreachable",
                text=(
                    f"the bounds are below the service time: even the fastest answers at "
                    f"{slow.qps:g} QPS were {slow.fastest_ns / self.target_latency_ns:.3f} × the "
                    "bounds from their send, so no rate can meet them"
                ),
            )
        if peak is None and slow is not None:
            return Conclusion(
                peak_qps=None,
                upper_qps=slow.qps,
                status="bound-unreachable",
                text=(
                    f"the bound {self.target_latency_ns / 1e6:g} ms is below the service time: "
                    f"even the fastest query at {slow.qps:g} QPS took {slow.fastest_ns / 1e6:.3f}"
                    " ms from its send, so no rate can meet it"
                ),
            )
        if peak is None:
            if b.hi is None:
                status = "no-measurement"
                text = "no probe measured the server (every probe was client-bound)"
                if not probes:
                    text = "no probe ran" + (
                        ": the budget was spent before a first probe could finish (raise --budget)"
                        if budget_exhausted
                        else ""
                    )
                    budget_exhausted = False  # said already
            else:
                status = "none-valid"
                text = f"no rate down to {b.hi.qps:g} QPS met the bound"
        elif upper is None:
            status = LOWER_BOUND
            capped = b.client_cap is not None or self.ceiling_qps is not None
            why = (
                "the client or throughput ceiling stopped the search"
                if capped
                else ("the budget ran out before any probe failed")
            )
            text = f"peak ≥ {peak:g} QPS; no failing rate was found ({why})"
        else:
            width = (upper - peak) / upper
            status = "bracketed" if width <= self.resolution else "coarse"
            passed, failed = self.words
            text = (
                f"peak in [{peak:g}, {upper:g}) QPS: {passed} at {peak:g}, {failed} at {upper:g} "
                f"(resolution {width * 100:.1f} % of the upper rate)"
            )
        if budget_exhausted and status != "bracketed":
            text += "; the time budget ran out before the search converged"
        if b.client_cap is not None:
            text += (
                f"; the client fell behind its schedule at {b.client_cap:g} QPS, so rates above "
                "that say nothing about the server"
            )
        open_above = status == LOWER_BOUND and (
            b.client_cap is not None
            or self.ceiling_qps is None
            or (peak or 0.0) * (1 + self.resolution) < self.ceiling_qps
        )
        return Conclusion(peak, upper, status, text, open_above)


def _crossing(a: Probe, b: Probe, bound_ns: int) -> float | None:
    """Where the line through (qps, 1/latency) of two probes reaches 1/bound.

    Queueing delay grows like 1/(capacity − rate) near the knee (Kingman), so inverse latency is
    close to linear in the rate there; an overloaded probe (latency ≈ ∞) still contributes 0.
    """
    ia, ib = 1 / max(a.latency_ns, 1), 1 / max(b.latency_ns, 1)
    if a.qps == b.qps or ia == ib:
        return None
    slope = (ib - ia) / (b.qps - a.qps)
    if slope >= 0:
        return None  # latency not growing with rate: no knee to aim at
    return a.qps + (1 / bound_ns - ia) / slope


@dataclass(frozen=True)
class Conclusion:
    peak_qps: float | None  # highest VALID rate; None if there is none
    upper_qps: float | None  # lowest INVALID rate above it, if found
    status: (
        str  # bracketed | coarse | lower-bound | none-valid | no-measurement | bound-unreachable
    )
    text: str
    # a lower bound with nothing known above it: the client fell behind, or the budget ended
    # the search short of the throughput ceiling (a search stopped by that ceiling is bounded:
    # no sustained rate exceeds the closed-loop throughput)
    open_above: bool = False
