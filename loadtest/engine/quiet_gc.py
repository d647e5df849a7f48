"""Keep Python's cyclic garbage collector from pausing a run for tens of milliseconds.

A full (oldest-generation) collection walks every tracked object in the process: after the
imports a load test needs (numpy, scipy, grpcio, tritonclient...) that took 22-80 ms here, up to
three times in a 5 s gRPC run at 2000 QPS (docs/grpc-load-path.md), and each one holds the event
loop, so every send due meanwhile goes out late. For the run:
- `gc.freeze()` moves everything alive at its start into a permanent generation that collections
  skip (O(1): no collection first, so a shard whose t = 0 is a fixed instant is not delayed);
- full collections are put off until the run is over (the oldest generation's threshold raised).
The young and middle generations are still collected at their usual thresholds, which is where
cyclic garbage made during a run dies: a query over gRPC leaves none, one that times out over
HTTP leaves ~10 objects (measured). Raising the young threshold instead (to 50 000) made it
worse: a few collections of ~50 ms instead of many of ~0.2 ms. Everything is restored after.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

# The oldest generation is collected once the middle one has been collected this many times
# (and enough objects are pending); CPython's default is 10.
RUN_THRESHOLD2 = 1_000_000


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Freeze what is alive and put off full collections, run, restore both (a nested use
    leaves the outer one alone)."""
    already = gc.get_freeze_count() > 0
    thresholds = gc.get_threshold()
    if not already:
        gc.freeze()
        gc.set_threshold(thresholds[0], thresholds[1], max(thresholds[2], RUN_THRESHOLD2))
    try:
        yield
    finally:
        if not already:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
