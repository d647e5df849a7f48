"""The sweep's strategy: which configuration to measure next, and which one wins. Pure.

Why not a grid: five instance counts × eight batch sizes × seven delays × two thread counts is
560 configurations; at a minute of find-peak each, nine hours. Here a coordinate climb:
- start from the loaded configuration (it is what runs now, and the comparison everyone wants);
- the incumbent is the point with the highest peak so far; its unmeasured neighbours (one step
  up or down one dimension) are measured next, each find-peak seeded at the incumbent's peak
  (so it starts near its own knee instead of calibrating from nothing);
- coordinates that pay go first: the move that made the incumbent (same dimension, same
  direction) is repeated first; then dimensions by how much they changed the peak so far
  (a dimension never moved yet counts as worth learning); a move that lost clearly somewhere and
  never paid anywhere is not retried from other points;
- done when every remaining neighbour of the incumbent is measured or skipped (a local optimum);
  the caller's budget may end it earlier.

Ranking is noise-aware: each point's peak is an interval [low, high] (low: the highest rate that
passed every time it was probed, the boundary probe repeated once; high: the lowest rate that
failed). Overlapping intervals are ties, broken by the cheaper configuration (fewer instances,
then less memory, fewer threads, smaller batches, shorter delay).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from loadtest.scenarios.searches.sweep_space import DIMENSIONS, Candidate, SearchSpace

# Dimensions tried in this order when nothing else says which pays (instances usually matter most
# on a server with spare cores, then how requests are batched).
PRIORITY = (
    "instances",
    "max_batch_size",
    "queue_delay_us",
    "intra_op_threads",
    "inter_op_threads",
    "preferred_batch_sizes",
)
assert set(PRIORITY) == set(DIMENSIONS)


@dataclass(frozen=True)
class PointResult:
    """One measured configuration, reduced to what the strategy and the ranking need."""

    candidate: Candidate
    peak_qps: float | None  # the highest rate VALID every time it ran; None: none (or not loaded)
    low_qps: float  # the peak's interval
    high_qps: float
    failed: str = ""  # why it could not be measured (the server rejected the configuration...)
    memory_bytes: int | None = None

    @property
    def usable(self) -> bool:
        return not self.failed and self.peak_qps is not None and self.peak_qps > 0


def cost_key(point: PointResult) -> tuple[float, ...]:
    """Cheaper first: instances, memory, threads, batch size, queue delay."""
    c = point.candidate
    return (
        c.instances,
        point.memory_bytes if point.memory_bytes is not None else math.inf,
        c.intra_op_threads or 0,
        c.inter_op_threads or 0,
        c.max_batch_size,
        c.queue_delay_us if c.queue_delay_us is not None else -1,
    )


def overlap(a: PointResult, b: PointResult) -> bool:
    return a.low_qps <= b.high_qps and b.low_qps <= a.high_qps


def _by_peak(point: PointResult) -> tuple[float, tuple[float, ...]]:
    return (-(point.peak_qps or 0.0), cost_key(point))


def rank(points: Sequence[PointResult]) -> list[PointResult]:
    """Best first. Take the highest peak left; the cheapest point whose interval overlaps it is
    next; repeat. Points with no peak and failed points come last, in measurement order."""
    left = [p for p in points if p.usable]
    ranked: list[PointResult] = []
    while left:
        top = min(left, key=_by_peak)
        ties = [p for p in left if overlap(p, top)]
        chosen = min(ties, key=cost_key)
        ranked.append(chosen)
        left.remove(chosen)
    return ranked + [p for p in points if not p.usable]


def ties_of(winner: PointResult, points: Sequence[PointResult]) -> list[PointResult]:
    """The other usable points whose peak interval overlaps the winner's (indistinguishable)."""
    return [p for p in points if p.usable and p is not winner and overlap(p, winner)]


@dataclass(frozen=True)
class Step:
    candidate: Candidate
    seed_qps: float | None  # where its find-peak should start (a neighbour's peak)
    reason: str
    baseline: bool = False  # the loaded configuration: measured as loaded, not reloaded


def _differs_in(a: Candidate, b: Candidate) -> str | None:
    """The one dimension two points differ in, or None (same point or several dimensions)."""
    names = [n for n in DIMENSIONS if getattr(a, n) != getattr(b, n)]
    return names[0] if len(names) == 1 else None


@dataclass(frozen=True)
class Move:
    """Between two measured points that differ in one dimension: from `a` to `b`."""

    name: str
    direction: int  # +1: b's value is later on the axis
    gain: float  # log(peak_b / peak_a); -inf if b has no peak
    clear_loss: bool  # b's interval lies wholly below a's
    clear_win: bool


class SweepSearch:
    def __init__(self, space: SearchSpace, baseline: Candidate, resolution: float = 0.05) -> None:
        self.space = space.with_point(baseline)
        self.baseline = baseline.normal()
        self.resolution = resolution

    def incumbent(self, points: Sequence[PointResult]) -> PointResult | None:
        usable = [p for p in points if p.usable]
        return min(usable, key=_by_peak) if usable else None

    def _moves(self, points: Sequence[PointResult]) -> list[Move]:
        measured = list(points)  # a configuration the server rejected is a clear loss
        moves = []
        for i, a in enumerate(measured):
            for b in measured[i + 1 :]:
                name = _differs_in(a.candidate, b.candidate)
                if name is None:
                    continue
                axis = self.space.axis(name)
                va, vb = getattr(a.candidate, name), getattr(b.candidate, name)
                if va not in axis or vb not in axis:
                    continue
                direction = 1 if axis.index(vb) > axis.index(va) else -1
                for x, y, d in ((a, b, direction), (b, a, -direction)):
                    if not x.usable or x.peak_qps is None:
                        continue
                    gain = math.log(y.peak_qps / x.peak_qps) if y.peak_qps else -math.inf
                    moves.append(
                        Move(
                            name,
                            d,
                            gain,
                            clear_loss=y.high_qps < x.low_qps or not y.usable,
                            clear_win=y.low_qps > x.high_qps,
                        )
                    )
        return moves

    def _last_move(
        self, points: Sequence[PointResult], best: PointResult
    ) -> tuple[str, int] | None:
        """The move that made `best` the incumbent: from the best point measured before it that
        differs in one dimension."""
        index = next(i for i, p in enumerate(points) if p is best)
        earlier = [p for p in points[:index] if p.usable]
        sources = [p for p in earlier if _differs_in(p.candidate, best.candidate)]
        if not sources:
            return None
        source = min(sources, key=_by_peak)
        name = _differs_in(source.candidate, best.candidate)
        assert name is not None
        axis = self.space.axis(name)
        a, b = getattr(source.candidate, name), getattr(best.candidate, name)
        return name, (1 if axis.index(b) > axis.index(a) else -1)

    def _order(self, points: Sequence[PointResult], best: PointResult) -> list[tuple[str, int]]:
        """(dimension, direction) pairs to try from the incumbent, most promising first: the move
        that made it; moves that paid elsewhere (by gain); moves never tried (by PRIORITY, up
        before down); the rest. Moves that lost clearly wherever they were tried are left out."""
        moves = self._moves(points)
        first = self._last_move(points, best)
        pays = math.log(1 + self.resolution)
        pairs: list[tuple[tuple[float, ...], tuple[str, int]]] = []
        for name in self.space.swept():
            for direction in (1, -1):
                tried = [m for m in moves if m.name == name and m.direction == direction]
                if tried and all(m.clear_loss for m in tried):
                    continue
                gain = max((m.gain for m in tried), default=-math.inf)
                if first == (name, direction):
                    tier, weight = 0, 0.0
                elif gain > pays:
                    tier, weight = 1, -gain
                elif not tried:
                    tier, weight = 2, 0.0
                else:
                    tier, weight = 3, -gain if math.isfinite(gain) else math.inf
                key = (tier, weight, PRIORITY.index(name), -direction)
                pairs.append((key, (name, direction)))
        pairs.sort(key=lambda item: item[0])
        return [pair for _, pair in pairs]

    def next_step(self, points: Sequence[PointResult]) -> Step | None:
        """The next configuration to measure, or None when the climb has converged."""
        measured = {p.candidate.normal() for p in points}
        if self.baseline not in measured:
            return Step(self.baseline, None, "the loaded configuration", baseline=True)
        best = self.incumbent(points)
        origin = best.candidate if best is not None else self.baseline
        seed = best.peak_qps if best is not None else None
        order = (
            self._order(points, best)
            if best is not None
            else [(n, d) for n in self.space.swept() for d in (1, -1)]
        )
        for name, direction in order:
            for d, neighbour in self.space.neighbours(origin, name):
                if d == direction and neighbour not in measured:
                    word = "up" if d > 0 else "down"
                    return Step(neighbour, seed, f"{name} one step {word} from the best so far")
        if best is not None:
            return self._across_plateau(points, best, measured)
        return None

    def _across_plateau(
        self, points: Sequence[PointResult], best: PointResult, measured: set[Candidate]
    ) -> Step | None:
        """Points tied with the best (overlapping intervals) are a plateau the climb cannot tell
        from the top: their own neighbours are tried too before calling it converged, since a
        flat step often precedes a rise (batching off -> a zero delay changes little; a batch
        size above what the delay forms changes nothing until the delay grows)."""
        for point in sorted(ties_of(best, points), key=_by_peak):
            for name, direction in self._order(points, point):
                for d, neighbour in self.space.neighbours(point.candidate, name):
                    if d == direction and neighbour not in measured:
                        word = "up" if d > 0 else "down"
                        return Step(
                            neighbour,
                            point.peak_qps,
                            f"{name} one step {word} from a point tied with the best",
                        )
        return None
