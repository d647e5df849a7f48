"""Keep Python's cyclic garbage collector from pausing a run for tens of milliseconds.

A full (oldest-generation) collection walks every tracked object in the process: after the
imports a load test needs (numpy, scipy, grpcio, tritonclient...) that took ~80 ms here, three
times in a 4 s gRPC run at 2000 QPS (per-phase counters, docs/grpc-load-path.md), and each one
holds the event loop, so every send due meanwhile goes out late. `gc.freeze()` moves everything
alive at the start of the run into a permanent generation that collections skip; what the run
itself allocates is still collected as usual, and the frozen objects are handed back afterwards.
Freezing is O(1) (no collection first), so a shard whose t = 0 is a fixed instant is not delayed;
garbage that happens to be frozen with the rest waits until the run is over.

The collector itself stays on, at its usual thresholds: a query over gRPC leaves no cyclic
garbage, but one that times out over HTTP leaves ~10 objects (measured), and raising the young
generation's threshold to 50 000 turned many 0.2 ms collections into a few of ~50 ms.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Freeze what is alive, run, unfreeze (a nested use leaves the outer freeze alone)."""
    already = gc.get_freeze_count() > 0
    if not already:
        gc.freeze()
    try:
        yield
    finally:
        if not already:
            gc.unfreeze()
